"""The commit driver: the one loop both stores run over a flush's two commit rules.

A commit joins a flush's records into their keys' states (``service.core.commit.
WindowCommit``) and their tenants' states (``service.core.tenant.TenantCommit``). Both
rules propose, round by round, each changed state at its version + 1; ``drive_commit``
hands every proposal of a round to the store's writes (``CommitWrites``), each written
only over the version it was proposed from, then tells each rule what landed and, for what
lost a race, what the store holds now, until neither rule proposes anything (or a rule's
bound on rounds fails the commit). The store adds only its I/O: DynamoDB's conditional
puts and transactions (``service.aws.store.DynamoStore``), or the tests' in-memory fake.

Pure: no I/O library here (the loop is ``async`` only because the writes it awaits are).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

# The two rules' keys, stored states and results: a window key, ``StoredKey`` and
# ``KeyCommitted``; a tenant, ``StoredTenant`` and ``TenantCommitted``. The driver reads
# none of them, so it imports neither rule (and stays a floor below the stores).
K = TypeVar("K", bound=Hashable)
S = TypeVar("S")
R = TypeVar("R")
WK = TypeVar("WK", bound=Hashable)
WS = TypeVar("WS")
WR = TypeVar("WR")
TK = TypeVar("TK", bound=Hashable)
TS = TypeVar("TS")
TR = TypeVar("TR")


class CommitRule(Protocol[K, S, R]):
    """A commit rule as ``WindowCommit`` and ``TenantCommit`` are: proposals by key, each
    at its stored version + 1, until none is left; told what landed and what was re-read."""

    rounds: int

    def proposals(self) -> dict[K, S]:
        """The next states still to write (empty when done)."""
        ...

    def landed(self, keys: Iterable[K]) -> None:
        """These proposals were written."""
        ...

    def lost(self, reread: Mapping[K, S]) -> None:
        """These keys lost a race: their stored states as read again."""
        ...

    def result(self) -> list[R]:
        """Where every key ended."""
        ...


@dataclass(frozen=True, slots=True)
class Proposals(Generic[WK, WS, TK, TS]):
    """One round's proposals: each key's and tenant's next state, at version ``v``, to be
    written only where the stored version is still ``v - 1`` (or none is stored, at 0)."""

    windows: Mapping[WK, WS]
    tenants: Mapping[TK, TS]

    def __bool__(self) -> bool:
        return bool(self.windows) or bool(self.tenants)


@dataclass(frozen=True, slots=True)
class Subjects(Generic[WK, TK]):
    """Some keys and tenants of a round."""

    windows: frozenset[WK] = frozenset()
    tenants: frozenset[TK] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.windows) or bool(self.tenants)


@dataclass(frozen=True, slots=True)
class Written(Generic[WK, TK]):
    """What a round's writes did: ``landed``, the proposals written; ``lost``, those whose
    expected version no longer held (another writer was first: re-read and proposed
    again). A proposal in neither (a transaction cancelled for another item's sake) is
    proposed again as it was."""

    landed: Subjects[WK, TK] = field(default_factory=Subjects)
    lost: Subjects[WK, TK] = field(default_factory=Subjects)


@dataclass(frozen=True, slots=True)
class Reread(Generic[WK, WS, TK, TS]):
    """The stored states of what lost a race, as read again."""

    windows: Mapping[WK, WS]
    tenants: Mapping[TK, TS]


class CommitWrites(Protocol[WK, WS, TK, TS]):
    """A store's I/O for one commit: what ``drive_commit`` asks of it."""

    async def write(self, proposals: Proposals[WK, WS, TK, TS]) -> Written[WK, TK]:
        """Write every proposal conditionally on its expected version; raise the service's
        error when a write failed (not when it lost a race)."""
        ...

    async def reread(self, lost: Subjects[WK, TK]) -> Reread[WK, WS, TK, TS]:
        """The stored states of these keys and tenants, read again (consistently)."""
        ...

    async def contended(self, rounds: int) -> None:
        """No write of round ``rounds`` (from 1) landed: let the other writer finish."""
        ...


@dataclass(frozen=True, slots=True)
class CommitResult(Generic[WR, TR]):
    """Where every key and every tenant of the flush ended."""

    windows: list[WR]
    tenants: list[TR]


async def drive_commit(
    windows: CommitRule[WK, WS, WR],
    tenants: CommitRule[TK, TS, TR],
    writes: CommitWrites[WK, WS, TK, TS],
) -> CommitResult[WR, TR]:
    """Run both rules to the end, every round's proposals of both kinds written together:
    propose, write conditionally, hand back what landed and, re-read, what lost; repeat
    until nothing is left to write."""
    while proposals := Proposals(windows.proposals(), tenants.proposals()):
        written = await writes.write(proposals)
        windows.landed(written.landed.windows)
        tenants.landed(written.landed.tenants)
        if written.lost:
            reread = await writes.reread(written.lost)
            windows.lost(reread.windows)
            tenants.lost(reread.tenants)
        if not written.landed:
            await writes.contended(max(windows.rounds, tenants.rounds))
    return CommitResult(windows.result(), tenants.result())
