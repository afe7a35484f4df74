"""Pairing and the order-independence invariant of the pure core."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.orders import OrderEvent, Role
from service.core.pairing import Anomalous, Anomaly, OrderBook, OrderRecord, Paired, outcome
from service.core.window import WindowEntry
from service.tools.replay import replay

pytestmark = pytest.mark.unit


def submitted(order: str, at: int, drink: str = "Latte", tenant: str = "NYC") -> OrderEvent:
    return OrderEvent(Role.SUBMITTED, order, at, tenant, drink)


def completed(order: str, at: int) -> OrderEvent:
    return OrderEvent(Role.COMPLETED, order, at)


def cancelled(order: str, at: int) -> OrderEvent:
    return OrderEvent(Role.CANCELLED, order, at)


def record(*events: OrderEvent) -> OrderRecord:
    current = OrderRecord(events[0].order_id)
    for event in events:
        current = current.merge(event, 10_000)
    return current


def test_pairs_in_either_order() -> None:
    a = outcome(record(submitted("o", 100), completed("o", 160)), 7200)
    b = outcome(record(completed("o", 160), submitted("o", 100)), 7200)
    assert a == b == Paired(("NYC", "Latte"), WindowEntry(160, "o", 60))


def test_one_half_is_not_an_outcome() -> None:
    assert outcome(record(submitted("o", 100)), 7200) is None
    assert outcome(record(completed("o", 100)), 7200) is None
    assert outcome(record(submitted("o", 100), cancelled("o", 120)), 7200) is None


def test_anomalies() -> None:
    negative = outcome(record(submitted("o", 100), completed("o", 90)), 7200)
    too_long = outcome(record(submitted("o", 0), completed("o", 7201)), 7200)
    at_limit = outcome(record(submitted("o", 0), completed("o", 7200)), 7200)
    assert isinstance(negative, Anomalous) and negative.anomaly is Anomaly.NEGATIVE_WAIT
    assert isinstance(too_long, Anomalous) and too_long.anomaly is Anomaly.WAIT_ABOVE_MAXIMUM
    assert isinstance(at_limit, Paired)


def test_merge_is_idempotent() -> None:
    once = record(submitted("o", 100))
    assert once.merge(submitted("o", 100)) is once


def test_expiry_drops_stale_halves_only_after_the_ttl() -> None:
    book = OrderBook(ttl_seconds=100)
    book.apply(submitted("a", 0), now=0)
    book.apply(completed("b", 50), now=50)
    assert book.expire(now=99) == 0
    assert book.open_orders == 2
    assert book.expire(now=100) == 1
    assert set(book.records) == {"b"}


def _envelope(event: OrderEvent) -> dict[str, Any]:
    detail_type = {
        Role.SUBMITTED: "OrderManager.WaitingCompletion",
        Role.COMPLETED: f"OrderManager.Order{event.tenant}-COMPLETED",
        Role.CANCELLED: "OrderProcessor.OrderTimeOut",
    }[event.role]
    detail: dict[str, Any] = {"orderId": event.order_id, "eventId": event.tenant}
    if event.role is Role.SUBMITTED:
        detail["drinkOrder"] = {"drink": event.drink}
    return {
        "detail-type": detail_type,
        "source": "awsserverlessda.serverlesspresso",
        "time": datetime.fromtimestamp(event.time, UTC).isoformat(),
        "detail": detail,
    }


@st.composite
def event_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Orders with any mix of halves, cancellations, anomalies and tied completion times."""
    events: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 25))):
        order = f"o{index:02d}"
        tenant = draw(st.sampled_from(["NYC", "LDN"]))
        drink = draw(st.sampled_from(["Latte", "Mocha"]))
        start = draw(st.integers(1_700_000_000, 1_700_000_050))
        wait = draw(st.integers(-5, 200))
        parts = draw(st.sets(st.sampled_from(["s", "c", "x"]), min_size=1))
        if "s" in parts:
            events.append(_envelope(OrderEvent(Role.SUBMITTED, order, start, tenant, drink)))
        if "c" in parts:
            events.append(_envelope(OrderEvent(Role.COMPLETED, order, start + wait, tenant)))
        if "x" in parts:
            events.append(_envelope(OrderEvent(Role.CANCELLED, order, start + wait, tenant)))
    return events


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_final_windows_do_not_depend_on_order_or_duplicates(data: st.DataObject) -> None:
    events = data.draw(event_sets())
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    shuffled = data.draw(st.permutations(events + duplicates))
    window_size = data.draw(st.integers(1, 4))
    expected = replay(events, window_size=window_size, max_wait_seconds=150)
    actual = replay(shuffled, window_size=window_size, max_wait_seconds=150)
    assert actual.windows == expected.windows
    assert actual.as_rows() == expected.as_rows()
