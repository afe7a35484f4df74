"""2 and 6. AWS calls per completed order at 1,000 and 20,000 orders of history, against the
original design (bench/baseline.py) on the same emulator with the same events; dollars.

Run alone: ``python -m bench.cost``. History is written straight into each design's
table (what the orders before would have left there) so that 20,000 orders of history take
seconds, not the hours moto would need to process them; then warm-up traffic, then the
measured traffic goes through the bus, the rule and the queue into each design.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import anyio

from bench import baseline
from bench.common import LOAD_BARISTAS, LOAD_CAP, order_item
from service.app import run_worker
from service.aws.clients import open_clients
from service.aws.items import window_put
from service.aws.provision import provision
from service.core.commit import MAX_LIVE_ORDERS
from service.core.consumed import role_of
from service.core.orders import Role
from service.core.pairing import KeyState, OrderBook, OrderRecord
from service.core.window import WindowKey
from service.logs import configure_logging
from service.metrics import Metrics
from service.settings import Settings
from service.tools.emulator import Emulator
from service.tools.player import PlannedEvent, TrafficGenerator, put_entries, to_entry
from tests.envelopes import envelope

START = 1_790_000_000
WARM_UP_ORDERS = 100
MEASURED_ORDERS = 120
# moto answers a Query over 40,000 stored halves in about a second, so the original design
# is measured on the first completions of the measured traffic only (calls are per order).
BASELINE_COMPLETIONS = 40
STARTUP_OPERATIONS = {
    ("sqs", "GetQueueUrl"),
    ("sqs", "GetQueueAttributes"),
    ("dynamodb", "DescribeTable"),
}

# Public on-demand list prices, us-east-1, USD (checked 2026-11; see docs/performance.md).
PRICE = {
    "sqs_request": 0.40 / 1e6,
    "dynamodb_write_unit": 0.625 / 1e6,
    "dynamodb_read_unit": 0.125 / 1e6,
    "eventbridge_event": 1.00 / 1e6,
    "sfn_transition": 0.025 / 1e3,
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,
    "fargate_vcpu_hour_x86": 0.04048,
    "fargate_gb_hour_x86": 0.004445,
    "fargate_vcpu_hour_arm": 0.03238,
    "fargate_gb_hour_arm": 0.00356,
}
# The original extension's Step Functions workflow, per event it handled (assumption, see
# docs/performance.md): start, store, end for a submission; start, store, query, Lambda
# average, put event, end for a completion; one 128 MB Lambda of 100 ms per completion.
SFN_TRANSITIONS = {"submitted": 3, "completed": 6}
LAMBDA_GB_SECONDS = 0.128 * 0.1


def consumed(events: list[PlannedEvent]) -> int:
    return sum(1 for e in events if role_of(e.detail_type) is not None)


def completed_orders(events: list[PlannedEvent]) -> int:
    return sum(1 for e in events if role_of(e.detail_type) is Role.COMPLETED)


async def write_items(clients: Any, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        await clients.dynamodb.batch_write_item(
            RequestItems={table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        )


async def seed_service(clients: Any, settings: Settings, history: list[PlannedEvent]) -> None:
    """The records and key states the service would hold after this history, in the item
    layout it writes (``service.aws.items``), computed with its own rules: events joined
    with ``join_event`` (through ``OrderBook``), key states with ``KeyState`` as a commit
    leaves them (``MAX_LIVE_ORDERS``)."""
    from service.core.consumed import parse_envelope  # noqa: PLC0415

    book = OrderBook(settings.pending_ttl_seconds)
    now = 0
    for planned in history:
        event = parse_envelope(
            envelope(
                detail_type=planned.detail_type,
                detail=planned.detail,
                at=planned.at,
                source=settings.source,
            )
        )
        if event is None:
            continue
        now = max(now, event.time)
        book.apply(event, now)
    by_key: dict[WindowKey, list[OrderRecord]] = {}
    for record in (*book.records.values(), *book.take_stale()):
        if record.completions:
            for key in record.keys:
                by_key.setdefault(key, []).append(record)
    table = settings.table_name
    items: list[dict[str, Any]] = [
        order_item(record, record.expires_at or now + settings.pending_ttl_seconds)
        for record in book.records.values()
    ]
    for key, records in by_key.items():
        state = (
            KeyState(key, settings.window_size)
            .add(records)
            .settle(now, settings.max_wait_seconds, MAX_LIVE_ORDERS)
        )
        view = state.view(settings.max_wait_seconds)
        items.append(dict(window_put(state, view, 1, table, expected=0)["Item"]))
    await write_items(clients, table, items)


def history_pairs(history: list[PlannedEvent]) -> list[tuple[str, str, int, int]]:
    submitted: dict[str, tuple[str, int]] = {}
    pairs = []
    for e in history:
        role = role_of(e.detail_type)
        if role is Role.SUBMITTED:
            submitted[e.detail["orderId"]] = (e.detail["drinkOrder"]["drink"], int(e.at))
        elif role is Role.COMPLETED and e.detail["orderId"] in submitted:
            drink, at = submitted[e.detail["orderId"]]
            pairs.append((e.detail["orderId"], drink, at, int(e.at)))
    return pairs


def items_of(metrics: Metrics) -> Counter[str]:
    """Items the store wrote or read, by DynamoDB operation."""
    return Counter(
        {
            s.labels["operation"]: int(s.value)
            for s in next(iter(metrics.dynamodb_items.collect())).samples
            if s.name.endswith("_total")
        }
    )


def capacity_units(items: Counter[str]) -> tuple[float, float]:
    """(write units, read units) of the store's items: every item is well under 1 KB, a
    transactional write costs 2 units, a strongly consistent read of an item 1."""
    writes = items["UpdateItem"] + items["PutItem"] + 2 * items["TransactWriteItems"]
    reads = items["BatchGetItem"] + items["GetItem"]
    return float(writes), float(reads)


def calls_of(metrics: Metrics) -> Counter[tuple[str, str]]:
    return Counter(
        {
            (s.labels["service"], s.labels["operation"]): int(s.value)
            for s in next(iter(metrics.aws_calls.collect())).samples
            if s.name.endswith("_total")
        }
    )


async def measure(history_orders: int) -> dict[str, Any]:
    """One design comparison at one history size, on a fresh emulator."""
    with Emulator() as emulator:
        settings = Settings(endpoint_url=emulator.url, receive_wait_seconds=1, metrics_port=0)
        async with AsyncExitStack() as stack:
            clients = await open_clients(settings, stack)
            await provision(settings, clients)
            base_url = await baseline.provision(clients, settings)

            generator = TrafficGenerator(
                seed=7, rate=3.0, start=START, baristas=LOAD_BARISTAS, cap=LOAD_CAP
            )
            history = list(generator.events(history_orders))
            later = TrafficGenerator(
                seed=8, rate=3.0, start=history[-1].at + 3600, baristas=LOAD_BARISTAS, cap=LOAD_CAP
            )
            traffic = list(later.events(WARM_UP_ORDERS + MEASURED_ORDERS))
            cut = next(
                i for i, e in enumerate(traffic) if e.at >= traffic[0].at + WARM_UP_ORDERS / 3.0
            )
            warm_up, measured = traffic[:cut], traffic[cut:]
            clock = time.perf_counter()
            await seed_service(clients, settings, history)
            seeded = await baseline.seed_history(clients, history_pairs(history))
            print(
                f"  seeded {history_orders:,} orders of history in {time.perf_counter() - clock:.0f}s",
                flush=True,
            )

            consumer = baseline.BaselineConsumer(clients, base_url, settings.event_bus)
            metrics = Metrics()
            async with anyio.create_task_group() as group:
                worker = await group.start(
                    lambda task_status: run_worker(
                        settings, install_signals=False, metrics=metrics, task_status=task_status
                    )
                )
                target = 0
                phases: list[Counter[tuple[str, str]]] = []
                items_before: Counter[str] = Counter()
                for phase in (warm_up, measured):
                    phases.append(calls_of(metrics))
                    items_before = items_of(metrics)
                    await put_entries(
                        clients.events, [to_entry(e, settings.event_bus) for e in phase]
                    )
                    target += consumed(phase)
                    with anyio.fail_after(600):
                        while metrics.messages_processed._value.get() < target:  # noqa: ASYNC110
                            await anyio.sleep(0.1)
                    if phase is warm_up:
                        # The original keeps no cache, so it needs no warm-up: drop that
                        # traffic (moto's Query is slow enough at 20,000 orders to matter).
                        await clients.sqs.purge_queue(QueueUrl=base_url)
                service_calls = calls_of(metrics) - phases[1]
                write_units, read_units = capacity_units(items_of(metrics) - items_before)
                clock = time.perf_counter()
                published = int(metrics.events_published._value.get())
                calls_of_total = calls_of(metrics)
                await consumer.drain(max_completions=BASELINE_COMPLETIONS)
                print(
                    f"  original design consumed the measured traffic in {time.perf_counter() - clock:.0f}s",
                    flush=True,
                )
                worker.stop()
    completions = completed_orders(measured)
    ours = {
        f"{s}.{o}": n
        for (s, o), n in sorted(service_calls.items())
        if (s, o) not in STARTUP_OPERATIONS
    }
    halves = sum(1 for e in measured if role_of(e.detail_type) in (Role.SUBMITTED, Role.COMPLETED))
    theirs = consumer.per_completed_order(consumed(measured), completions, halves)
    return {
        "history_orders": history_orders,
        "history_items_seeded_baseline": seeded,
        "measured_completions": completions,
        "measured_consumed_events": consumed(measured),
        "service_published_entries_total": published,
        "service_published_calls_total": int(calls_of_total.get(("events", "PutEvents"), 0)),
        "service_calls": ours,
        "service_calls_per_completed_order": round(sum(ours.values()) / completions, 3),
        "baseline_calls": theirs,
        "baseline_completions": consumer.completed,
        "baseline_calls_per_completed_order": round(sum(theirs.values()), 3),
        "baseline_read_units_per_completed_order": round(
            consumer.read_units / max(1, consumer.completed), 2
        ),
        "service_write_units": write_units,
        "service_read_units": read_units,
        "service_write_units_per_completed_order": round(write_units / completions, 3),
        "service_read_units_per_completed_order": round(read_units / completions, 3),
    }


def dollars(result: dict[str, Any], measured_consumed: float) -> dict[str, float]:
    """Variable cost per million completed orders, from measured call counts."""
    per = result["measured_completions"]
    ours = result["service_calls"]
    sqs_ours = (
        sum(v for k, v in ours.items() if k.startswith("sqs.")) + measured_consumed
    )  # + rule's sends
    ddb_writes = result["service_write_units"]
    ddb_reads = result["service_read_units"]
    # EventBridge bills entries, not calls; the worker's counter covers warm-up too, so
    # scale it to the measured share of completions.
    put_entries_ours = ours.get("events.PutEvents", 0) * (
        result["service_published_entries_total"] / max(1, result["service_published_calls_total"])
    )
    service = (
        (
            sqs_ours * PRICE["sqs_request"]
            + ddb_writes * PRICE["dynamodb_write_unit"]
            + ddb_reads * PRICE["dynamodb_read_unit"]
            + put_entries_ours * PRICE["eventbridge_event"]
        )
        / per
        * 1e6
    )
    # The original ran on Step Functions and Lambda, not SQS: its per-order figures are
    # the baseline's DynamoDB and EventBridge work plus the workflow it needed for that.
    base = result["baseline_calls"]  # already per completed order
    submissions_per_order = base.get("dynamodb.PutItem", 0) - 1
    original = (
        base.get("dynamodb.PutItem", 0) * PRICE["dynamodb_write_unit"]
        + result["baseline_read_units_per_completed_order"] * PRICE["dynamodb_read_unit"]
        + base.get("events.PutEvents", 0) * PRICE["eventbridge_event"]
        + submissions_per_order * SFN_TRANSITIONS["submitted"] * PRICE["sfn_transition"]
        + SFN_TRANSITIONS["completed"] * PRICE["sfn_transition"]
        + PRICE["lambda_request"]
        + LAMBDA_GB_SECONDS * PRICE["lambda_gb_second"]
    ) * 1e6
    return {
        "service_usd_per_million_orders": round(service, 2),
        "original_usd_per_million_orders": round(original, 2),
    }


def fargate_month(vcpu: float = 0.25, gb: float = 0.5) -> dict[str, float]:
    hours = 730
    return {
        "x86_usd_per_month": round(
            hours * (vcpu * PRICE["fargate_vcpu_hour_x86"] + gb * PRICE["fargate_gb_hour_x86"]), 2
        ),
        "arm_usd_per_month": round(
            hours * (vcpu * PRICE["fargate_vcpu_hour_arm"] + gb * PRICE["fargate_gb_hour_arm"]), 2
        ),
    }


async def run(report: dict[str, Any], histories: tuple[int, ...] = (1_000, 20_000)) -> None:
    """Measure and fill ``report["cost"]``."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    configure_logging("json", "error")
    results = []
    for history in histories:
        result = await measure(history)
        results.append(result)
        print(
            f"cost at {history:,} orders of history ({result['measured_completions']} completed orders measured):\n"
            f"  wait-times: {result['service_calls_per_completed_order']} calls/order {result['service_calls']},"
            f" {result['service_write_units_per_completed_order']} write units and"
            f" {result['service_read_units_per_completed_order']} read units/order\n"
            f"  original:   {result['baseline_calls_per_completed_order']} calls/order {result['baseline_calls']},"
            f" {result['baseline_read_units_per_completed_order']} read units/order"
        )
    first, last = results[0], results[-1]
    flat = (
        last["service_calls_per_completed_order"]
        <= first["service_calls_per_completed_order"] * 1.10
    )
    quarter = (
        last["service_calls_per_completed_order"] <= last["baseline_calls_per_completed_order"] / 4
    )
    money = dollars(last, last["measured_consumed_events"])
    report["cost"] = {
        "runs": results,
        "flat_in_history": flat,
        "at_most_quarter_of_baseline": quarter,
        "dollars_at_largest_history": money,
        "fargate_task_0.25vcpu_0.5gb": fargate_month(),
        "prices_usd": PRICE,
        "original_design_assumptions": {
            "sfn_transitions": SFN_TRANSITIONS,
            "lambda_gb_seconds": LAMBDA_GB_SECONDS,
        },
    }
    print(
        f"  flat in history (within 10%): {'met' if flat else 'MISSED'}; "
        f"at most 1/4 of the original: {'met' if quarter else 'MISSED'}\n"
        f"  dollars per million orders: {money}; Fargate task: {fargate_month()}"
    )


if __name__ == "__main__":
    out: dict[str, Any] = {}
    sizes = tuple(int(a) for a in sys.argv[1:]) or (1_000, 20_000)
    anyio.run(run, out, sizes)
    print(json.dumps(out, indent=2))
