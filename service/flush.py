"""One flush: the messages processed together, as named steps (docs/decisions.md, "One
flush, named steps").

The pure steps take values and return named values; they call no port and no observer,
so they are unit-tested without fakes:

1. ``triage``: parse every message: order events, poison, ignored, duplicates in the flush;
2. ``join_records``: each order's events in the flush joined into one record;
3. ``sort_records``: the stored records sorted out, once per order: the records each key's
   state must join, the redelivered orders per key, the anomalous orders not yet
   reported, the halves that came after their order expired;
4. ``keep_in_force``: each new submission's record gets the estimate in force for its
   drink, to be scored when it completes;
5. ``to_publish``: which committed keys publish their average and which committed tenants
   their estimate, by one rule;
6. ``scores``: the estimates scored against the orders the commit counted first;
7. ``final_poison`` (``service.ports``, the board's rule too): which poison messages are on the
   receive that sends them to the DLQ.

``Flush.run`` is the effectful sequence around them, in the order the delivery guarantees
rest on: read the tenants' estimates, apply (order records), commit (windows and tenant
states), publish (averages and estimates together), mark anomalies, delete, then release
poison. A crash anywhere before the delete means redelivery, and every effect is
idempotent. It reports to the observer twice: what it received when it starts, and
everything it did, in one place (``_report``), when its effects are durable.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import structlog

from service.core.consumed import parse_body
from service.core.estimate import Estimate
from service.core.orders import OrderEvent, Role
from service.core.pairing import (
    Anomalous,
    InForce,
    OrderRecord,
    expired,
    join_event,
    outcome,
)
from service.core.published import Published, average_event, estimate_detail
from service.core.tenant import counted_wait, tenants_named
from service.core.window import WindowKey
from service.errors import PoisonMessageError, WaitTimesError
from service.ports import (
    Committed,
    EventPublisher,
    FlushOutcome,
    Message,
    Observer,
    OrderQueue,
    OrderStore,
    Retry,
    Score,
    TenantChange,
    WindowChange,
    final_poison,
)
from service.settings import WorkerOptions

log = structlog.get_logger(__name__)


# -- the pure steps ------------------------------------------------------------------------


@dataclass
class Triage:
    """A flush's messages sorted by what they are."""

    orders: list[tuple[Message, OrderEvent]] = field(default_factory=list)
    poison: list[tuple[Message, PoisonMessageError]] = field(default_factory=list)
    to_delete: list[Message] = field(default_factory=list)  # ignored, or twice in the flush
    ignored: int = 0
    redelivered: int = 0


def triage(messages: Sequence[Message], options: WorkerOptions, *, now: int) -> Triage:
    """Parse every message: order events, poison, ignored, duplicates in the flush. An event
    stamped more than ``max_clock_skew_seconds`` after ``now`` is poison."""
    sorted_out = Triage()
    seen: set[str] = set()
    not_after = now + options.max_clock_skew_seconds
    for message in messages:
        if message.message_id in seen:  # the same message twice in one flush
            sorted_out.to_delete.append(message)
            continue
        seen.add(message.message_id)
        if message.receive_count > 1:
            sorted_out.redelivered += 1
        try:
            event = parse_body(
                message.body,
                source=options.source,
                not_after=not_after,
                completion=options.completion_event,
            )
        except PoisonMessageError as exc:
            sorted_out.poison.append((message, exc))
            continue
        if event is None:
            sorted_out.ignored += 1
            sorted_out.to_delete.append(message)
        else:
            sorted_out.orders.append((message, event))
    return sorted_out


def join_records(
    orders: Sequence[tuple[Message, OrderEvent]], *, now: int, ttl_seconds: int
) -> list[OrderRecord]:
    """One record per order: its events in this flush, joined (``join_event``)."""
    joined: dict[str, OrderRecord] = {}
    for _, event in orders:
        record = join_event(joined.get(event.order_id), event, now, ttl_seconds)
        if record is not None:  # a record made in this flush cannot be past its expiry
            joined[event.order_id] = record
    return list(joined.values())


