"""Wiring: the real AWS adapters, the metrics server and signal handling around the Worker."""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
import structlog
from anyio.abc import TaskStatus

from service.aws.clients import AwsClients, open_clients
from service.aws.publisher import EventBridgePublisher
from service.aws.queue import SqsQueue, resolve_queue
from service.aws.retry import Backoff, call_with_retry, is_retriable
from service.aws.store import DynamoStore
from service.errors import ConfigurationError
from service.metrics import Health, Metrics, serve_http
from service.settings import Settings
from service.worker import Worker

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_MISSING_RESOURCE = 3


def build_worker(
    settings: Settings,
    clients: AwsClients,
    queue_url: str,
    max_receive_count: int | None,
    metrics: Metrics,
    health: Health,
) -> Worker:
    """Assemble a Worker from real adapters sharing one set of metrics and readiness."""
    failures = 0

    def on_retry(operation: str, exc: BaseException) -> None:
        nonlocal failures
        failures += 1
        metrics.retry_observer()(operation, exc)
        if failures >= 3:
            health.set_ready(False, f"{operation} failing")

    def on_success() -> None:
        nonlocal failures
        failures = 0
        if not health.ready:
            health.set_ready(True)

    queue = SqsQueue(
        clients.sqs,
        queue_url,
        visibility_timeout=settings.visibility_timeout_seconds,
        wait_seconds=settings.receive_wait_seconds,
        on_retry=on_retry,
        on_success=on_success,
    )
    store = DynamoStore(
        clients.dynamodb,
        settings.table_name,
        window_size=settings.window_size,
        ttl_seconds=settings.pending_ttl_seconds,
        max_cached_windows=settings.max_windows_in_memory,
        on_retry=on_retry,
        on_success=on_success,
        on_conflict=metrics.window_conflicts.inc,
        on_items=lambda operation, count: metrics.dynamodb_items.labels(operation).inc(count),
    )
    publisher = EventBridgePublisher(
        clients.events,
        settings.event_bus,
        settings.source,
        on_retry=on_retry,
        on_success=on_success,
        on_published=metrics.events_published.inc,
        on_refused=metrics.publish_failures.inc,
    )
    return Worker(
        queue, store, publisher, settings, metrics, health, max_receive_count=max_receive_count
    )


async def wait_for_resources(
    settings: Settings, clients: AwsClients, health: Health
) -> tuple[str, int | None]:
    """Find the queue and check the table, waiting while the endpoint is unreachable.

    A resource that does not exist raises ConfigurationError (the operator must run
    ``provision``); an endpoint that does not answer is waited for, readiness false.
    """
    backoff = Backoff(base=0.5, cap=10.0)
    attempt = 0
    while True:
        try:
            # One attempt per round: this loop does the backing off, so readiness and the
            # log say at once that the endpoint is not answering.
            url, max_receive = await resolve_queue(clients.sqs, settings.queue_name, max_attempts=1)
            await call_with_retry(
                "dynamodb.describe_table",
                lambda: clients.dynamodb.describe_table(TableName=settings.table_name),
                max_attempts=1,
            )
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"queue {settings.queue_name!r} or table {settings.table_name!r} is missing in "
                f"{settings.region} at {settings.endpoint_url or 'AWS'} ({exc}); "
                "run `wait-times provision` with the same environment"
            ) from None
        except Exception as exc:
            if not is_retriable(exc):
                raise
            health.set_ready(False, "AWS endpoint unreachable")
            delay = backoff.delay(attempt)
            attempt += 1
            log.warning(
                "aws_unreachable",
                endpoint=settings.endpoint_url or "AWS",
                error=type(exc).__name__,
                retry_in_s=round(delay, 2),
            )
            await anyio.sleep(delay)
        else:
            if max_receive is None:
                log.warning("queue_has_no_dead_letter_queue", queue=settings.queue_name)
            return url, max_receive


async def watch_signals(on_signal: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT drains; Python is PID 1 in the container, so install it explicitly."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal_received", signal=signal.Signals(signum).name)
            on_signal()


async def run_worker(
    settings: Settings,
    *,
    burst: bool = False,
    install_signals: bool = True,
    metrics: Metrics | None = None,
    health: Health | None = None,
    task_status: TaskStatus[Worker] = anyio.TASK_STATUS_IGNORED,
) -> int:
    """Run the worker with its metrics server until stopped; returns the exit code."""
    metrics = metrics or (health.metrics if health else Metrics(settings.max_metric_series))
    health = health or Health(metrics)
    async with AsyncExitStack() as stack:
        clients = await open_clients(
            settings, stack, on_call=lambda service, op: metrics.aws_calls.labels(service, op).inc()
        )
        async with anyio.create_task_group() as group:
            health.port = await group.start(
                serve_http, metrics, health, settings.metrics_host, settings.metrics_port
            )
            stop_requested = anyio.Event()
            if install_signals:
                group.start_soon(watch_signals, stop_requested.set)
            with anyio.CancelScope() as startup:
                group.start_soon(_cancel_on, stop_requested, startup)
                queue_url, max_receive = await wait_for_resources(settings, clients, health)
            if startup.cancelled_caught:
                group.cancel_scope.cancel()
                return EXIT_OK
            worker = build_worker(settings, clients, queue_url, max_receive, metrics, health)
            health.set_ready(True)
            group.start_soon(_stop_on, stop_requested, worker)
            log.info(
                "worker_started",
                queue=settings.queue_name,
                table=settings.table_name,
                bus=settings.event_bus,
                max_receives_per_flush=settings.max_receives_per_flush,
            )
            task_status.started(worker)
            await worker.run(burst=burst)
            group.cancel_scope.cancel()
    return EXIT_OK


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _stop_on(event: anyio.Event, worker: Worker) -> None:
    await event.wait()
    worker.stop()
