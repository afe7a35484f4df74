"""The per-(tenant, drink) window: the N latest counted orders of a key, and its average.

A window is the view of a key's durable state (``service.core.pairing.KeyState``): the top
N entries by (completion time, order id) among the key's counted orders, that is the
orders with both halves, not cancelled, whose wait is between 0 and the maximum wait
(docs/design.md, "The window"). A cancelled or anomalous order never holds a slot. The
window is computed, never merged: ``KeyState`` is the join-semilattice. Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

WindowKey = tuple[str, str]  # (tenant, drink)


class WindowEntry(NamedTuple):
    """One counted order: when its earliest completion came, and its wait in seconds."""

    completed_at: int
    order_id: str
    wait: int

    @property
    def rank(self) -> tuple[int, str]:
        """Ordering key: latest completion first, ties broken by the greater order id."""
        return (self.completed_at, self.order_id)


@dataclass(frozen=True, slots=True)
class Window:
    """An immutable window of at most ``size`` entries, best rank first."""

    size: int
    entries: tuple[WindowEntry, ...] = ()

    @property
    def samples(self) -> int:
        """How many waits are averaged: every entry is a counted order."""
        return len(self.entries)

    @property
    def duration(self) -> float | None:
        """Arithmetic mean of the waits in seconds (3 decimals), None for an empty window."""
        entries = self.entries
        return round(sum(e.wait for e in entries) / len(entries), 3) if entries else None
