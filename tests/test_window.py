"""The window: the top N counted orders of a key by (completion time, order id), averaged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.pairing import top
from service.core.window import Window, WindowEntry

pytestmark = pytest.mark.unit


def entry(order: str, completed: int, wait: int = 60) -> WindowEntry:
    return WindowEntry(completed, order, wait)


def window_of(size: int, entries: list[WindowEntry]) -> Window:
    return Window(size, top(entries, size))


def test_keeps_the_latest_n_by_completion_time() -> None:
    window = window_of(3, [entry(f"o{i}", 100 + i, wait=i) for i in range(5)])
    assert [e.order_id for e in window.entries] == ["o4", "o3", "o2"]
    assert window.samples == 3
    assert window.duration == 3.0


def test_boundary_ties_go_to_the_greater_order_id() -> None:
    window = window_of(2, [entry("a", 100), entry("c", 100), entry("b", 100)])
    assert [e.order_id for e in window.entries] == ["c", "b"]


def test_an_older_completion_does_not_enter_a_full_window() -> None:
    full = [entry("a", 200), entry("b", 300)]
    assert window_of(2, [*full, entry("old", 100)]) == window_of(2, full)


def test_the_average_is_rounded_to_the_millisecond() -> None:
    window = window_of(3, [entry("a", 1, wait=1), entry("b", 2, wait=1), entry("c", 3, wait=2)])
    assert window.duration == 1.333


def test_empty_window_has_no_duration() -> None:
    assert Window(3).duration is None
    assert Window(3).samples == 0


entries = st.builds(
    lambda order: WindowEntry(order % 7, f"o{order}", order % 4), st.integers(0, 11)
)


@given(st.lists(entries, unique=True), st.integers(1, 5))
def test_the_window_is_a_function_of_the_set_of_entries(
    items: list[WindowEntry], size: int
) -> None:
    assert window_of(size, items) == window_of(size, items[::-1]) == window_of(size, sorted(items))
