"""The window: top N by (completion time, order id), as a semilattice."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.window import Window, WindowEntry

pytestmark = pytest.mark.unit


def entry(order: str, completed: int, wait: int = 60, cancelled: bool = False) -> WindowEntry:
    return WindowEntry(completed, order, wait, cancelled)


def test_keeps_the_latest_n_by_completion_time() -> None:
    window = Window(3).merge(entry(f"o{i}", 100 + i, wait=i) for i in range(5))
    assert [e.order_id for e in window.entries] == ["o4", "o3", "o2"]
    assert window.samples == 3
    assert window.duration == 3.0


def test_boundary_ties_go_to_the_greater_order_id() -> None:
    window = Window(2).merge([entry("a", 100), entry("c", 100), entry("b", 100)])
    assert [e.order_id for e in window.entries] == ["c", "b"]


def test_an_older_completion_does_not_enter_a_full_window() -> None:
    full = Window(2).merge([entry("a", 200), entry("b", 300)])
    assert full.merge([entry("old", 100)]) is full


def test_duplicates_change_nothing() -> None:
    window = Window(10).merge([entry("a", 1)])
    assert window.merge([entry("a", 1)]) is window


def test_cancelled_entries_hold_their_slot_but_are_not_averaged() -> None:
    window = Window(2).merge([entry("a", 100, wait=10), entry("b", 200, wait=30)])
    cancelled = window.merge([entry("b", 200, wait=30, cancelled=True)])
    assert cancelled.samples == 1
    assert cancelled.duration == 10.0
    assert len(cancelled.entries) == 2


def test_empty_window_has_no_duration() -> None:
    assert Window(3).duration is None
    assert Window(3).merge([entry("a", 1, cancelled=True)]).duration is None


def _entry_of(order: int, cancelled: bool) -> WindowEntry:
    # An order has one completion time and one wait (the store keeps the first), so two
    # entries of one order differ at most in `cancelled`; completion times still tie.
    return WindowEntry(order % 7, f"o{order}", order % 4, cancelled)


entries = st.builds(_entry_of, st.integers(0, 11), st.booleans())


@given(st.lists(entries, max_size=30), st.lists(entries, max_size=30), st.integers(1, 6))
def test_merge_is_a_join(left: list[WindowEntry], right: list[WindowEntry], size: int) -> None:
    a = Window(size).merge(left)
    b = Window(size).merge(right)
    assert a.join(b) == b.join(a)  # commutative
    assert a.join(a) == a  # idempotent
    assert a.join(b).join(b) == a.join(b)
    assert Window(size).merge(left + right) == a.join(b)  # merging in parts = merging at once


@given(st.lists(entries, max_size=30), entries, st.integers(1, 6))
def test_merge_one_is_the_general_merge(
    existing: list[WindowEntry], entry: WindowEntry, size: int
) -> None:
    window = Window(size).merge(existing)
    assert window.merge_one(entry) == window.merge([entry])