def keep_in_force(
    joined: Sequence[OrderRecord], views: dict[str, Estimate | None]
) -> list[OrderRecord]:
    """Each record with a submission gets the estimate in force for its drink: the
    tenant's current one (``views``) if it is for a time strictly before the submission
    (the record keeps the first it is given, ``service.aws.items.order_update``)."""
    kept = []
    for record in joined:
        first = record.submission
        view = None if first is None else views.get(first[1])
        found = None
        if first is not None and view is not None and view.as_of < first[0]:
            found = view.drinks.get(first[2])
        kept.append(
            record
            if found is None or first is None
            else record._replace(in_force=InForce(found.estimate, found.p90, first[1]))
        )
    return kept


@dataclass
class SortedRecords:
    """The stored records of a flush's orders, sorted out for the window commit."""

    by_key: dict[WindowKey, list[OrderRecord]] = field(default_factory=dict)
    redelivered: dict[WindowKey, set[str]] = field(default_factory=dict)
    anomalous: dict[str, Anomalous] = field(default_factory=dict)
    by_tenant: dict[str, list[OrderRecord]] = field(default_factory=dict)  # every tenant named
    redelivered_tenants: set[str] = field(default_factory=set)
    late_halves: int = 0


def sort_records(
    orders: Sequence[tuple[Message, OrderEvent]],
    stored: dict[str, OrderRecord],
    *,
    now: int,
    max_wait_seconds: int,
) -> SortedRecords:
    """Sort a flush's stored records out, once per order however many of its events the
    flush holds: every key an order's submissions name hears about it once it has a
    completion, and every tenant they name hears about it at once; an order delivered
    again is redelivered for those keys and tenants; an order whose
    record expired before these halves came is done, its halves late and never paired
    (DynamoDB deletes expired items lazily; docs/design.md, "Expiry")."""
    by_order: dict[str, list[Message]] = defaultdict(list)
    for message, event in orders:
        by_order[event.order_id].append(message)
    found = SortedRecords()
    by_key: defaultdict[WindowKey, list[OrderRecord]] = defaultdict(list)
    redelivered: defaultdict[WindowKey, set[str]] = defaultdict(set)
    by_tenant: defaultdict[str, list[OrderRecord]] = defaultdict(list)
    for order_id, messages in by_order.items():
        record = stored[order_id]
        if expired(record, now):
            found.late_halves += len(messages)
            continue
        again = any(message.receive_count > 1 for message in messages)
        for tenant in tenants_named(record):
            by_tenant[tenant].append(record)
            if again:
                found.redelivered_tenants.add(tenant)
        if not record.completions:
            continue
        for key in record.keys:
            by_key[key].append(record)
            if again:
                redelivered[key].add(order_id)
        paired = outcome(record, max_wait_seconds)
        if isinstance(paired, Anomalous) and not record.anomaly_reported:
            found.anomalous[order_id] = paired
    found.by_key, found.redelivered = dict(by_key), dict(redelivered)
    found.by_tenant = dict(by_tenant)
    return found


class PublishableChange(Protocol):
    """What ``to_publish`` reads of a committed change (``WindowChange``, ``TenantChange``)."""

    @property
    def changed(self) -> bool:
        """Its published value changed."""
        ...

    @property
    def subject(self) -> Hashable:
        """What it is of: a key, a tenant."""
        ...

    @property
    def shown(self) -> bool:
        """It holds a value to publish."""
        ...


C = TypeVar("C", bound=PublishableChange)


