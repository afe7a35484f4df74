"""AWS calls per completed order at light traffic: one message per flush.

Run: ``python3 dev.py bench light``, or alone ``python -m bench.light [ORDERS]``. The real worker on a fresh emulator (moto);
each event goes through the bus, the rule and the queue only once the one before it is
processed, so every flush holds one message. Counted: the calls the flushes make (the
worker's receives that brought a message, its DynamoDB writes and reads, its PutEvents,
its deletes), per completed order; the long poll's empty receives are reported apart
(they follow the clock, not the orders). It uses only what every version of the service
has (with ``bench.calls``, whose worker it shares), so an old-against-new run can copy
both into an older tree.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from bench.calls import STARTUP, calls_of, worker_on_emulator
from bench.common import dummy_credentials
from service.core.consumed import role_of
from service.core.orders import Role
from service.metrics import Metrics
from service.tools.player import TrafficGenerator, put_entries, to_entry

START = 1_790_000_000


def processed(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("wait_times_messages_processed_total") or 0.0


def received(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("wait_times_messages_received_total") or 0.0


async def measure(orders: int) -> dict[str, Any]:
    """Calls per completed order with every flush holding one message."""
    generator = TrafficGenerator(seed=3, rate=0.05, start=START, tenants=("NYC", "LDN"))
    # Only what the rule lets through reaches the queue.
    events = [e for e in generator.events(orders) if role_of(e.detail_type) is not None]
    async with worker_on_emulator() as (clients, settings, metrics):
        before = calls_of(metrics)
        seen = received(metrics)
        for planned in events:
            await put_entries(clients.events, [to_entry(planned, settings.event_bus)])
            with anyio.fail_after(60):
                # One message per flush: wait until it was received and processed (or
                # ignored) before the next one goes out.
                while received(metrics) <= seen:  # noqa: ASYNC110 - counters
                    await anyio.sleep(0.02)
                seen = received(metrics)
                await anyio.sleep(0.3)
        calls = calls_of(metrics) - before
    completions = sum(1 for e in events if role_of(e.detail_type) is Role.COMPLETED)
    flushes = {k: v for k, v in calls.items() if k not in STARTUP and k != "sqs.ReceiveMessage"}
    with_messages = int(seen)
    empty_receives = calls.get("sqs.ReceiveMessage", 0) - with_messages
    counted = sum(flushes.values()) + with_messages
    return {
        "orders": orders,
        "completed_orders": completions,
        "messages": with_messages,
        "calls": dict(sorted(flushes.items()))
        | {"sqs.ReceiveMessage (with a message)": with_messages},
        "calls_per_completed_order": round(counted / max(completions, 1), 3),
        "empty_receives": empty_receives,
    }


async def run(report: dict[str, Any], orders: int = 30) -> None:
    """The ``light`` part of ``python -m bench``."""
    dummy_credentials()
    result = await measure(orders)
    calls = result["calls_per_completed_order"]
    print(
        f"  one message per flush, {result['completed_orders']} completed orders: "
        f"{calls} calls per completed order ({result['empty_receives']} empty receives apart)"
    )
    report["light"] = result


def main() -> int:
    dummy_credentials()
    orders = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    result = measure_sync(orders)
    print(json.dumps(result, indent=2))
    return 0


def measure_sync(orders: int) -> dict[str, Any]:
    return anyio.run(measure, orders)


if __name__ == "__main__":
    raise SystemExit(main())
