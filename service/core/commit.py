"""How a flush's records are committed to their keys' stored states: the one window rule.

Both stores (``service.aws.store.DynamoStore`` and the tests' in-memory fake) run this
rule and add only their I/O: each proposes, from a key's stored state and the flush's
records, the next state at version + 1 (``KeyState.add`` then ``settle``); writes every
proposal conditionally on the version it was made from; and, for the keys whose write
lost to another writer, re-reads the stored state and proposes again. The state is a
join-semilattice, so every writer converges (docs/decisions.md, "Earliest wins"). Every
limit of that loop is defined here, once (the bound on rounds, shared with the tenants'
rule ``service.core.tenant.TenantCommit``, in ``service.errors``). Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from service.core.pairing import KeyState, OrderRecord
from service.core.window import Window, WindowKey
from service.errors import MAX_CONFLICT_ROUNDS, next_round

MAX_LIVE_ORDERS = 2000  # per key: past it the oldest orders settle early (KeyState.settle)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key's state as last written: the state, its view (the window), its version."""

    state: KeyState
    view: Window
    version: int

    @classmethod
    def empty(cls, key: WindowKey, size: int) -> StoredKey:
        """A key never written: empty state, empty window, version 0."""
        return cls(KeyState(key, size), Window(size), 0)


@dataclass(frozen=True, slots=True)
class KeyCommitted:
    """Where a key ended after a commit; ``changed``: its window (the view) changed."""

    key: WindowKey
    stored: StoredKey
    changed: bool


class WindowCommit:
    """One flush's records joined into their keys' stored states, round by round.

    A store drives it: ``proposals()`` (empty once every key holds the records), write
    them, then ``landed(keys)`` for the writes that held and ``lost(states)`` with the
    re-read state of the keys whose expected version no longer held; at the end,
    ``result()``. ``rounds`` counts the proposal rounds: more than one means an earlier
    round may have written some keys before a failure or a lost race.
    """

    def __init__(
        self,
        records: Mapping[WindowKey, Sequence[OrderRecord]],
        stored: Mapping[WindowKey, StoredKey],
        *,
        now: int,
        max_wait_seconds: int,
        max_live: int = MAX_LIVE_ORDERS,
        max_rounds: int = MAX_CONFLICT_ROUNDS,
    ) -> None:
        self.records = records
        self.states = {key: stored[key] for key in records}
        self.before = {key: state.view for key, state in self.states.items()}
        self.now = now
        self.max_wait_seconds = max_wait_seconds
        self.max_live = max_live
        self.max_rounds = max_rounds
        self.rounds = 0
        self._proposed: dict[WindowKey, StoredKey] = {}

    def proposals(self) -> dict[WindowKey, StoredKey]:
        """The next state of every key the records still change, each at its version + 1;
        empty when done. Raises a retriable DependencyError past ``max_rounds`` rounds."""
        proposed: dict[WindowKey, StoredKey] = {}
        for key, key_records in self.records.items():
            current = self.states[key]
            state = current.state.add(key_records).settle(
                self.now, self.max_wait_seconds, self.max_live
            )
            if state is not current.state:
                proposed[key] = StoredKey(
                    state, state.view(self.max_wait_seconds), current.version + 1
                )
        if proposed:
            self.rounds = next_round(self.rounds, self.max_rounds)
        self._proposed = proposed
        return proposed

    def landed(self, keys: Iterable[WindowKey]) -> None:
        """These keys' proposals were written: they are the stored states now."""
        for key in keys:
            self.states[key] = self._proposed[key]

    def lost(self, reread: Mapping[WindowKey, StoredKey]) -> None:
        """These keys' writes lost a race: their stored states as read again. What
        another writer wrote is what it published: the baseline of ``changed`` now."""
        self.states.update(reread)
        for key, stored in reread.items():
            self.before[key] = stored.view

    def result(self) -> list[KeyCommitted]:
        """Every key of the flush, where it ended, and whether its window changed."""
        return [
            KeyCommitted(key, state, state.view != self.before[key])
            for key, state in self.states.items()
        ]