def to_publish(
    changes: Sequence[C],
    flushed: Iterable[Hashable],
    redelivered: Iterable[Hashable],
    *,
    retried: bool,
) -> list[C]:
    """The one rule of what a flush publishes, for averages (keys) and estimates (tenants)
    alike: a value that changed, and the current one of everything a redelivered order
    names (its publish may have been lost with a crashed worker, also when the change took
    the order out of the window, as a cancellation does: its current version goes out
    again). When the commit was tried again (``retried``), an earlier attempt may have
    written anything the flush's orders name (``flushed``), so all of it. Never a change
    with nothing to show (an empty window, a tenant without an estimate)."""
    again = set(flushed) if retried else set(redelivered)
    return [
        change for change in changes if change.shown and (change.changed or change.subject in again)
    ]


def scores(
    changes: Sequence[TenantChange],
    stored: dict[str, OrderRecord],
    submitted_here: set[str],
    max_wait_seconds: int,
) -> list[Score]:
    """Each order the commit saw completed first, if its wait counts, scored against the
    estimate kept with it: the absolute error and whether the wait exceeded the p90;
    unscored when its submission was processed in this flush (its completion was there
    first, or came with it), when no estimate was in force for it, or when the estimate
    it kept was another tenant's (it moved: the tenant it was told at scored it)."""
    found = []
    for change in changes:
        for order_id in change.counted:
            record = stored.get(order_id)
            wait = None if record is None else counted_wait(record, max_wait_seconds)
            if record is None or wait is None:
                continue
            if order_id in submitted_here:
                found.append(Score(change.tenant, order_id, reason="completed_first"))
            elif record.in_force is None:
                found.append(Score(change.tenant, order_id, reason="no_estimate"))
            elif record.in_force.tenant not in (None, change.tenant):
                found.append(Score(change.tenant, order_id, reason="moved"))
            else:
                estimate, p90, _ = record.in_force
                found.append(
                    Score(change.tenant, order_id, error=abs(wait - estimate), over_p90=wait > p90)
                )
    return found


# -- the effects ---------------------------------------------------------------------------


