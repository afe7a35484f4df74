"""A tenant's queue: its open orders, and the wait an order placed now can expect.

A tenant's durable state (``TenantState``) is, like a key's, a join-semilattice: the joined
record of every order whose submissions name the tenant, pruned by a rule that never
removes what the view needs. Its view, at an event time ``as_of``, is the estimate
(``estimate``): the tenant's open orders and, per drink, a predicted wait and a p90
(docs/design.md, "The wait estimate"; docs/decisions.md, "A queue-aware estimate,
measured, published, scored").

Definitions:

- an order is the tenant's when its earliest submission names the tenant;
- **open at t**: submitted at s <= t, not ended by t (no completion or cancellation at a
  time <= t), and t - s <= the maximum wait (an older order is ahead of no one);
- **counted**: completed, not cancelled, a wait in [0, maximum wait]: only counted orders
  train the estimate;
- the estimate learns from the tenant's counted orders among the latest
  ``training_orders`` completed orders that name it, by (completion time, order id), each
  with the number of the tenant's orders open when it was submitted: a function of the
  set of accepted events, not of their arrival order. An order that moved to another
  tenant stays in the state as a tombstone, by the same time rules as the others.

Every rule of the tenant is a small function, here when it reads a record (join and
compact, the tenants a record names, the times of its latest event, byte cap, training
sample) and in ``service.core.tenant_rules`` when it reads plain values (open interval
and the unended orders open at a time, open count, latest event, view time, the recent
orders, horizon, prune, next version), called by
``TenantState`` (what the worker stores) and by ``service.core.tenant_index.LiveTenant``
(the indexed copy ``replay --estimates`` keeps): a rule changes in one place. The
options they read are one value (``EstimateOptions``); the model is the options'
estimator (``service.core.estimators``).

A tenant's state is committed by the window rule (``TenantCommit``, as
``service.core.commit.WindowCommit``): proposed at version + 1 from the stored state and
the records that name the tenant, pruned, written conditionally, re-read and proposed
again when it lost. Its view is the estimate; ``changed`` compares it in whole seconds
(``Estimate.rounded``). A store writes both kinds of proposal in the same requests.

Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.core.estimate import Estimate, changed
from service.core.estimators.base import OpenOrder, QueueSnapshot, Sample
from service.core.pairing import OrderRecord
from service.core.tenant_rules import (
    ended_kept,
    horizon,
    latest_of,
    next_version,
    open_count,
    open_interval,
    recent_start,
    unended_kept,
    unended_kept_from,
    view_time,
)
from service.errors import MAX_CONFLICT_ROUNDS, next_round

if TYPE_CHECKING:
    from service.core.estimators.base import EstimateOptions

MAX_TENANT_ORDERS = 2000  # per tenant: past it the oldest orders leave the state (counted)
MAX_TENANT_BYTES = 300_000  # and past this many bytes of them (a DynamoDB item holds 400 KB)


# -- the rules: each once, called by both shapes -------------------------------------------


def joined(known: OrderRecord | None, incoming: OrderRecord) -> OrderRecord:
    """Join and compact: what the state holds of an order after ``incoming`` joins it."""
    return compact(incoming if known is None else known.join(compact(incoming)))


def tenants_named(record: OrderRecord) -> set[str]:
    """Every tenant an order's submissions name: each holds the order (its own, or a
    tombstone)."""
    return {tenant for _, tenant, _ in record.submissions}


def own_event_times(record: OrderRecord, tenant: str) -> tuple[int, ...]:
    """The times of the tenant's latest event an own record holds: its earliest submission,
    completion and cancellation (none for another tenant's record)."""
    if not record.submissions or record.submissions[0][1] != tenant:
        return ()
    return (record.submissions[0][0], *record.completions[:1], *record.cancellations[:1])


def may_pass_byte_cap(chars: int, count: int) -> bool:
    """Whether ``count`` records whose names hold ``chars`` characters may take more than
    ``MAX_TENANT_BYTES`` (four bytes a character at most: when even that fits, no name
    needs encoding)."""
    return chars * 4 + 64 * count > MAX_TENANT_BYTES


def counted_wait(record: OrderRecord, max_wait_seconds: int) -> int | None:
    """The wait of a counted order, else None."""
    if record.cancelled or not record.completions or not record.submissions:
        return None
    wait = record.completions[0] - record.submissions[0][0]
    return wait if 0 <= wait <= max_wait_seconds else None


def training_sample(
    record: OrderRecord, tenant: str, max_wait_seconds: int, open_at: Callable[[int], int]
) -> Sample | None:
    """A completed record's sample, if it trains the tenant's estimate (its own,
    ``counted_wait``): its drink, the orders ahead of it when it was submitted, its wait."""
    wait = counted_wait(record, max_wait_seconds)
    if wait is None:
        return None
    first = record.submissions[0]
    if first[1] != tenant:
        return None
    # Itself is open at its own submission when its wait is positive.
    ahead = open_at(first[0]) - (1 if wait > 0 else 0)
    return Sample(first[2], ahead if ahead > 0 else 0, wait)


# -- the state the worker stores ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantState:
    """A tenant's durable state: the joined records of the orders that name it."""

    tenant: str
    orders: Mapping[str, OrderRecord] = field(default_factory=dict)

    def add(self, records: Iterable[OrderRecord]) -> TenantState:
        """Join records into the state, each compacted (``joined``); ``self`` when nothing
        changes."""
        orders: dict[str, OrderRecord] | None = None
        for incoming in records:
            known = (orders or self.orders).get(incoming.order_id)
            record = joined(known, incoming)
            if record != known:
                if orders is None:
                    orders = dict(self.orders)
                orders[incoming.order_id] = record
        return self if orders is None else TenantState(self.tenant, orders)

    def prune(
        self, as_of: int, options: EstimateOptions, cap: int = MAX_TENANT_ORDERS
    ) -> tuple[TenantState, int]:
        """The state without what no view at ``as_of`` or later can need, and how many
        orders the caps dropped (the oldest first: then open counts and the learned offsets
        are approximate, docs/design.md, "The wait estimate").

        Kept, the tenant's own records and tombstones alike (a record whose earliest
        submission names another tenant: it keeps a stale copy of the order from coming
        back): every record while the tenant has fewer than ``training_orders`` completed
        ones; then only what can still be open at a training order's submission or at
        ``as_of``. The horizon is the earliest completion among the latest
        ``training_orders`` completed records (``_recent``, ``recent_start``), less the
        maximum wait: every order that can ever train the estimate is among those (the set
        only moves forward), so it was submitted at or after the horizon. Dropped: records
        that ended before the horizon (and completed before it, if at all), and open ones
        submitted more than the maximum wait before both the horizon and ``as_of``. At most
        ``cap`` records and ``MAX_TENANT_BYTES`` of them are kept.
        """
        recent = _recent(self.orders.values(), options.training_orders)
        bound = horizon(
            len(recent),
            recent[-1].completions[0] if recent else 0,
            options.training_orders,
            options.max_wait_seconds,
        )
        kept: list[OrderRecord] = list(self.orders.values())
        if bound is not None:
            earliest = unended_kept_from(bound, as_of, options.max_wait_seconds)
            every, kept = kept, []
            for record in every:
                ended = record.ended_at
                if ended is None:
                    if unended_kept(record.submitted_at or 0, earliest):
                        kept.append(record)
                elif ended_kept(
                    ended, record.completions[0] if record.completions else None, bound, as_of
                ):
                    kept.append(record)
        dropped = over_caps(kept, cap)
        if dropped:
            # Ended orders first (oldest end first), then open ones (oldest submission).
            kept.sort(key=drop_order)
            kept = kept[dropped:]
        if len(kept) == len(self.orders):
            return self, 0
        return TenantState(self.tenant, {r.order_id: r for r in kept}), dropped

    def estimate(self, as_of: int, options: EstimateOptions) -> Estimate | None:
        """The view at ``as_of``: None when the tenant has no order at all."""
        mine = [r for r in self.orders.values() if r.tenant == self.tenant]
        if not mine:
            return None
        queue = _Queue(mine, options.max_wait_seconds, as_of)
        model = options.estimator.learn(training(self, queue, options))
        snapshot = QueueSnapshot(as_of, queue.open_now)
        drinks = {} if model is None else model.predict(snapshot)
        return Estimate(self.tenant, as_of, len(snapshot.open_orders), drinks)

    def latest_event(self) -> int | None:
        """The time the tenant's estimate is for: its latest event (of the earliest
        submission, completion and cancellation each order keeps), unless that one stands
        alone more than ``LONE_EVENT_GAP`` after all the others (``latest_of``)."""
        first = second = None  # the latest two distinct times, in one pass
        tenant = self.tenant
        for r in self.orders.values():
            for at in own_event_times(r, tenant):
                if first is None or at > first:
                    first, second = at, first
                elif at != first and (second is None or at > second):
                    second = at
        return latest_of(first, second)


def view_of(state: TenantState, now: int, options: EstimateOptions) -> Estimate | None:
    """A state's view: its estimate at its latest event, never after ``now`` (None: the
    tenant holds no order of its own). Computed from the state as stored, pruned."""
    latest = state.latest_event()
    return None if latest is None else state.estimate(view_time(latest, now), options)


def compact(record: OrderRecord) -> OrderRecord:
    """What a tenant's state keeps of a record: its earliest submission, completion and
    cancellation, and whether it was cancelled. Every view reads only these, and the
    earliest of a union is the earliest of the earliests, so compacting commutes with the
    join (the state is still a function of the set of accepted events)."""
    if (
        len(record.submissions) <= 1
        and len(record.completions) <= 1
        and len(record.cancellations) <= 1
        and record.expires_at is None
        and not record.anomaly_reported
        and record.in_force is None
    ):
        return record
    return OrderRecord(
        record.order_id,
        record.submissions[:1],
        record.completions[:1],
        record.cancelled,
        None,
        False,
        record.cancellations[:1],
    )


def stored_size(record: OrderRecord) -> int:
    """An upper bound of the bytes a compacted record takes in a tenant's item (its JSON
    row, before compression): what ``MAX_TENANT_BYTES`` counts."""
    first = record.submissions[0] if record.submissions else (0, "", "")
    return len(record.order_id.encode()) + len(first[1].encode()) + len(first[2].encode()) + 64


def over_caps(kept: Sequence[OrderRecord], cap: int) -> int:
    """How many of the oldest records (``drop_order``) must go to fit both caps."""
    dropped = max(0, len(kept) - cap)
    if not may_pass_byte_cap(sum(chars(r) for r in kept), len(kept)):
        return dropped
    total = sum(stored_size(r) for r in kept)
    if total <= MAX_TENANT_BYTES:
        return dropped
    for index, record in enumerate(sorted(kept, key=drop_order)):
        if total <= MAX_TENANT_BYTES:
            return max(dropped, index)
        total -= stored_size(record)
    return len(kept)


def chars(record: OrderRecord) -> int:
    """The characters of a record's names (``may_pass_byte_cap``)."""
    first = record.submissions[0] if record.submissions else (0, "", "")
    return len(record.order_id) + len(first[1]) + len(first[2])


def drop_order(record: OrderRecord) -> tuple[int, int, str]:
    """The order the caps drop records in: ended ones by end, then open ones by submission."""
    ended = record.ended_at
    if ended is not None:
        return (0, ended, record.order_id)
    return (1, record.submitted_at or 0, record.order_id)


def _recent(records: Iterable[OrderRecord], training_orders: int) -> list[OrderRecord]:
    """The latest ``training_orders`` completed records by (completion, order id), whatever
    else they are (the tenant's or a tombstone, cancelled, anomalous): the orders that
    may train the estimate. An order that stops counting (it moved away, or was cancelled
    after it completed) keeps its place, so no older order takes it: the set only moves
    forward, and pruning behind it loses nothing (docs/design.md, "The wait estimate")."""
    completed = [r for r in records if r.completions]
    completed.sort(key=lambda r: (r.completions[0], r.order_id))
    return completed[recent_start(len(completed), training_orders) :][::-1]


class _Queue:
    """Open counts at any time, in O(log n): each order open on its ``open_interval``; and
    the orders open at ``at`` (``open_now``, by (submission, order id); one pass for both)."""

    def __init__(
        self, records: Sequence[OrderRecord], max_wait_seconds: int, at: int | None = None
    ) -> None:
        starts, ends = [], []
        open_now = []
        for record in records:
            first = record.submissions[0]
            start, stop = open_interval(first[0], record.ended_at, max_wait_seconds)
            starts.append(start)
            ends.append(stop)
            if at is not None and start <= at < stop:
                open_now.append(OpenOrder(record.order_id, start, first[2]))
        starts.sort()
        ends.sort()
        self.starts, self.ends = starts, ends
        open_now.sort(key=lambda o: (o.submitted_at, o.order_id))
        self.open_now = tuple(open_now)

    def open_at(self, t: int) -> int:
        """How many of the orders are open at ``t``."""
        return open_count(self.starts, self.ends, t)


def training(state: TenantState, queue: _Queue, options: EstimateOptions) -> list[Sample]:
    """The training samples: the tenant's counted orders among the recent ones, latest
    first, each with the orders ahead of it when it was submitted."""
    samples = []
    for record in _recent(state.orders.values(), options.training_orders):
        sample = training_sample(record, state.tenant, options.max_wait_seconds, queue.open_at)
        if sample is not None:
            samples.append(sample)
    return samples


# -- the tenants' commit: the one window rule (service.core.commit), for tenants --------


@dataclass(frozen=True, slots=True)
class StoredTenant:
    """A tenant's state as last written, its view (the estimate), its version."""

    state: TenantState
    view: Estimate | None
    version: int

    @classmethod
    def empty(cls, tenant: str) -> StoredTenant:
        """A tenant never written: no order, no estimate, version 0."""
        return cls(TenantState(tenant), None, 0)

    @classmethod
    def of(
        cls, state: TenantState, version: int, *, now: int, options: EstimateOptions
    ) -> StoredTenant:
        """A stored state with its view at the tenant's latest event (never after ``now``)."""
        return cls(state, view_of(state, now, options), version)


@dataclass(frozen=True, slots=True)
class TenantCommitted:
    """Where a tenant ended after a commit. ``changed``: its estimate changed in whole
    seconds; ``counted``: the orders this commit was the first to hold completed, with a
    wait that counts (each order is by exactly one landed write, which scores it)."""

    tenant: str
    stored: StoredTenant
    changed: bool
    counted: tuple[str, ...]


class TenantCommit:
    """One flush's records joined into their tenants' stored states, round by round; a
    store drives it exactly as it drives ``WindowCommit``."""

    def __init__(
        self,
        records: Mapping[str, Sequence[OrderRecord]],
        stored: Mapping[str, StoredTenant],
        *,
        now: int,
        options: EstimateOptions,
        cap: int = MAX_TENANT_ORDERS,
        max_rounds: int = MAX_CONFLICT_ROUNDS,
    ) -> None:
        self.records = records
        self.states = {tenant: stored[tenant] for tenant in records}
        self.before = {tenant: state.view for tenant, state in self.states.items()}
        self.now = now
        self.options = options
        self.cap = cap
        self.max_rounds = max_rounds
        self.rounds = 0
        self.dropped = 0  # orders the cap dropped, in the writes that landed
        self._counted: dict[str, list[str]] = {}
        self._proposed: dict[str, tuple[StoredTenant, int]] = {}
        self._fresh: set[str] = set()  # tenants whose state this commit wrote or re-read

    def proposals(self) -> dict[str, StoredTenant]:
        """The next state of every tenant the records still change, each at its version
        + 1; empty when done. Raises a retriable DependencyError past ``max_rounds``."""
        proposed: dict[str, tuple[StoredTenant, int]] = {}
        for tenant, tenant_records in self.records.items():
            current = self.states[tenant]
            state = current.state.add(tenant_records)
            if state is current.state:
                continue
            as_of = view_time(state.latest_event(), self.now)
            state, dropped = state.prune(as_of, self.options, self.cap)
            # Pruning may leave the orders as they were (an order the caps drop again, or
            # one too old to hold). Against a state this commit wrote or read again, that
            # is no change; against a cached one it is still written, since the cache may
            # be stale and only the conditional write finds out.
            if state.orders == current.state.orders and tenant in self._fresh:
                continue
            stored = StoredTenant.of(
                state, next_version(current.version), now=self.now, options=self.options
            )
            proposed[tenant] = (stored, dropped)
        if proposed:
            self.rounds = next_round(self.rounds, self.max_rounds)
        self._proposed = proposed
        return {tenant: stored for tenant, (stored, _) in proposed.items()}

    def landed(self, tenants: Iterable[str]) -> None:
        """These tenants' proposals were written: they are the stored states now."""
        for tenant in tenants:
            stored, dropped = self._proposed[tenant]
            self._counted.setdefault(tenant, []).extend(
                _newly_counted(
                    self.states[tenant].state, stored.state, self.options.max_wait_seconds
                )
            )
            self.dropped += dropped
            self.states[tenant] = stored
            self._fresh.add(tenant)

    def lost(self, reread: Mapping[str, StoredTenant]) -> None:
        """These tenants' writes lost a race: their stored states as read again. What
        another writer wrote is what it published: the baseline of ``changed`` now."""
        self.states.update(reread)
        self._fresh.update(reread)
        for tenant, stored in reread.items():
            self.before[tenant] = stored.view

    def result(self) -> list[TenantCommitted]:
        """Every tenant of the flush, where it ended, and whether its estimate changed."""
        return [
            TenantCommitted(
                tenant,
                stored,
                changed(self.before[tenant], stored.view),
                tuple(self._counted.get(tenant, ())),
            )
            for tenant, stored in self.states.items()
        ]


def _newly_counted(before: TenantState, after: TenantState, max_wait_seconds: int) -> list[str]:
    """The tenant's own orders that ``after`` holds completed and ``before`` did not (as its
    own), and whose wait counts. A record's completions only grow, so each order is seen
    completed first by one landed write, whatever happens to it later (an earlier
    submission or completion, a cancellation): it is scored once."""

    def completed(record: OrderRecord | None) -> bool:
        return record is not None and record.tenant == after.tenant and bool(record.completions)

    return sorted(
        order_id
        for order_id, record in after.orders.items()
        if completed(record)
        and not completed(before.orders.get(order_id))
        and counted_wait(record, max_wait_seconds) is not None
    )
