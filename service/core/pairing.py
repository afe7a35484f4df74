"""Pairing submissions with completions, and a key's state. Pure: no I/O here.

An order's record is the join of *all* its events: every distinct submission (time,
tenant, drink), every distinct completion time, and whether any cancellation exists. Sets
only grow, so records merge by union, in any order, any number of times. What the record
*means* is computed from it: the earliest submission wins (ties: tenant, then drink), the
earliest completion wins, a cancellation excludes the order. Producers retry, and a
retried step emits a new event with a later time (sometimes another drink): earliest
wins, never "first delivered" (docs/design.md).

"Earliest wins" is not monotone for a bounded window: an earlier completion can push an
entry below the N-th, an earlier submission can move an order to another key, a late
cancellation removes it, and the window then needs an order it would have dropped. So a
key's durable state (``KeyState``) is not its window but every joined record of the
orders that ever named the key within the expiry horizon (``live``), plus the top N of
the orders that can no longer change (``settled``); the window is a view computed from
it. ``outcome`` turns a record into its window entry, an anomaly, or nothing yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Final, Generic, NamedTuple, TypeVar

from service.core.orders import OrderEvent, Role
from service.core.window import Window, WindowEntry, WindowKey

Submission = tuple[int, str, str]  # (time, tenant, drink): tuple order is the tie-break order

# A NamedTuple built by tuple.__new__ skips its generated Python-level __new__: half the
# cost, on replay's hot path (the fields are given in full, in order).
_new_tuple: Final = tuple.__new__
_SUBMITTED: Final = Role.SUBMITTED  # globals, not attribute look-ups on the enum
_COMPLETED: Final = Role.COMPLETED


class InForce(NamedTuple):
    """The estimate an order was told: the predicted wait and p90 of its drink at the
    tenant it was submitted to (None: kept before the tenant was, any tenant's)."""

    estimate: float
    p90: float
    tenant: str | None = None


class OrderRecord(NamedTuple):
    """Everything known about one order (immutable; a NamedTuple because it is cheap)."""

    order_id: str
    # Sorted tuples, not sets: the first element is the one that counts, and building a
    # one-element tuple is what replay's hot path can afford (a frozenset is not).
    submissions: tuple[Submission, ...] = ()
    completions: tuple[int, ...] = ()
    cancelled: bool = False
    expires_at: int | None = None
    anomaly_reported: bool = False  # the worker that first saw it anomalous said so
    # Every distinct cancellation time (a timeout is a cancellation): when the order
    # stopped being open. Empty with ``cancelled`` set only for records stored before
    # cancellation times were kept (then it ended at an unknown time).
    cancellations: tuple[int, ...] = ()
    # The estimate in force for its drink when its submission was first processed: kept
    # with the order to score it once it completes; the first kept wins. Not an event: no
    # state that holds the order keeps it.
    in_force: InForce | None = None

    def merge(self, event: OrderEvent, expires_at: int | None = None) -> OrderRecord:
        """The record after one more event; applying an event twice changes nothing."""
        # One unpacking of each tuple and a tuple.__new__, not attribute look-ups and the
        # NamedTuple's Python-level __new__: this is replay's hot path.
        (
            order_id,
            submissions,
            completions,
            cancelled,
            own_expiry,
            anomaly_reported,
            cancellations,
            in_force,
        ) = self
        role, _, at, tenant, drink, _ = event
        expiry = own_expiry if own_expiry is not None else expires_at
        if role is _SUBMITTED:
            half = (at, tenant, drink or "")
            if half in submissions:
                if expiry == own_expiry:
                    return self
            else:
                submissions = tuple(sorted((*submissions, half))) if submissions else (half,)
        elif role is _COMPLETED:
            if at in completions:
                if expiry == own_expiry:
                    return self
            else:
                completions = tuple(sorted((*completions, at))) if completions else (at,)
        elif at in cancellations:
            if expiry == own_expiry:
                return self
        else:
            cancelled = True
            cancellations = tuple(sorted((*cancellations, at))) if cancellations else (at,)
        return _new_tuple(
            OrderRecord,
            (
                order_id,
                submissions,
                completions,
                cancelled,
                expiry,
                anomaly_reported,
                cancellations,
                in_force,
            ),
        )

    def join(self, other: OrderRecord) -> OrderRecord:
        """Union of two records of the same order (the stored one and a flush's)."""
        if other == self:
            return self
        expiry = self.expires_at if self.expires_at is not None else other.expires_at
        if other.expires_at is not None and expiry is not None:
            expiry = min(expiry, other.expires_at)
        joined = OrderRecord(
            self.order_id,
            tuple(sorted(set(self.submissions) | set(other.submissions))),
            tuple(sorted(set(self.completions) | set(other.completions))),
            self.cancelled or other.cancelled,
            expiry,
            self.anomaly_reported or other.anomaly_reported,
            tuple(sorted(set(self.cancellations) | set(other.cancellations))),
            self.in_force if self.in_force is not None else other.in_force,
        )
        # ``self`` when nothing was added, so callers can tell a change by identity.
        return self if joined == self else joined

    @property
    def submission(self) -> Submission | None:
        """The submission that counts: the earliest (ties: tenant, then drink)."""
        return self.submissions[0] if self.submissions else None

    @property
    def submitted_at(self) -> int | None:
        """Time of the submission that counts."""
        first = self.submission
        return None if first is None else first[0]

    @property
    def tenant(self) -> str | None:
        """Tenant of the submission that counts."""
        first = self.submission
        return None if first is None else first[1]

    @property
    def drink(self) -> str | None:
        """Drink of the submission that counts."""
        first = self.submission
        return None if first is None else first[2]

    @property
    def completed_at(self) -> int | None:
        """The completion that counts: the earliest."""
        return self.completions[0] if self.completions else None

    @property
    def ended_at(self) -> int | None:
        """When the order stopped being open: its earliest completion or cancellation
        (None while open). A cancellation of unknown time ends it at its submission."""
        ends = [*self.completions[:1], *self.cancellations[:1]]
        if self.cancelled and not self.cancellations and self.submissions:
            ends.append(self.submissions[0][0])
        return min(ends) if ends else None

    @property
    def key(self) -> WindowKey | None:
        """The window this order belongs to, once a submission is known."""
        first = self.submission
        return None if first is None else (first[1], first[2])

    @property
    def keys(self) -> frozenset[WindowKey]:
        """Every key any of its submissions names: the states that must hear about it."""
        return frozenset((tenant, drink) for _, tenant, drink in self.submissions)


class Anomaly(StrEnum):
    """Why a paired order is counted in metrics and logs but never averaged."""

    NEGATIVE_WAIT = "negative_wait"
    WAIT_ABOVE_MAXIMUM = "wait_above_maximum"


class Paired(NamedTuple):
    """A record with both halves and no cancellation: the entry for its window."""

    key: WindowKey
    entry: WindowEntry


class Anomalous(NamedTuple):
    """A record with both halves whose wait is out of bounds."""

    key: WindowKey
    order_id: str
    wait: int
    anomaly: Anomaly


Outcome = Paired | Anomalous | None


def outcome(record: OrderRecord, max_wait_seconds: int) -> Outcome:
    """What a record contributes: an entry, an anomaly, or nothing (a half is missing, or
    the order was cancelled: a cancelled order never counts and never holds a slot)."""
    # One unpacking, not properties: replay settles every record through here.
    order_id, submissions, completions, cancelled, _, _, _, _ = record
    if not submissions or not completions:
        return None
    submitted_at, tenant, drink = submissions[0]
    completed_at = completions[0]
    wait = completed_at - submitted_at
    key = (tenant, drink)
    if wait < 0:
        return Anomalous(key, order_id, wait, Anomaly.NEGATIVE_WAIT)
    if wait > max_wait_seconds:
        return Anomalous(key, order_id, wait, Anomaly.WAIT_ABOVE_MAXIMUM)
    if cancelled:
        return None
    return _new_tuple(Paired, (key, _new_tuple(WindowEntry, (completed_at, order_id, wait))))


def join_all(
    known: Mapping[str, OrderRecord],
    records: Iterable[OrderRecord],
    *,
    keep_cancellations: bool = True,
) -> dict[str, OrderRecord] | None:
    """``known`` with each record joined into its order's; None when nothing changes. The
    anomaly mark is left out (it belongs to the order's own record, not to a state that
    holds it), as is the estimate kept with it, and so are the cancellation times unless
    ``keep_cancellations``."""
    joined_all: dict[str, OrderRecord] | None = None
    for incoming in records:
        record = incoming
        if (
            incoming.anomaly_reported
            or incoming.in_force is not None
            or (incoming.cancellations and not keep_cancellations)
        ):
            kept = incoming.cancellations if keep_cancellations else ()
            record = incoming._replace(anomaly_reported=False, cancellations=kept, in_force=None)
        current = (joined_all or known).get(record.order_id)
        joined = record if current is None else current.join(record)
        if joined is not current:
            if joined_all is None:
                joined_all = dict(known)
            joined_all[record.order_id] = joined
    return joined_all


def top(entries: Iterable[WindowEntry], size: int) -> tuple[WindowEntry, ...]:
    """The ``size`` best-ranked entries (latest completion, then greater order id)."""
    return tuple(sorted(entries, key=_RANK, reverse=True)[:size])


_RANK: Final = attrgetter("completed_at", "order_id")  # WindowEntry.rank, without a call


@dataclass(frozen=True, slots=True)
class KeyState:
    """A key's durable state, a join-semilattice whose view is the key's window.

    ``live``: the joined record of every order that named this key (in any of its
    submissions) and has a completion, while its record may still change (until it
    expires). ``settled``: the top N entries of orders that can no longer change. A record
    settles when it expires, or early, oldest first, past ``max_live`` orders (then a late
    change to that order is not seen: the cap bounds the stored item).
    """

    key: WindowKey
    size: int
    live: Mapping[str, OrderRecord] = field(default_factory=dict)
    settled: tuple[WindowEntry, ...] = ()

    def add(self, records: Iterable[OrderRecord]) -> KeyState:
        """Join records into the live set; ``self`` when nothing changes."""
        # The anomaly mark and the cancellation times belong to the order record, not to a
        # key's state (which keeps only whether the order was cancelled).
        live = join_all(self.live, records, keep_cancellations=False)
        return self if live is None else KeyState(self.key, self.size, live, self.settled)

    def settle(self, now: int, max_wait_seconds: int, max_live: int) -> KeyState:
        """Move expired records (and, past ``max_live``, the oldest) into ``settled``."""
        expired = [
            r for r in self.live.values() if r.expires_at is not None and r.expires_at <= now
        ]
        excess = len(self.live) - len(expired) - max_live
        if excess > 0:
            remaining = sorted(
                (r for r in self.live.values() if r not in expired),
                key=lambda r: (r.expires_at or 0, r.order_id),
            )
            expired += remaining[:excess]
        if not expired:
            return self
        gone = {r.order_id for r in expired}
        entries = list(self.settled)
        for record in expired:
            found = outcome(record, max_wait_seconds)
            if isinstance(found, Paired) and found.key == self.key:
                entries.append(found.entry)
        live = {i: r for i, r in self.live.items() if i not in gone}
        return KeyState(self.key, self.size, live, top(entries, self.size))

    def view(self, max_wait_seconds: int) -> Window:
        """The window: the top N of the counted live orders of this key and the settled."""
        entries = list(self.settled)
        settled_ids = {e.order_id for e in entries}
        for record in self.live.values():
            found = outcome(record, max_wait_seconds)
            if (
                isinstance(found, Paired)
                and found.key == self.key
                and found.entry.order_id not in settled_ids
            ):
                entries.append(found.entry)
        return Window(self.size, top(entries, self.size))


def join_event(
    record: OrderRecord | None, event: OrderEvent, now: int, ttl_seconds: int
) -> OrderRecord | None:
    """The one way an order's events are joined: its record after one more event, at ``now``.

    No record yet: a new one, expiring ``ttl_seconds`` after ``now`` (its expiry is set
    once, when the order is first seen). A record past its expiry: None, the order is done
    and the event is a late half, never paired (docs/design.md, "Expiry"). Otherwise the
    record with the event joined in (``record`` itself when the event adds nothing).
    Replay's hot path: one call per event.
    """
    if record is None:
        return _first_record(event, now + ttl_seconds)
    expires_at = record.expires_at
    if expires_at is not None and expires_at <= now:
        return None
    return record.merge(event)


def _first_record(event: OrderEvent, expires_at: int) -> OrderRecord:
    """``OrderRecord(event.order_id).merge(event, expires_at)``, built directly: half of
    replay's events start a record."""
    role, order_id, at, tenant, drink, _ = event
    fields: tuple[object, ...]
    if role is _SUBMITTED:
        half = (at, tenant, drink or "")
        fields = (order_id, (half,), (), False, expires_at, False, (), None)
    elif role is _COMPLETED:
        fields = (order_id, (), (at,), False, expires_at, False, (), None)
    else:
        fields = (order_id, (), (), True, expires_at, False, (at,), None)
    return _new_tuple(OrderRecord, fields)


def expired(record: OrderRecord, now: int) -> bool:
    """Whether the record's expiry has passed at ``now``: the order is done."""
    return record.expires_at is not None and record.expires_at <= now


R = TypeVar("R")  # a book's shape of record


class ExpiringBook(Generic[R]):
    """Order records in memory with expiry, keyed by order id; what a book of either
    shape of record shares (``OrderBook``: whole records; ``EarliestBook``, replay's, in
    service/core/earliest.py: the projection an outcome reads). A subclass joins events
    (``apply``) and says how to read a record's id and expiry (``_order_id_of``,
    ``_expires_at_of``).

    A record expires ``ttl_seconds`` after it was first seen; an order whose record
    expired is done: a half of it arriving later is counted (``late_halves``) and never
    paired, as the worker does with a record past its expiry. Records that expired are in
    ``stale`` until taken (``take_stale``), so their entries can settle.
    """

    _order_id_of: Callable[[R], str]
    _expires_at_of: Callable[[R], int | None]

    def __init__(self, ttl_seconds: int) -> None:
        self.ttl_seconds = ttl_seconds
        self.records: dict[str, R] = {}
        self.expired_ids: set[str] = set()
        self.stale: list[R] = []
        self.expired = 0
        self.late_halves = 0

    def _retire(self, record: R) -> None:
        order_id = self._order_id_of(record)
        del self.records[order_id]
        self.expired_ids.add(order_id)
        self.stale.append(record)
        self.expired += 1

    def expire(self, now: int) -> list[R]:
        """Drop records whose TTL has passed; returns them (they are in ``stale`` too).

        A record's expiry is set when it is first seen, from a clock that never goes back,
        and a dict keeps first-insertion order: the expired records are a prefix.
        """
        found = []
        expires_at_of = self._expires_at_of
        for record in self.records.values():
            expires_at = expires_at_of(record)
            if expires_at is None or expires_at > now:
                break
            found.append(record)
        for record in found:
            self._retire(record)
        return found

    def take_stale(self) -> list[R]:
        """The records that expired since the last call, oldest first."""
        stale, self.stale = self.stale, []
        return stale


class OrderBook(ExpiringBook[OrderRecord]):
    """Whole order records (``ExpiringBook``), for ``replay --estimates``, tests and the
    benchmark (the worker keeps them in DynamoDB). Events are joined with ``join_event``."""

    _order_id_of = attrgetter("order_id")
    _expires_at_of = attrgetter("expires_at")

    def apply(self, event: OrderEvent, now: int) -> OrderRecord | None:
        """Join an event into its order's record; the new record, or None if unchanged
        (a duplicate, or a late half of an expired order)."""
        order_id = event.order_id
        current = self.records.get(order_id)
        if current is None and order_id in self.expired_ids:
            self.late_halves += 1
            return None
        joined = join_event(current, event, now, self.ttl_seconds)
        if joined is None or joined is current:
            if joined is None and current is not None:  # it expired before this half came
                self._retire(current)
                self.late_halves += 1
            return None
        self.records[order_id] = joined
        return joined