class Flush:
    """Runs flushes: the pure steps above between the effects on the ports."""

    def __init__(
        self,
        queue: OrderQueue,
        store: OrderStore,
        publisher: EventPublisher,
        observer: Observer,
        options: WorkerOptions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.store = store
        self.publisher = publisher
        self.observer = observer
        self.options = options
        self.clock = clock

    async def run(self, messages: Sequence[Message], retry: Retry) -> FlushOutcome:
        """Make one flush's effects durable, publish, then delete it, each step that may
        fail retriably run through ``retry`` (the worker's loop). Idempotent."""
        started = time.perf_counter()
        now = int(self.clock())
        options = self.options
        found = triage(messages, options, now=now)
        self.observer.flush_started(len(messages), found.redelivered)
        joined = join_records(found.orders, now=now, ttl_seconds=options.pending_ttl_seconds)
        submitted = {e.order_id for _, e in found.orders if e.role is Role.SUBMITTED}
        if submitted:
            tenants = {r.tenant for r in joined if r.order_id in submitted and r.tenant is not None}
            views = await retry("read", lambda: self.store.tenant_views(tenants, now))
            joined = keep_in_force(joined, views)
        stored = await retry("apply", lambda: self.store.apply_all(joined, now))
        records = sort_records(
            found.orders, stored, now=now, max_wait_seconds=options.max_wait_seconds
        )
        committed, averages, estimates = await self._commit(records, now, retry)
        await self._publish(averages, estimates, retry)
        marked = await self._mark_anomalies(records, retry)
        to_delete = found.to_delete + [message for message, _ in found.orders]
        deleted = await retry("delete", lambda: self.queue.delete(to_delete)) if to_delete else 0
        outcome = FlushOutcome(
            processed=len(found.orders),
            ignored=found.ignored,
            poison=len(found.poison),
            published=len(averages),
            deleted=deleted,
            changed_keys=[c.key for c in averages if c.changed],
            late_halves=records.late_halves,
            anomalies=marked,
            averages=averages,
            estimates=estimates,
            tenants=committed.tenants,
            scores=scores(committed.tenants, stored, submitted, options.max_wait_seconds),
            tenant_orders_dropped=committed.dropped,
            final_poison=final_poison(found.poison, options.redrive_limit),
            seconds=time.perf_counter() - started,
        )
        self._report(outcome)
        if found.poison:
            await self._release([message for message, _ in found.poison])
        return outcome

    async def _commit(
        self, records: SortedRecords, now: int, retry: Retry
    ) -> tuple[Committed, list[WindowChange], list[TenantChange]]:
        """Join the records into their keys' and tenants' stored states: what the commit
        did, the averages and the estimates to publish."""
        if not records.by_key and not records.by_tenant:
            return Committed([], []), [], []
        attempts: list[None] = []

        def commit() -> Awaitable[Committed]:
            attempts.append(None)
            return self.store.commit(records.by_key, records.by_tenant, now)

        done = await retry("commit", commit)
        retried = len(attempts) > 1
        return (
            done,
            to_publish(done.windows, records.by_key, records.redelivered, retried=retried),
            to_publish(
                done.tenants, records.by_tenant, records.redelivered_tenants, retried=retried
            ),
        )

    async def _publish(
        self, averages: list[WindowChange], estimates: list[TenantChange], retry: Retry
    ) -> None:
        """Averages and estimates in the same PutEvents calls."""
        if not averages and not estimates:
            return
        size = self.options.window_size
        details: list[Published] = [
            average_event(c.key, c.state.window, c.state.version, size) for c in averages
        ]
        details += [
            estimate_detail(c.estimate, c.version) for c in estimates if c.estimate is not None
        ]
        await retry("publish", lambda: self.publisher.publish(details))

    async def _mark_anomalies(self, records: SortedRecords, retry: Retry) -> list[Anomalous]:
        """Mark each anomalous order once; those this flush marked (only it reports them)."""
        if not records.anomalous:
            return []
        kinds = {order_id: found.anomaly.value for order_id, found in records.anomalous.items()}
        marked = await retry("mark", lambda: self.store.mark_anomalies(kinds))
        return [records.anomalous[order_id] for order_id in sorted(marked)]

    def _report(self, outcome: FlushOutcome) -> None:
        """Everything a flush did, to the observer and the log, in one place."""
        observer = self.observer
        if outcome.late_halves:
            observer.late_half(outcome.late_halves)
        for change in outcome.averages:
            window = change.state.window
            observer.average_published(change.key, window.duration, window.samples)
        for found in outcome.anomalies:
            observer.anomaly(found.anomaly.value)
            log.warning(
                "wait_anomaly",
                order_id=found.order_id,
                tenant=found.key[0],
                drink=found.key[1],
                wait_s=found.wait,
                kind=found.anomaly.value,
            )
        for tenant in outcome.tenants:
            if tenant.estimate is not None:
                observer.tenant_estimate(tenant.estimate)
        for score in outcome.scores:
            if score.reason is None:
                observer.estimate_scored(score.tenant, score.error, score.over_p90)
            else:
                observer.estimate_unscored(score.tenant, score.reason)
        if outcome.tenant_orders_dropped:
            observer.tenant_orders_dropped(outcome.tenant_orders_dropped)
        observer.flush_finished(
            processed=outcome.processed,
            ignored=outcome.ignored,
            deleted=outcome.deleted,
            seconds=outcome.seconds,
            windows_tracked=self.store.cached_windows,
            tenants_tracked=self.store.cached_tenants,
        )
        for message, error in outcome.final_poison:
            observer.poison(error.reason)
            log.error(
                "poison_message",
                message_id=message.message_id,
                reason=error.reason,
                detail=error.detail,
                receive_count=message.receive_count,
                dead_letter=self.options.redrive_limit is not None,
            )

    async def _release(self, poison: list[Message]) -> None:
        """Make poison visible again at once, so it reaches the DLQ quickly."""
        try:
            await self.queue.change_visibility(poison, 0)
        except WaitTimesError as exc:
            # Not released early, it returns after the visibility timeout all the same.
            log.warning("poison_release_failed", error=str(exc)[:300])
