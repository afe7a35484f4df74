"""The worker loop: receive, make effects durable, publish, then delete; one flush at a time.

One loop: long-poll a receive; while receives come back full (a backlog), take more
(short polls, up to ``settings.max_receives_per_flush``); process all of it as one flush,
whose DynamoDB and EventBridge calls are shared by every message in it. Light traffic
makes a flush of one message, processed as soon as it arrives; a backlog makes flushes of
up to 100 messages, so calls per order fall as load rises (docs/decisions.md). Order of a
flush, which the delivery guarantees rest on:
1. parse every message (poison and ignored ones are set aside, never fatal);
2. join each order's events into its stored record (idempotent, commutative);
3. join the resulting entries into the stored windows (conditional, versioned);
4. publish one DrinkAverageTime per changed window;
5. only then delete the flush's messages.
A crash anywhere before 5 means redelivery, and every step above is idempotent, so a
redelivered message changes nothing twice. The one thing a crash between 3 and 4 could
lose is the publish; a redelivered message whose order sits in a window republishes that
window's current version (consumers keep the highest version they see).

The worker is written against the ports (``service.ports``) and imports no adapter. It
owns the service's one unbounded retry loop (``_until_done``): a step that fails with a
retriable error is tried again, alone, with capped exponential backoff and full jitter,
readiness false meanwhile; a non-retriable one ends the flush (its messages return after
the visibility timeout, and the redrive policy ends one that keeps failing in the DLQ);
a ConfigurationError stops the worker.

Beside the loop, ``watch_queue_depths`` reads the depth of the queue and of its
dead-letter queue every 30 s for the observer; it never touches a flush or readiness.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import structlog
from anyio.abc import TaskStatus

from service.backoff import DEPENDENCY_RETRY
from service.core.events import average_event, parse_body
from service.core.orders import OrderEvent
from service.core.pairing import Anomalous, OrderRecord, outcome
from service.core.window import WindowKey
from service.errors import ConfigurationError, PoisonMessageError, WaitTimesError, first_error
from service.ports import (
    SQS_BATCH_LIMIT,
    AveragePublisher,
    Message,
    Observer,
    OrderQueue,
    OrderStore,
    QueueDepthSource,
    WindowChange,
)
from service.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
MAX_TRACKED_PENDING = 200_000
DEPTH_POLL_SECONDS = 30.0  # at most one GetQueueAttributes per watched queue this often


class FlushAbandoned(Exception):
    """A stop was requested while a dependency kept failing: leave the flush unfinished."""


@dataclass
class BatchOutcome:
    """What one flush did, for tests and logs."""

    processed: int = 0
    ignored: int = 0
    poison: int = 0
    published: int = 0
    changed_keys: list[WindowKey] = field(default_factory=list)


@dataclass
class _Triage:
    """A flush's messages sorted by what they are."""

    orders: list[tuple[Message, OrderEvent]] = field(default_factory=list)
    poison: list[tuple[Message, PoisonMessageError]] = field(default_factory=list)
    to_delete: list[Message] = field(default_factory=list)
    ignored: int = 0
    redelivered: int = 0


async def until_done(
    step: str,
    call: Callable[[], Awaitable[T]],
    observer: Observer,
    *,
    stopping: Callable[[], bool] = lambda: False,
) -> T:
    """Run one step, trying again while it fails retriably: the service's one unbounded
    retry loop (an outage lasts as long as it lasts; readiness says so meanwhile).

    A non-retriable error propagates at once; once ``stopping()``, a failure raises
    FlushAbandoned instead of waiting for the dependency.
    """
    attempt = 0
    while True:
        try:
            result = await call()
        except WaitTimesError as exc:
            if not exc.retriable:
                raise
            observer.retrying(step, exc)
            if stopping():
                raise FlushAbandoned(step) from exc
            delay = DEPENDENCY_RETRY.delay(attempt)
            attempt += 1
            log.warning(
                "aws_unreachable" if getattr(exc, "unreachable", False) else "dependency_retry",
                step=step,
                error=str(exc)[:300],
                attempt=attempt,
                retry_in_s=round(delay, 2),
            )
            await anyio.sleep(delay)
        else:
            if attempt:
                observer.dependencies_ok()
            return result


