"""Hostile input, straight to the queue and through the bus, and a flood of new tenants."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.settings import DEFAULT_SOURCE
from tests.envelopes import envelope, iso
from tests.helpers import Aws, wait_until
from tests.reliability import reference
from tests.reliability.harness import (
    WorkerProcess,
    check_against_reference,
    metric_value,
    send_bodies,
    wait_for_empty_queue,
    worker_env,
)
from tests.reliability.traffic import event_id, messy_traffic

pytestmark = pytest.mark.reliability


def _submitted(detail: dict[str, Any], at: str = "2026-11-20T10:00:00Z") -> dict[str, Any]:
    return envelope("submitted", detail=detail, at=at, id="hostile")


GOOD_DRINK = {"drink": "Latte"}
# (what it is, SQS body): every one of them can never be processed.
STRAIGHT_TO_QUEUE = [
    ("not JSON", "this is not json"),
    ("truncated JSON", json.dumps(_submitted({"orderId": "t1", "drinkOrder": GOOD_DRINK}))[:60]),
    ("a JSON array", "[1, 2, 3]"),
    ("a JSON number", "42"),
    (
        "envelope without detail",
        json.dumps({k: v for k, v in _submitted({}).items() if k != "detail"}),
    ),
    ("detail not an object", json.dumps({**_submitted({}), "detail": "a string"})),
    ("orderId missing", json.dumps(_submitted({"drinkOrder": GOOD_DRINK}))),
    ("orderId empty", json.dumps(_submitted({"orderId": "", "drinkOrder": GOOD_DRINK}))),
    ("orderId not a string", json.dumps(_submitted({"orderId": 12345, "drinkOrder": GOOD_DRINK}))),
    ("orderId 10 KB", json.dumps(_submitted({"orderId": "x" * 10240, "drinkOrder": GOOD_DRINK}))),
    ("drink missing", json.dumps(_submitted({"orderId": "h-nodrink", "drinkOrder": {}}))),
    (
        "time unparseable",
        json.dumps(_submitted({"orderId": "h-time", "drinkOrder": GOOD_DRINK}, "yesterday")),
    ),
    (
        "time far in the future",
        json.dumps(
            _submitted({"orderId": "h-future", "drinkOrder": GOOD_DRINK}, "2199-01-01T00:00:00Z")
        ),
    ),
    (
        "256 KB body",
        json.dumps(
            _submitted({"orderId": "h-big", "drinkOrder": GOOD_DRINK, "pad": "p" * 250_000})
        ),
    ),
]
# The same kinds through the bus (PutEvents keeps the envelope well-formed JSON, so only
# the detail can be hostile), on consumed detail-types so the rule routes them.
THROUGH_THE_BUS = [
    ("orderId missing", "OrderManager.WaitingCompletion", {"drinkOrder": GOOD_DRINK}),
    ("orderId empty", "OrderManager.OrderNYC-COMPLETED", {"orderId": "", "eventId": "NYC"}),
    ("orderId not a string", "OrderManager.OrderNYC-COMPLETED", {"orderId": ["a"]}),
    ("orderId 10 KB", "OrderManager.OrderNYC-CANCELLED", {"orderId": "y" * 10240}),
    ("drink missing", "OrderManager.WaitingCompletion", {"orderId": "b-nodrink", "drinkOrder": {}}),
    (
        "drink not a string",
        "OrderManager.WaitingCompletion",
        {"orderId": "b-d", "drinkOrder": {"drink": 7}},
    ),
]
NON_ASCII = (("Zürich", "Café crème"), ("東京", "抹茶ラテ"), ("São Paulo", "Pingado ☕"))


def _non_ascii_orders(start: float) -> list[dict[str, Any]]:
    """Good orders whose tenants and drinks are not ASCII (must be processed, not refused)."""
    import random  # noqa: PLC0415

    rng = random.Random(9)
    events = []
    for number in range(12):
        tenant, drink = NON_ASCII[number % len(NON_ASCII)]
        order_id = f"ü-{number}"
        at = start + number * 60
        events.append(
            envelope("submitted", order_id, at=at, tenant=tenant, drink=drink, id=event_id(rng))
        )
        events.append(
            envelope("completed", order_id, at=at + 50 + number, tenant=tenant, id=event_id(rng))
        )
    return events


async def test_hostile_input_goes_to_the_dlq_once_and_the_rest_is_processed(aws: Aws) -> None:
    started = time.monotonic()
    traffic = messy_traffic(40, seed=6)
    good = traffic.deliveries
    extra = _non_ascii_orders(datetime.now(UTC).timestamp() - 86400)
    hostile = [body for _, body in STRAIGHT_TO_QUEUE]
    for what, _ in STRAIGHT_TO_QUEUE:
        # The reference model agrees each of them is unprocessable (or, the future one,
        # only the service's clock can tell).
        body = dict(STRAIGHT_TO_QUEUE)[what]
        try:
            decoded = json.loads(body)
        except ValueError:
            continue
        if what not in ("time far in the future", "256 KB body"):
            with pytest.raises(reference.Unprocessable):
                reference.read_half(decoded)
    # Hostile messages interleaved with the good ones.
    bodies: list[str] = []
    good_bodies = [json.dumps(e, ensure_ascii=False) for e in good + extra]
    step = max(1, len(good_bodies) // len(hostile))
    for index, body in enumerate(good_bodies):
        bodies.append(body)
        if index % step == 0 and hostile:
            bodies.append(hostile.pop())
    bodies.extend(hostile)
    await send_bodies(aws, bodies)
    now = datetime.now(UTC)
    entries = [
        {
            "EventBusName": aws.settings.event_bus,
            "Source": DEFAULT_SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail),
            "Time": now,
        }
        for _, detail_type, detail in THROUGH_THE_BUS
    ]
    response = await aws.clients.events.put_events(Entries=entries)  # type: ignore[arg-type]
    assert response["FailedEntryCount"] == 0
    poison_count = len(STRAIGHT_TO_QUEUE) + len(THROUGH_THE_BUS)

    # One worker, whose receives never overlap: moto's SQS is not thread-safe, and two
    # concurrent long polls can both take a message that was just made visible again, so
    # ApproximateReceiveCount can skip maxReceiveCount. "Logged once, on the receive
    # reaching maxReceiveCount" is exact only when the count is.
    env = worker_env(aws.settings)
    worker = WorkerProcess(env)
    try:
        await wait_for_empty_queue(aws, 120)
        assert worker.alive(), worker.raw_log()[-3000:]
        _, metrics = worker.get("/metrics")
        worker.terminate()
        await wait_until(lambda: not worker.alive(), 30, "the worker to stop")
        assert worker.process.returncode == 0
        logs = worker.logs()
    finally:
        worker.close()
    dead = await aws.drain_queue(aws.resources.dlq_url)
    assert len(dead) == poison_count, [str(d)[:100] for d in dead]
    poison_logs = [e for e in logs if e["event"] == "poison_message"]
    assert len(poison_logs) == poison_count, [
        (e["event"], e.get("reason"), e.get("receive_count"), e.get("message_id"))
        for e in logs
        if e["event"] not in ("wait_anomaly",)
    ]
    assert len({e["message_id"] for e in poison_logs}) == poison_count  # once each
    assert all(e["level"] == "error" and e["reason"] for e in poison_logs)
    assert metric_value(metrics, "wait_times_messages_failed_total") == poison_count
    checked = await check_against_reference(
        aws, traffic.envelopes + extra, aws.settings, dlq_empty=False
    )
    rows = {(r["eventId"], r["drink"]) for r in await aws.stored_rows()}
    assert set(NON_ASCII) <= rows
    reasons = sorted({e["reason"] for e in poison_logs})
    print(f"poison={poison_count} reasons={reasons} {checked} {time.monotonic() - started:.1f}s")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


FLOOD_TENANTS = 240
WINDOW_CAP = 20
SERIES_CAP = 10


async def test_a_flood_of_new_tenants_keeps_memory_and_series_bounded(aws: Aws) -> None:
    started = time.monotonic()
    import random  # noqa: PLC0415

    rng = random.Random(50_000)
    base = datetime.now(UTC).timestamp() - 86400
    events: list[dict[str, Any]] = []
    for number in range(FLOOD_TENANTS):
        tenant = f"flood-{number:05d}"
        at = base + number
        order = f"flood-order-{number}"
        events.append(
            envelope("submitted", order, at=at, tenant=tenant, drink="Espresso", id=event_id(rng))
        )
        events.append(envelope("completed", order, at=at + 40, tenant=tenant, id=event_id(rng)))
    assert iso(base)
    bodies = [json.dumps(e) for e in events]
    first, rest = bodies[: len(bodies) // 4], bodies[len(bodies) // 4 :]
    await send_bodies(aws, first)
    env = worker_env(
        aws.settings,
        WAIT_TIMES_MAX_WINDOWS_IN_MEMORY=str(WINDOW_CAP),
        WAIT_TIMES_MAX_TENANTS_IN_MEMORY=str(WINDOW_CAP),
        WAIT_TIMES_MAX_METRIC_SERIES=str(SERIES_CAP),
    )
    worker = WorkerProcess(env)
    try:
        await wait_for_empty_queue(aws, 120)
        rss_quarter = _rss_kib(worker.process.pid)
        await send_bodies(aws, rest)
        await wait_for_empty_queue(aws, 180)
        rss_end = _rss_kib(worker.process.pid)
        status, metrics = worker.get("/metrics")
        assert status == 200
        worker.terminate()
        await wait_until(lambda: not worker.alive(), 30, "the worker to stop")
        assert worker.process.returncode == 0
    finally:
        worker.close()
    tracked = metric_value(metrics, "wait_times_windows_tracked")
    tenants_tracked = metric_value(metrics, "wait_times_tenants_tracked")
    open_series = sum(
        1 for line in metrics.splitlines() if line.startswith("wait_times_open_orders{")
    )
    series = sum(
        1 for line in metrics.splitlines() if line.startswith("wait_times_average_wait_seconds{")
    )
    dropped = metric_value(metrics, "wait_times_metric_series_dropped_total")
    assert tracked == WINDOW_CAP
    assert tenants_tracked == WINDOW_CAP
    assert open_series == SERIES_CAP  # the tenant cap of the series
    assert series == SERIES_CAP
    assert dropped >= FLOOD_TENANTS - SERIES_CAP
    # Three times the tenants after the first quarter: memory must not follow them.
    assert rss_end - rss_quarter < 8 * 1024, (rss_quarter, rss_end)
    checked = await check_against_reference(aws, events, aws.settings)
    assert checked.keys == FLOOD_TENANTS
    print(
        f"tenants={FLOOD_TENANTS} tracked={tracked} series={series} dropped={dropped} "
        f"rss_kib={rss_quarter}->{rss_end} {checked} {time.monotonic() - started:.1f}s"
    )
