"""The one bounded cache of the service: a mapping that forgets its least recently used keys.

The store's windows (``WAIT_TIMES_MAX_WINDOWS_IN_MEMORY``), tenant states and the board's
values (``WAIT_TIMES_BOARD_MAX_KEYS``) are kept in it, so the memory of a long-running
process is bounded whatever the traffic.
Pure: no I/O here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most ``capacity`` entries; putting past it drops the least recently used."""

    __slots__ = ("_entries", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"an LRU holds at least one entry, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> list[K]:
        """Set ``key`` as the most recently used; past capacity the oldest entries go (their
        keys are returned, for a caller that keeps an index over the entries)."""
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        dropped = []
        while len(entries) > self.capacity:
            dropped.append(entries.popitem(last=False)[0])
        return dropped

    def discard(self, key: K) -> None:
        """Forget ``key`` if present."""
        self._entries.pop(key, None)
