"""The worker loop: receive, process as one flush, repeat; drain on stop.

One loop: long-poll a receive; while receives come back full (a backlog), take more
(short polls, up to ``max_receives_per_flush``); process all of it as one flush
(``service.flush``), whose DynamoDB and EventBridge calls are shared by every message in
it. Light traffic makes a flush of one message, processed as soon as it arrives; a
backlog makes flushes of up to 100 messages, so calls per order fall as load rises
(docs/decisions.md). In between, when a flush of several messages emptied the queue,
the next receive first waits ``batch_window_seconds``, so steady traffic makes flushes of
about its rate times the window instead of whatever arrived during the last flush. While a flush runs, a heartbeat keeps its messages invisible; a flush
of several receives that fails for an unexpected reason is tried again receive by
receive, so one bad receive cannot hold back the others.

The worker is written against the ports (``service.ports``) and imports no adapter; it
reads only its ``WorkerOptions``. It runs every step through the service's one unbounded
retry loop (``service.retry.until_done``, which the board shares): a step that fails with
a retriable error is tried again, alone, with capped exponential backoff and full jitter,
readiness false meanwhile; a non-retriable one ends the flush (its messages return after
the visibility timeout, and the redrive policy ends one that keeps failing in the DLQ); a
ConfigurationError stops the worker.

Beside the loop, ``watch_queue_depths`` reads the depth of the queue and of its
dead-letter queue every 30 s for the observer; it never touches a flush or readiness.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import anyio
import structlog
from anyio.abc import TaskStatus

from service.errors import ConfigurationError, first_error
from service.ports import (
    SQS_BATCH_LIMIT,
    FlushOutcome,
    FlushRunner,
    Message,
    Observer,
    OrderQueue,
    QueueDepthSource,
)
from service.retry import FlushAbandoned, until_done
from service.settings import WorkerOptions

log = structlog.get_logger(__name__)

T = TypeVar("T")
DEPTH_POLL_SECONDS = 30.0  # at most one GetQueueAttributes per watched queue this often


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


def _traffic(receives: list[list[Message]], emptied: bool) -> bool:
    """Whether a flush's receives call for the batch window before the next one: it held
    several messages (they arrived faster than the worker turned around) and it emptied
    the queue (a receive came back less than full, or a short poll found nothing). A
    flush that stops on a full receive (``max_receives_per_flush``) leaves a backlog,
    which needs no waiting for."""
    held = sum(len(received) for received in receives)
    return held > 1 and (emptied or len(receives[-1]) < SQS_BATCH_LIMIT)


class Worker:
    """Consumes the queue in flushes: one or several receives processed together."""

    def __init__(
        self,
        queue: OrderQueue,
        flush: FlushRunner,
        options: WorkerOptions,
        observer: Observer,
    ) -> None:
        self.queue = queue
        self.flush = flush
        self.options = options
        self.observer = observer
        self._stopping = False
        self._receive_scope: anyio.CancelScope | None = None
        self._batching = False  # the next receive waits the batch window first
        self._held = 0  # messages of the flush being processed
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
        log.info("worker_stopping", messages_held=self._held, drain_s=self.options.drain_seconds)
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        if self._scope is not None:
            # Past the drain budget whatever is left is cancelled; its messages were not
            # deleted, so they come back after the visibility timeout.
            self._scope.deadline = min(
                self._scope.deadline, anyio.current_time() + self.options.drain_seconds
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
        emptied = False  # a short poll found nothing
        with anyio.CancelScope() as scope:
            self._receive_scope = scope
            try:
                if self._batching and not burst:
                    await anyio.sleep(self.options.batch_window_seconds)
                first = await self._until_done(
                    "receive", lambda: self.queue.receive(1 if burst else None)
                )
                if first:
                    receives.append(first)
                while (
                    receives
                    and len(receives[-1]) == SQS_BATCH_LIMIT
                    and len(receives) < self.options.max_receives_per_flush
                ):
                    # A short poll: only what is waiting.
                    more = await self._until_done("receive", lambda: self.queue.receive(0))
                    if not more:
                        emptied = True
                        break
                    receives.append(more)
            except FlushAbandoned:
                pass  # stopping while the queue does not answer: nothing was received
            finally:
                self._receive_scope = None
        self._batching = self.options.batch_window_seconds > 0 and _traffic(receives, emptied)
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
            await self.process_flush(messages)
        except FlushAbandoned as stopped:
            log.warning("flush_abandoned_at_shutdown", messages=len(messages), step=str(stopped))
        except ConfigurationError:
            raise
        except Exception:
            # A bug or an answer retrying cannot change: leave the messages to the
            # visibility timeout, so the redrive policy ends a message that keeps failing
            # in the DLQ instead of blocking the queue.
            log.exception("flush_failed", messages=len(messages))
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

    async def process_flush(self, messages: Sequence[Message]) -> FlushOutcome:
        """Process messages as one flush (the runner, ``service.flush.Flush``), lending it
        the retry loop. Idempotent."""
        return await self.flush.run(messages, self._until_done)