async def watch_queue_depths(
    queues: Mapping[str, QueueDepthSource],
    observer: Observer,
    *,
    interval: float = DEPTH_POLL_SECONDS,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> None:
    """Report each queue's depth to the observer now and then every ``interval`` seconds,
    until cancelled. Each queue is read on its own, and waits a whole ``interval`` after a
    read before the next, so it is never read more often than that.

    A failed read is not retried and not reported as a dependency failure: the depth stays
    as last read, readiness and flushes never hear of it, and the failure is logged once
    per streak (``queue_depth_failed``, then ``queue_depth_recovered``).
    """
    async with anyio.create_task_group() as group:
        for name, queue in queues.items():
            group.start_soon(_watch_depth, name, queue, observer, interval, sleep)


async def _watch_depth(
    name: str,
    queue: QueueDepthSource,
    observer: Observer,
    interval: float,
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    failing = False
    while True:
        try:
            depth = await queue.depth()
        except Exception as exc:  # noqa: BLE001 - a gauge left stale must not stop the worker
            if not failing:
                log.warning(
                    "queue_depth_failed",
                    queue=name,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    retry_in_s=interval,
                )
            failing = True
        else:
            if failing:
                log.info("queue_depth_recovered", queue=name)
            failing = False
            observer.queue_depth(name, depth)
        await sleep(interval)


class Worker:
    """Consumes the queue in flushes: one or several receives processed together."""

    def __init__(
        self,
        queue: OrderQueue,
        store: OrderStore,
        publisher: AveragePublisher,
        settings: Settings,
        observer: Observer,
        *,
        max_receive_count: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.store = store
        self.publisher = publisher
        self.settings = settings
        self.observer = observer
        self.max_receive_count = max_receive_count
        self.clock = clock
        self._stopping = False
        self._receive_scope: anyio.CancelScope | None = None
        self._held = 0  # messages of the flush being processed
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._scope: anyio.CancelScope | None = None
        self.finished = anyio.Event()  # set when ``run`` returns

    # -- lifecycle -----------------------------------------------------------------

    async def run(
        self, *, burst: bool = False, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until ``stop()`` (or, with ``burst``, until the queue is drained)."""
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                while not self._stopping:
                    receives = await self._receive_flush(burst)
                    if receives:
                        await self._process_held(receives)
                    elif burst and await self._drained():
                        break
            log.info("worker_stopped")
        finally:
            self.finished.set()

    def stop(self) -> None:
        """Stop receiving now; messages already received get ``drain_seconds`` to finish."""
        if self._stopping:
            return
        self._stopping = True
        log.info("worker_stopping", messages_held=self._held, drain_s=self.settings.drain_seconds)
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        if self._scope is not None:
            # Past the drain budget whatever is left is cancelled; its messages were not
            # deleted, so they come back after the visibility timeout.
            self._scope.deadline = min(
                self._scope.deadline, anyio.current_time() + self.settings.drain_seconds
            )

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stopping

    async def _until_done(self, step: str, call: Callable[[], Awaitable[T]]) -> T:
        return await until_done(step, call, self.observer, stopping=lambda: self._stopping)

    # -- receiving -----------------------------------------------------------------

    async def _receive_flush(self, burst: bool) -> list[list[Message]]:
        """Long-poll until messages arrive; while receives come back full (a backlog), take
        more at once, up to ``max_receives_per_flush``. Empty when stopped or idle."""
        receives: list[list[Message]] = []
        with anyio.CancelScope() as scope:
            self._receive_scope = scope
            try:
                first = await self._until_done(
                    "receive", lambda: self.queue.receive(1 if burst else None)
                )
                if first:
                    receives.append(first)
                while (
                    receives
                    and len(receives[-1]) == SQS_BATCH_LIMIT
                    and len(receives) < self.settings.max_receives_per_flush
                ):
                    # A short poll: only what is waiting.
                    more = await self._until_done("receive", lambda: self.queue.receive(0))
                    if not more:
                        break
                    receives.append(more)
            except FlushAbandoned:
                pass  # stopping while the queue does not answer: nothing was received
            finally:
                self._receive_scope = None
        return receives

    async def _drained(self) -> bool:
        """Burst mode: whether the queue is drained (or a stop came while it did not answer)."""
        try:
            return await self._until_done("is_drained", self.queue.is_drained)
        except FlushAbandoned:
            return True

    async def _process_held(self, receives: list[list[Message]]) -> None:
        """Process a flush, keeping its messages invisible until it is done.

        If an unexpected error (a bug, not a dependency) fails a flush of several receives,
        each receive is processed on its own, so one bad receive cannot hold back the others.
        """
        messages = [message for received in receives for message in received]
        self._held = len(messages)
        try:
            with first_error():  # a ConfigurationError leaves as itself, not in a group
                async with anyio.create_task_group() as flush:
                    flush.start_soon(self._heartbeat, messages)
                    if not await self._process_or_leave(messages) and len(receives) > 1:
                        for received in receives:
                            await self._process_or_leave(received)
                    flush.cancel_scope.cancel()
        finally:
            self._held = 0

    async def _process_or_leave(self, messages: list[Message]) -> bool:
        """Process messages; False when a non-retriable failure leaves them to the queue."""
        try:
            await self.process_batch(messages)
        except FlushAbandoned as stopped:
            log.warning("batch_abandoned_at_shutdown", messages=len(messages), step=str(stopped))
        except ConfigurationError:
            raise
        except Exception:
            # A bug or an answer retrying cannot change: leave the messages to the
            # visibility timeout, so the redrive policy ends a message that keeps failing
            # in the DLQ instead of blocking the queue.
            log.exception("batch_failed", messages=len(messages))
            return False
        return True

    async def _heartbeat(self, messages: list[Message]) -> None:
        timeout = self.queue.visibility_timeout
        while True:
            await anyio.sleep(max(1.0, timeout / 3))
            try:
                await self.queue.change_visibility(messages, timeout)
                self.observer.visibility_extended()
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat only risks a harmless redelivery
                log.warning("heartbeat_failed", error=type(exc).__name__)

    # -- one flush -----------------------------------------------------------------

    async def process_batch(self, messages: Sequence[Message]) -> BatchOutcome:
        """Make one flush's effects durable, publish, then delete it. Idempotent."""
        started = time.perf_counter()
        now = int(self.clock())
        triage = self._triage(messages, not_after=now + self.settings.max_clock_skew_seconds)
        self.observer.flush_started(len(messages), triage.redelivered)

        joined: dict[str, OrderRecord] = {}
        for _, event in triage.orders:
            current = joined.get(event.order_id) or OrderRecord(event.order_id)
            joined[event.order_id] = current.merge(event)
        records = await self._until_done(
            "apply", lambda: self.store.apply_all(list(joined.values()), now)
        )
        by_key, redelivered, anomalous = self._pair(triage.orders, records, now)
        to_publish = await self._commit_windows(by_key, redelivered, now)
        await self._publish(to_publish)
        if anomalous:
            await self._report_anomalies(anomalous)

        to_delete = triage.to_delete + [message for message, _ in triage.orders]
        deleted = (
            await self._until_done("delete", lambda: self.queue.delete(to_delete))
            if to_delete
            else 0
        )
        self.observer.flush_finished(
            processed=len(triage.orders),
            ignored=triage.ignored,
            deleted=deleted,
            seconds=time.perf_counter() - started,
            windows_tracked=self.store.cached_windows,
            pending_orders=len(self._pending),
        )
        if triage.poison:
            await self._release_poison(triage.poison)
        return BatchOutcome(
            processed=len(triage.orders),
            ignored=triage.ignored,
            poison=len(triage.poison),
            published=len(to_publish),
            changed_keys=[c.key for c in to_publish if c.changed],
        )

    def _triage(self, messages: Sequence[Message], *, not_after: int) -> _Triage:
        """Parse every message: order events, poison, ignored, duplicates in the flush."""
        triage = _Triage()
        seen: set[str] = set()
        for message in messages:
            if message.message_id in seen:  # the same message twice in one flush
                triage.to_delete.append(message)
                continue
            seen.add(message.message_id)
            if message.receive_count > 1:
                triage.redelivered += 1
            try:
                event = parse_body(
                    message.body,
                    source=self.settings.source,
                    not_after=not_after,
                    completion=self.settings.completion_event,
                )
            except PoisonMessageError as exc:
                triage.poison.append((message, exc))
                continue
            if event is None:
                triage.ignored += 1
                triage.to_delete.append(message)
            else:
                triage.orders.append((message, event))
        return triage

    def _pair(
        self, orders: list[tuple[Message, OrderEvent]], records: dict[str, OrderRecord], now: int
    ) -> tuple[dict[WindowKey, list[OrderRecord]], dict[WindowKey, set[str]], dict[str, Anomalous]]:
        """Sort a flush's stored records out, once per order however many of its events the
        flush holds: the records each key's state must join (every key an order's
        submissions name, once it has a completion), the redelivered orders per key, and
        the anomalous orders not yet reported."""
        by_order: dict[str, list[tuple[Message, OrderEvent]]] = defaultdict(list)
        for message, event in orders:
            by_order[event.order_id].append((message, event))
        by_key: dict[WindowKey, list[OrderRecord]] = defaultdict(list)
        redelivered: dict[WindowKey, set[str]] = defaultdict(set)
        anomalous: dict[str, Anomalous] = {}
        for order_id, its_events in by_order.items():
            record = records[order_id]
            if record.expires_at is not None and record.expires_at <= now:
                # Its record expired before these halves came (DynamoDB deletes expired
                # items lazily): the order is done, never paired (docs/design.md, Expiry).
                self.observer.late_half(len(its_events))
                continue
            self._track_pending(record)
            if not record.completions:
                continue
            for key in record.keys:
                by_key[key].append(record)
                if any(message.receive_count > 1 for message, _ in its_events):
                    redelivered[key].add(order_id)
            found = outcome(record, self.settings.max_wait_seconds)
            if isinstance(found, Anomalous) and not record.anomaly_reported:
                anomalous[order_id] = found
        return by_key, redelivered, anomalous

    async def _commit_windows(
        self,
        records: dict[WindowKey, list[OrderRecord]],
        redelivered: dict[WindowKey, set[str]],
        now: int,
    ) -> list[WindowChange]:
        """Join records into the stored key states; the changes to publish.

        A key whose window changed is published; so is one whose window holds a
        redelivered order (its publish may have been lost with a crashed worker). When the
        merge had to be tried again, an earlier attempt may have written some keys before
        failing, so every key whose window holds one of this flush's orders is published.
        """
        if not records:
            return []
        attempts = 0

        async def merge() -> list[WindowChange]:
            nonlocal attempts
            attempts += 1
            return await self.store.merge_all(records, now)

        changes = await self._until_done("merge", merge)
        if attempts > 1:
            redelivered = {key: {r.order_id for r in batch} for key, batch in records.items()}
        return [
            change
            for change in changes
            if change.state.window.samples
            and (
                change.changed
                or any(change.state.window.contains(o) for o in redelivered.get(change.key, ()))
            )
        ]

    async def _report_anomalies(self, anomalous: dict[str, Anomalous]) -> None:
        """Count and log each anomalous order once: only the worker that marks it reports."""
        kinds = {order_id: found.anomaly.value for order_id, found in anomalous.items()}
        marked = await self._until_done("mark", lambda: self.store.mark_anomalies(kinds))
        for order_id in sorted(marked):
            found = anomalous[order_id]
            self.observer.anomaly(found.anomaly.value)
            log.warning(
                "wait_anomaly",
                order_id=order_id,
                tenant=found.key[0],
                drink=found.key[1],
                wait_s=found.wait,
                kind=found.anomaly.value,
            )

    async def _publish(self, changes: list[WindowChange]) -> None:
        if not changes:
            return
        size = self.settings.window_size
        details = [average_event(c.key, c.state.window, c.state.version, size) for c in changes]
        await self._until_done("publish", lambda: self.publisher.publish(details))
        for change in changes:
            window = change.state.window
            self.observer.average_published(change.key, window.duration, window.samples)

    async def _release_poison(self, poison: list[tuple[Message, PoisonMessageError]]) -> None:
        for message, error in poison:
            final = (
                self.max_receive_count is None or message.receive_count >= self.max_receive_count
            )
            if final:
                # Logged and counted once: on the receive after which the redrive policy
                # moves the message to the dead-letter queue.
                self.observer.poison(error.reason)
                log.error(
                    "poison_message",
                    message_id=message.message_id,
                    reason=error.reason,
                    detail=error.detail,
                    receive_count=message.receive_count,
                    dead_letter=self.max_receive_count is not None,
                )
        try:
            # Visible again at once, so it reaches maxReceiveCount (and the DLQ) quickly.
            await self.queue.change_visibility([m for m, _ in poison], 0)
        except WaitTimesError as exc:
            # Not released early, it returns after the visibility timeout all the same.
            log.warning("poison_release_failed", error=str(exc)[:300])

    def _track_pending(self, record: OrderRecord) -> None:
        half_open = (not record.submissions) != (not record.completions)
        if half_open and not record.cancelled:
            self._pending[record.order_id] = None
            self._pending.move_to_end(record.order_id)
            while len(self._pending) > MAX_TRACKED_PENDING:
                self._pending.popitem(last=False)
        else:
            self._pending.pop(record.order_id, None)
