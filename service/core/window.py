"""The per-(tenant, drink) window: the N latest completed orders, as a join-semilattice.

A window is "top N by (completed_at, order_id)" over a set of entries. Merging is union,
deduplicated by order id, then top N; it is commutative, associative and idempotent, so
duplicates, redeliveries and several workers merging into one stored copy all converge.
Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

WindowKey = tuple[str, str]  # (tenant, drink)


class WindowEntry(NamedTuple):
    """One paired order.

    An order has a single completion time and wait (the store keeps the first completion
    it sees), so two entries for one order differ at most in ``cancelled``; that is what
    makes merging a join.

    ``cancelled`` is set when a cancellation exists for an order that also has a
    completion (the real app never emits both): the entry keeps its slot so the window
    stays a pure function of the event set, but its wait is not averaged.
    """

    completed_at: int
    order_id: str
    wait: int
    cancelled: bool = False

    @property
    def rank(self) -> tuple[int, str]:
        """Ordering key: latest completion first, ties broken by the greater order id."""
        return (self.completed_at, self.order_id)


def _combine(a: WindowEntry, b: WindowEntry) -> WindowEntry:
    """Join of two entries for the same order; the same whatever the argument order."""
    if a == b:
        return a
    base = max(a, b, key=lambda e: (e.completed_at, e.wait))
    cancelled = a.cancelled or b.cancelled
    return (
        base
        if base.cancelled == cancelled
        else WindowEntry(base.completed_at, base.order_id, base.wait, cancelled)
    )


@dataclass(frozen=True, slots=True)
class Window:
    """An immutable window of at most ``size`` entries, best rank first."""

    size: int
    entries: tuple[WindowEntry, ...] = ()

    def merge(self, incoming: Iterable[WindowEntry]) -> Window:
        """The join of this window and some entries; returns ``self`` when nothing changes."""
        if type(incoming) is tuple and len(incoming) == 1:
            return self.merge_one(incoming[0])
        by_id = {entry.order_id: entry for entry in self.entries}
        changed = False
        for entry in incoming:
            current = by_id.get(entry.order_id)
            joined = entry if current is None else _combine(current, entry)
            if joined is not current:
                by_id[entry.order_id] = joined
                changed = True
        if not changed:
            return self
        ranked = sorted(by_id.values(), key=lambda e: e.rank, reverse=True)[: self.size]
        merged = tuple(ranked)
        return self if merged == self.entries else Window(self.size, merged)

    def merge_one(self, entry: WindowEntry) -> Window:
        """``merge((entry,))`` without building a dict: the per-completion hot path."""
        entries = self.entries
        for current in entries:
            if current.order_id == entry.order_id:
                joined = _combine(current, entry)
                if joined is current:
                    return self
                return self._merged_slow(entry)
        rank = entry.rank
        if len(entries) >= self.size and rank <= entries[-1].rank:
            return self  # older than everything in a full window
        position = 0
        while position < len(entries) and entries[position].rank > rank:
            position += 1
        merged = (*entries[:position], entry, *entries[position:])[: self.size]
        return Window(self.size, merged)

    def _merged_slow(self, entry: WindowEntry) -> Window:
        by_id = {e.order_id: e for e in self.entries}
        by_id[entry.order_id] = _combine(by_id[entry.order_id], entry)
        ranked = sorted(by_id.values(), key=lambda e: e.rank, reverse=True)[: self.size]
        merged = tuple(ranked)
        return self if merged == self.entries else Window(self.size, merged)

    def join(self, other: Window) -> Window:
        """Merge another copy of the same key's window (e.g. the stored one)."""
        return self.merge(other.entries)

    @property
    def samples(self) -> int:
        """How many waits are averaged."""
        return sum(1 for entry in self.entries if not entry.cancelled)

    @property
    def duration(self) -> float | None:
        """Arithmetic mean of the averaged waits in seconds, None when there are none."""
        waits = [entry.wait for entry in self.entries if not entry.cancelled]
        return round(sum(waits) / len(waits), 3) if waits else None

    def contains(self, order_id: str) -> bool:
        """Whether an order currently holds a slot."""
        return any(entry.order_id == order_id for entry in self.entries)
