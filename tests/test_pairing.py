"""Pairing and the order-independence invariant of the pure core."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.orders import OrderEvent, Role
from service.core.pairing import (
    Anomalous,
    Anomaly,
    KeyState,
    OrderBook,
    OrderRecord,
    Paired,
    expired,
    join_event,
    outcome,
)
from service.core.window import WindowEntry
from service.tools.replay import replay
from tests.envelopes import envelope

pytestmark = pytest.mark.unit


def submitted(order: str, at: int, drink: str = "Latte", tenant: str = "NYC") -> OrderEvent:
    return OrderEvent(Role.SUBMITTED, order, at, tenant, drink)


def completed(order: str, at: int) -> OrderEvent:
    return OrderEvent(Role.COMPLETED, order, at)


def cancelled(order: str, at: int) -> OrderEvent:
    return OrderEvent(Role.CANCELLED, order, at)


def record(*events: OrderEvent, expires: int = 10_000) -> OrderRecord:
    current = OrderRecord(events[0].order_id)
    for event in events:
        current = current.merge(event, expires)
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


def test_expiry_drops_stale_records_only_after_the_ttl_and_late_halves_never_pair() -> None:
    book = OrderBook(ttl_seconds=100)
    book.apply(submitted("a", 0), now=0)
    book.apply(completed("b", 50), now=50)
    assert book.expire(now=99) == []
    assert set(book.records) == {"a", "b"}
    assert [r.order_id for r in book.expire(now=100)] == ["a"]
    assert set(book.records) == {"b"}
    assert book.apply(completed("a", 101), now=101) is None  # its partner expired
    assert book.late_halves == 1 and "a" not in book.records


def test_a_record_keeps_every_cancellation_time_and_ends_at_the_earliest_end() -> None:
    open_order = record(submitted("o", 100))
    assert open_order.ended_at is None
    once = open_order.merge(cancelled("o", 300))
    assert once.cancelled and once.cancellations == (300,)
    assert once.merge(cancelled("o", 300)) is once
    twice = once.merge(cancelled("o", 250))
    assert twice.cancellations == (250, 300) and twice.ended_at == 250
    assert twice.merge(completed("o", 200)).ended_at == 200
    assert once.join(record(submitted("o", 100), cancelled("o", 250))) == twice
    legacy = open_order._replace(cancelled=True)  # stored before cancellation times were kept
    assert legacy.ended_at == 100


def test_join_event_sets_the_expiry_once_and_refuses_a_record_past_it() -> None:
    first = join_event(None, submitted("o", 10), now=10, ttl_seconds=100)
    assert first is not None and first.expires_at == 110
    second = join_event(first, completed("o", 70), now=70, ttl_seconds=100)
    assert second is not None and second.expires_at == 110 and second.completions == (70,)
    assert join_event(second, completed("o", 70), now=80, ttl_seconds=100) is second
    assert join_event(second, completed("o", 60), now=110, ttl_seconds=100) is None
    assert expired(second, 110) and not expired(second, 109)


def test_the_book_retires_a_record_found_expired_when_a_half_arrives() -> None:
    """No sweep ran: the record is past its expiry when its partner comes, so the order is
    done (the worker's rule for a record DynamoDB has not deleted yet)."""
    book = OrderBook(ttl_seconds=100)
    book.apply(submitted("a", 0), now=0)
    assert book.apply(completed("a", 150), now=150) is None
    assert book.late_halves == 1 and "a" not in book.records
    assert [r.order_id for r in book.take_stale()] == ["a"] and book.take_stale() == []
    assert book.apply(completed("a", 151), now=151) is None and book.late_halves == 2


def test_conflicting_halves_earliest_wins_whatever_the_delivery_order() -> None:
    later, earlier = submitted("o", 120, "Mocha", "LDN"), submitted("o", 100, "Latte", "NYC")
    first_done, second_done = completed("o", 180), completed("o", 170)
    for events in ([later, earlier, first_done, second_done], [second_done, earlier, later]):
        found = outcome(record(*events), 7200)
        assert found == Paired(("NYC", "Latte"), WindowEntry(170, "o", 70))
    tie = record(submitted("t", 100, "Mocha", "NYC"), submitted("t", 100, "Latte", "NYC"))
    assert tie.key == ("NYC", "Latte")  # equal times: tenant, then drink
    assert record(submitted("r", 100, "b", "LDN"), submitted("r", 100, "a", "NYC")).key == (
        "LDN",
        "b",
    )


def test_a_cancelled_and_completed_order_neither_counts_nor_holds_a_slot() -> None:
    key = ("NYC", "Latte")
    orders = [
        record(submitted(f"o{i}", 100 + i), completed(f"o{i}", 200 + i), expires=10**9)
        for i in range(3)
    ]
    state = KeyState(key, 2).add(orders)
    assert [e.order_id for e in state.view(7200).entries] == ["o2", "o1"]
    cancelled_newest = orders[2].merge(cancelled("o2", 300))
    state = state.add([cancelled_newest])
    assert [e.order_id for e in state.view(7200).entries] == ["o1", "o0"]  # o0 comes back


def test_an_earlier_completion_or_submission_elsewhere_brings_back_the_dropped_order() -> None:
    key = ("NYC", "Latte")
    orders = [
        record(submitted(f"o{i}", 100 + i), completed(f"o{i}", 200 + i), expires=10**9)
        for i in range(3)
    ]
    state = KeyState(key, 2).add(orders)
    # o2's completion was first emitted earlier than o0's: it now ranks last.
    state = state.add([orders[2].merge(completed("o2", 150))])
    assert [e.order_id for e in state.view(7200).entries] == ["o1", "o0"]
    # o1 had an earlier submission for another drink: it leaves this key.
    moved = orders[1].merge(submitted("o1", 50, "Mocha"))
    assert moved.key == ("NYC", "Mocha") and key in moved.keys
    state = state.add([moved])
    assert [e.order_id for e in state.view(7200).entries] == ["o0", "o2"]


def test_settled_orders_keep_only_the_top_n_and_the_view_is_unchanged() -> None:
    key = ("NYC", "Latte")
    orders = [
        record(submitted(f"o{i}", 100 + i), completed(f"o{i}", 200 + i), expires=1_000 + i)
        for i in range(5)
    ]
    state = KeyState(key, 3).add(orders)
    view = state.view(7200)
    settled = state.settle(now=1_002, max_wait_seconds=7200, max_live=100)
    assert sorted(settled.live) == ["o3", "o4"]
    assert [e.order_id for e in settled.settled] == ["o2", "o1", "o0"]
    assert settled.view(7200) == view
    capped = state.settle(now=0, max_wait_seconds=7200, max_live=1)
    assert sorted(capped.live) == ["o4"] and capped.view(7200) == view


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
            events.append(envelope("submitted", order, at=start, tenant=tenant, drink=drink))
        if "c" in parts:
            events.append(envelope("completed", order, at=start + wait, tenant=tenant))
        if "x" in parts:
            events.append(envelope("timeout", order, at=start + wait, tenant=tenant))
    return events


@settings(max_examples=100, deadline=None)  # the brute-force property test covers more
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


def test_joining_what_a_state_already_holds_changes_nothing() -> None:
    key = ("NYC", "Latte")
    stored = record(submitted("o", 100), completed("o", 160), expires=1_000)
    state = KeyState(key, 3).add([stored])
    # The same order read back later: an expiry set by another write is not newer news.
    assert state.add([stored._replace(expires_at=2_000)]) is state
    assert state.add([record(completed("o", 160), expires=1_000)]) is state
