"""The one bounded cache of the service: a mapping that forgets its least recently used keys.

The store's windows (``WAIT_TIMES_MAX_WINDOWS_IN_MEMORY``), tenant states and the board's
values (``WAIT_TIMES_BOARD_MAX_KEYS``) are kept in it, so the memory of a long-running
process is bounded whatever the traffic. The store's two are ``PackedLru``: the same
bound and the same order of forgetting, but only the most recently used entries are kept
as objects; the others are packed (a window or a tenant state as compressed bytes, a
tenth of its size as objects) and unpacked when used again (docs/design.md, "What a worker holds in memory").
Pure: no I/O here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = TypeVar("P")


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


class PackedLru(Generic[K, V, P]):
    """An ``Lru`` of at most ``capacity`` entries whose ``hot`` most recently used are kept
    as they are and the older ones packed: ``pack(value)`` when an entry leaves the hot
    ones, ``unpack(key, packed)`` when it is used again. ``unpack`` must give back a value
    equal to the one packed; entries are forgotten in the same order as an ``Lru``'s."""

    __slots__ = ("_cold", "_hot", "_pack", "_unpack", "capacity", "hot_capacity")

    def __init__(
        self,
        capacity: int,
        hot: int,
        pack: Callable[[V], P],
        unpack: Callable[[K, P], V],
    ) -> None:
        if capacity < 1 or hot < 1:
            raise ValueError(f"a packed LRU holds at least one entry, not {capacity} ({hot} hot)")
        self.capacity = capacity
        self.hot_capacity = min(hot, capacity)
        self._pack, self._unpack = pack, unpack
        self._hot: OrderedDict[K, V] = OrderedDict()  # most recently used last
        self._cold: OrderedDict[K, P] = OrderedDict()  # all older than the hot ones

    def __len__(self) -> int:
        return len(self._hot) + len(self._cold)

    def __contains__(self, key: object) -> bool:
        return key in self._hot or key in self._cold

    def __iter__(self) -> Iterator[K]:
        """Least recently used first; the keys as they were when iteration began."""
        yield from [*self._cold, *self._hot]

    @property
    def packed(self) -> int:
        """How many entries are held packed."""
        return len(self._cold)

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used, unpacked), or None."""
        hot = self._hot
        value = hot.get(key)
        if value is not None:
            hot.move_to_end(key)
            return value
        packed = self._cold.pop(key, None)
        if packed is None:
            return None
        value = self._unpack(key, packed)
        hot[key] = value
        self._cool()
        return value

    def put(self, key: K, value: V) -> list[K]:
        """Set ``key`` as the most recently used; past capacity the least recently used
        entries go (their keys are returned, as ``Lru.put`` does)."""
        self._cold.pop(key, None)
        hot = self._hot
        hot[key] = value
        hot.move_to_end(key)
        self._cool()
        dropped = []
        cold = self._cold
        while len(hot) + len(cold) > self.capacity:
            dropped.append(cold.popitem(last=False)[0])
        return dropped

    def discard(self, key: K) -> None:
        """Forget ``key`` if present."""
        self._hot.pop(key, None)
        self._cold.pop(key, None)

    def _cool(self) -> None:
        """Pack the hot entries past ``hot_capacity``, oldest first: they are newer than
        every packed one, so they join the packed ones at the recent end."""
        hot, cold = self._hot, self._cold
        while len(hot) > self.hot_capacity:
            key, value = hot.popitem(last=False)
            cold[key] = self._pack(value)
