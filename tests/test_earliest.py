"""Replay's projection of an order (``EarliestBook``) is ``OrderBook``'s whole record seen
through what ``outcome`` reads, event by event; ``top_by_key`` is ``outcome`` then ``top``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.earliest import Earliest, EarliestBook, top_by_key
from service.core.orders import OrderEvent, Role
from service.core.pairing import Anomalous, OrderBook, OrderRecord, Paired, outcome, top
from service.core.window import WindowEntry

pytestmark = pytest.mark.unit

event_strategy = st.builds(
    OrderEvent,
    st.sampled_from(list(Role)),
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 400),
    st.sampled_from(["NYC", "LDN"]),
    st.sampled_from(["Latte", "Mocha", None]),
)


def earliest_of(record: OrderRecord) -> Earliest:
    """The projection ``EarliestBook`` keeps, read off a whole record."""
    return [
        record.submission,
        record.completed_at,
        record.cancelled,
        record.expires_at,
        record.order_id,
    ]


@dataclass(frozen=True)
class Step:
    """One event at a clock moved on by ``advance``; then, maybe, a sweep and a take."""

    event: OrderEvent
    advance: int
    sweep: bool
    take: bool


steps = st.builds(
    Step,
    event_strategy,
    st.sampled_from([0, 0, 1, 30, 120]),
    st.booleans(),
    st.booleans(),
)


def _assert_same(whole: OrderBook, earliest: EarliestBook) -> None:
    assert {key: earliest_of(r) for key, r in whole.records.items()} == earliest.records
    assert list(whole.records) == list(earliest.records)  # the expiry order, too
    assert (whole.late_halves, whole.expired) == (earliest.late_halves, earliest.expired)
    assert whole.expired_ids == earliest.expired_ids


@settings(max_examples=400, deadline=None)
@given(st.lists(steps, max_size=40), st.sampled_from([30, 60, 120, 400]))
def test_the_projection_follows_the_whole_record_event_by_event(
    sequence: list[Step], ttl: int
) -> None:
    """Any order, duplicates, conflicting halves, cancellations, records expiring by a
    sweep or found expired when a half comes: after every step each order's projection is
    its record's, and the late halves, expiries and stale records agree."""
    whole, earliest = OrderBook(ttl), EarliestBook(ttl)
    now = 0
    for step in sequence:
        now += step.advance
        whole.apply(step.event, now)
        earliest.apply(step.event, now)
        _assert_same(whole, earliest)
        if step.sweep:
            swept = whole.expire(now)
            assert [earliest_of(r) for r in swept] == earliest.expire(now)
        if step.take:
            assert [earliest_of(r) for r in whole.take_stale()] == earliest.take_stale()
        _assert_same(whole, earliest)


def test_the_earliest_halves_win_and_a_cancellation_sticks() -> None:
    book = EarliestBook(1_000)
    for event in (
        OrderEvent(Role.COMPLETED, "o", 180),
        OrderEvent(Role.SUBMITTED, "o", 120, "LDN", "Mocha"),
        OrderEvent(Role.SUBMITTED, "o", 100, "NYC", "Mocha"),
        OrderEvent(Role.SUBMITTED, "o", 100, "NYC", "Latte"),  # a tie: tenant, then drink
        OrderEvent(Role.SUBMITTED, "o", 100, "NYC", "Mocha"),  # seen: nothing changes
        OrderEvent(Role.COMPLETED, "o", 170),
        OrderEvent(Role.COMPLETED, "o", 175),
    ):
        book.apply(event, 200)
    assert book.records["o"] == [(100, "NYC", "Latte"), 170, False, 1_200, "o"]
    book.apply(OrderEvent(Role.CANCELLED, "o", 300), 300)
    book.apply(OrderEvent(Role.COMPLETED, "o", 160), 300)
    assert book.records["o"] == [(100, "NYC", "Latte"), 160, True, 1_200, "o"]


def test_a_half_after_the_expiry_is_late_and_retires_the_record() -> None:
    book = EarliestBook(100)
    book.apply(OrderEvent(Role.SUBMITTED, "a", 0, "NYC", "Latte"), 0)
    book.apply(OrderEvent(Role.COMPLETED, "b", 50), 50)
    assert book.expire(99) == [] and list(book.records) == ["a", "b"]
    book.apply(OrderEvent(Role.COMPLETED, "b", 150), 150)  # found expired: no sweep ran
    assert book.late_halves == 1 and list(book.records) == ["a"]
    assert [found[4] for found in book.expire(150)] == ["a"]
    book.apply(OrderEvent(Role.COMPLETED, "a", 151), 151)  # its record is gone
    assert book.late_halves == 2 and not book.records
    assert [found[4] for found in book.take_stale()] == ["b", "a"] and book.take_stale() == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(event_strategy, min_size=1, max_size=5), max_size=12))
def test_top_by_key_is_outcome_then_top(groups: list[list[OrderEvent]]) -> None:
    """Replay's batch form of ``outcome``: each key's ``top`` of its entries, at every size
    (none, fewer than a key has, more), and as many anomalies (cancelled anomalous orders
    included), whatever the orders."""
    records = []
    for i, group in enumerate(groups):
        current = OrderRecord(f"o{i}")
        for event in group:
            current = current.merge(event._replace(order_id=f"o{i}"))
        records.append(current)
    # And the bounds, which random times seldom hit: waits of 0, -1, 200 and 201.
    for wait in (0, -1, 200, 201):
        order = f"w{wait}"
        first = OrderRecord(order).merge(OrderEvent(Role.SUBMITTED, order, 100, "NYC", "Latte"))
        records.append(first.merge(OrderEvent(Role.COMPLETED, order, 100 + wait)))
    expected: dict[tuple[str, str], list[WindowEntry]] = {}
    anomalies = 0
    for found in (outcome(r, 200) for r in records):
        if type(found) is Paired:
            expected.setdefault(found.key, []).append(found.entry)
        elif type(found) is Anomalous:
            anomalies += 1
    for size in (0, 1, 3, 20):
        tops = {key: top(entries, size) for key, entries in expected.items()}
        assert top_by_key(map(earliest_of, records), 200, size) == (tops, anomalies)
