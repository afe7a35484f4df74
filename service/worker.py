"""The worker loop: receive, make effects durable, publish, then delete; one flush at a time.

One loop: long-poll a receive; while receives come back full (a backlog), take more
(short polls, up to ``settings.max_receives_per_flush``); process all of it as one flush,
whose DynamoDB and EventBridge calls are shared by every message in it. Light traffic
makes a flush of one message, processed as soon as it arrives; a backlog makes flushes of
up to 100 messages, so calls per order fall as load rises (docs/decisions.md). Order of a flush, which the delivery guarantees rest on:
1. parse every message (poison and ignored ones are set aside, never fatal);
2. join each order's events into its DynamoDB record (idempotent, commutative);
3. join the resulting entries into the stored windows (conditional, versioned);
4. publish one DrinkAverageTime per changed window;
5. only then delete the flush's messages from SQS.
A crash anywhere before 5 means redelivery, and every step above is idempotent, so a
redelivered message changes nothing twice. The one thing a crash between 3 and 4 could
lose is the publish; a redelivered message whose order sits in a window republishes that
window's current version (consumers keep the highest version they see).
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskStatus

from service.aws.publisher import average_event
from service.aws.queue import SQS_BATCH_LIMIT, Message
from service.aws.retry import Backoff, is_retriable
from service.aws.store import WindowChange
from service.core.events import DrinkAverageTime, OrderEvent, Role, parse_body
from service.core.pairing import Anomalous, OrderRecord, Paired, outcome
from service.core.window import WindowEntry, WindowKey
from service.errors import ConfigurationError, DependencyError, PoisonMessageError
from service.metrics import Health, Metrics
from service.settings import Settings

log = structlog.get_logger(__name__)

MAX_TRACKED_PENDING = 200_000


class OrderQueue(Protocol):
    """Where messages come from (SQS in production)."""

    visibility_timeout: int

    async def receive(self, wait_seconds: int | None = None) -> list[Message]: ...
    async def is_drained(self) -> bool: ...
    async def delete(self, messages: Sequence[Message]) -> int: ...
    async def change_visibility(self, messages: Sequence[Message], seconds: int) -> None: ...


class OrderStore(Protocol):
    """Where order records and windows are kept durably (DynamoDB in production)."""

    @property
    def cached_windows(self) -> int: ...
    async def apply_all(
        self, records: Sequence[OrderRecord], now: int
    ) -> dict[str, OrderRecord]: ...
    async def merge_all(
        self, entries: Mapping[WindowKey, Sequence[WindowEntry]]
    ) -> list[WindowChange]: ...


class AveragePublisher(Protocol):
    """Where averages go (EventBridge in production)."""

    async def publish(self, details: Sequence[DrinkAverageTime]) -> None: ...


@dataclass
class BatchOutcome:
    """What one batch did, for tests and logs."""

    processed: int = 0
    ignored: int = 0
    poison: int = 0
    published: int = 0
    changed_keys: list[WindowKey] = field(default_factory=list)


class Worker:
    """Consumes the queue in flushes: one or several receives processed together."""

    def __init__(
        self,
        queue: OrderQueue,
        store: OrderStore,
        publisher: AveragePublisher,
        settings: Settings,
        metrics: Metrics,
        health: Health,
        *,
        max_receive_count: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.store = store
        self.publisher = publisher
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.max_receive_count = max_receive_count
        self.clock = clock
        self._stopping = False
        self._receive_scope: anyio.CancelScope | None = None
        self._held = 0  # messages of the flush being processed
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._scope: anyio.CancelScope | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def run(
        self, *, burst: bool = False, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until ``stop()`` (or, with ``burst``, until the queue is drained)."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            task_status.started()
            while not self._stopping:
                receives = await self._receive_flush(burst)
                if receives:
                    await self._process_held(receives)
                elif burst and await self.queue.is_drained():
                    break
        log.info("worker_stopped")

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

    async def _receive_flush(self, burst: bool) -> list[list[Message]]:
        """Long-poll until messages arrive; while receives come back full (a backlog), take
        more at once, up to ``max_receives_per_flush``. Empty when stopped or idle."""
        receives: list[list[Message]] = []
        with anyio.CancelScope() as scope:
            self._receive_scope = scope
            try:
                first = await self.queue.receive(1 if burst else None)
                if first:
                    receives.append(first)
                while (
                    receives
                    and len(receives[-1]) == SQS_BATCH_LIMIT
                    and len(receives) < self.settings.max_receives_per_flush
                ):
                    more = await self.queue.receive(0)  # a short poll: only what is waiting
                    if not more:
                        break
                    receives.append(more)
            except ConfigurationError as exc:
                self.health.set_ready(False, str(exc))
                log.error("receive_failed", error=str(exc))  # noqa: TRY400 - one line, no traceback
                await anyio.sleep(5)
            finally:
                self._receive_scope = None
        return receives

    async def _process_held(self, receives: list[list[Message]]) -> None:
        """Process a flush, keeping its messages invisible until it is done.

        If an unexpected error (a bug, not a dependency) fails a flush of several receives,
        each receive is processed on its own, so one bad receive cannot hold back the others.
        """
        messages = [message for received in receives for message in received]
        self._held = len(messages)
        self.metrics.flush_messages.observe(len(messages))
        try:
            async with anyio.create_task_group() as flush:
                flush.start_soon(self._heartbeat, messages)
                if not await self._process_with_retries(messages) and len(receives) > 1:
                    for received in receives:
                        await self._process_with_retries(received)
                flush.cancel_scope.cancel()
        finally:
            self._held = 0

    async def _process_with_retries(self, messages: list[Message]) -> bool:
        """Process messages, retrying dependency failures; False after an unexpected error."""
        backoff = Backoff(base=0.5, cap=10.0)
        attempt = 0
        while True:
            try:
                await self.process_batch(messages)
            except (DependencyError, ConfigurationError) as exc:
                failure: BaseException = exc
            except Exception as exc:
                if not is_retriable(exc):
                    # A bug or an unexpected answer: leave the messages to the visibility
                    # timeout, so the redrive policy ends a message that keeps failing in
                    # the DLQ instead of blocking the queue.
                    log.exception("batch_failed", messages=len(messages))
                    return False
                failure = exc
            else:
                return True
            self.health.set_ready(False, f"batch failing: {type(failure).__name__}")
            if self._stopping:
                log.warning("batch_abandoned_at_shutdown", messages=len(messages))
                return True
            delay = backoff.delay(attempt)
            attempt += 1
            log.warning("batch_retry", error=str(failure)[:300], attempt=attempt, delay_s=delay)
            await anyio.sleep(delay)

    async def _heartbeat(self, messages: list[Message]) -> None:
        timeout = self.queue.visibility_timeout
        while True:
            await anyio.sleep(max(1.0, timeout / 3))
            try:
                await self.queue.change_visibility(messages, timeout)
                self.metrics.visibility_extensions.inc()
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat only risks a harmless redelivery
                log.warning("heartbeat_failed", error=type(exc).__name__)

    # -- one batch -----------------------------------------------------------------

    async def process_batch(self, messages: Sequence[Message]) -> BatchOutcome:
        """Make one batch's effects durable, publish, then delete it. Idempotent."""
        started = time.perf_counter()
        result = BatchOutcome()
        self.metrics.messages_received.inc(len(messages))
        now = int(self.clock())
        not_after = now + self.settings.max_clock_skew_seconds

        unique: dict[str, Message] = {}
        to_delete: list[Message] = []
        orders: list[tuple[Message, OrderEvent]] = []
        poison: list[tuple[Message, PoisonMessageError]] = []
        for message in messages:
            if message.message_id in unique:  # the same message twice in one flush
                to_delete.append(message)
                continue
            unique[message.message_id] = message
            if message.receive_count > 1:
                self.metrics.messages_redelivered.inc()
            try:
                event = parse_body(message.body, source=self.settings.source, not_after=not_after)
            except PoisonMessageError as exc:
                poison.append((message, exc))
                continue
            if event is None:
                result.ignored += 1
                to_delete.append(message)
            else:
                orders.append((message, event))

        records = await self._apply_all([event for _, event in orders], now)

        # One outcome per order, however many of its events (and redeliveries) the flush holds.
        by_order: dict[str, list[tuple[Message, OrderEvent]]] = defaultdict(list)
        for message, event in orders:
            by_order[event.order_id].append((message, event))
            to_delete.append(message)
        entries: dict[WindowKey, list[WindowEntry]] = defaultdict(list)
        redelivered: dict[WindowKey, set[str]] = defaultdict(set)
        for order_id, its_events in by_order.items():
            record = records[order_id]
            self._track_pending(record)
            found = outcome(record, self.settings.max_wait_seconds)
            if isinstance(found, Paired):
                entries[found.key].append(found.entry)
                if any(message.receive_count > 1 for message, _ in its_events):
                    redelivered[found.key].add(order_id)
            elif isinstance(found, Anomalous) and any(
                event.role is not Role.CANCELLED for _, event in its_events
            ):
                self.metrics.anomalies.labels(found.anomaly.value).inc()
                log.warning(
                    "wait_anomaly",
                    order_id=found.order_id,
                    tenant=found.key[0],
                    drink=found.key[1],
                    wait_s=found.wait,
                    kind=found.anomaly.value,
                )
        result.processed = len(orders)

        changes = await self.store.merge_all(entries) if entries else []
        to_publish = [
            change
            for change in changes
            if change.changed
            or any(change.state.window.contains(o) for o in redelivered.get(change.key, ()))
        ]
        if to_publish:
            await self.publisher.publish(
                [average_event(c.key, c.state, self.settings.window_size) for c in to_publish]
            )
        for change in to_publish:
            self.metrics.observe_average(
                change.key, change.state.window.duration, change.state.window.samples
            )
        result.published = len(to_publish)
        result.changed_keys = [c.key for c in changes if c.changed]

        deleted = await self.queue.delete(to_delete) if to_delete else 0
        self.metrics.messages_deleted.inc(deleted)
        self.metrics.messages_processed.inc(result.processed)
        self.metrics.messages_ignored.inc(result.ignored)
        self.metrics.windows_tracked.set(self.store.cached_windows)
        self.metrics.pending_orders.set(len(self._pending))
        if poison:
            result.poison = len(poison)
            await self._release_poison(poison)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.health.set_ready(True)
        return result

    async def _apply_all(self, events: list[OrderEvent], now: int) -> dict[str, OrderRecord]:
        """Join a flush's events per order in memory, then each order once into DynamoDB."""
        local: dict[str, OrderRecord] = {}
        for event in events:
            current = local.get(event.order_id) or OrderRecord(event.order_id)
            local[event.order_id] = current.merge(event)
        return await self.store.apply_all(list(local.values()), now)

    async def _release_poison(self, poison: list[tuple[Message, PoisonMessageError]]) -> None:
        for message, error in poison:
            final = (
                self.max_receive_count is None or message.receive_count >= self.max_receive_count
            )
            if final:
                # Logged and counted once: on the receive after which the redrive policy
                # moves the message to the dead-letter queue.
                self.metrics.messages_failed.labels(error.reason).inc()
                log.error(
                    "poison_message",
                    message_id=message.message_id,
                    reason=error.reason,
                    detail=error.detail,
                    receive_count=message.receive_count,
                    dead_letter=self.max_receive_count is not None,
                )
        # Visible again at once, so it reaches maxReceiveCount (and the DLQ) quickly.
        await self.queue.change_visibility([m for m, _ in poison], 0)

    def _track_pending(self, record: OrderRecord) -> None:
        half_open = (record.submitted_at is None) != (record.completed_at is None)
        if half_open and not record.cancelled:
            self._pending[record.order_id] = None
            self._pending.move_to_end(record.order_id)
            while len(self._pending) > MAX_TRACKED_PENDING:
                self._pending.popitem(last=False)
        else:
            self._pending.pop(record.order_id, None)
