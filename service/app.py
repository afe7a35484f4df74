"""Wiring: the real AWS adapters, the observer, the metrics server and signals around the Worker."""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial

import anyio
import structlog
from anyio.abc import TaskStatus

from service.aws.clients import AwsClients, open_clients
from service.aws.errors import call
from service.aws.publisher import EventBridgePublisher
from service.aws.queue import ResolvedQueue, SqsDepth, SqsQueue, resolve_queue
from service.aws.store import DynamoStore
from service.core.estimators.registry import estimate_options
from service.endpoints import serve_endpoints
from service.errors import EXIT_OK, MissingResourceError
from service.flush import Flush
from service.metrics import Metrics, PrometheusObserver
from service.ports import Observer, QueueDepthSource
from service.readiness import Health
from service.retry import until_done
from service.settings import Settings, worker_options
from service.worker import Worker, watch_queue_depths

log = structlog.get_logger(__name__)


def build_worker(
    settings: Settings,
    clients: AwsClients,
    queue_url: str,
    max_receive_count: int | None,
    observer: Observer,
) -> Worker:
    """Assemble a Worker from the real adapters, all reporting to one observer."""
    queue = SqsQueue(
        clients.sqs,
        queue_url,
        visibility_timeout=settings.visibility_timeout_seconds,
        wait_seconds=settings.receive_wait_seconds,
    )
    store = DynamoStore(
        clients.dynamodb,
        settings.table_name,
        window_size=settings.window_size,
        ttl_seconds=settings.pending_ttl_seconds,
        estimates=estimate_options(settings.max_wait_seconds, settings.estimator),
        observer=observer,
        max_cached_windows=settings.max_windows_in_memory,
        max_cached_tenants=settings.max_tenants_in_memory,
    )
    publisher = EventBridgePublisher(
        clients.events, settings.event_bus, settings.source, observer=observer
    )
    options = worker_options(settings, redrive_limit=max_receive_count)
    return Worker(queue, Flush(queue, store, publisher, observer, options), options, observer)


async def wait_for_resources(
    settings: Settings, clients: AwsClients, observer: Observer
) -> ResolvedQueue:
    """Find the queue (and its DLQ) and check the table, waiting while the endpoint is
    unreachable.

    A resource that does not exist raises MissingResourceError (the operator must run
    ``provision``); missing, refused or insufficient credentials raise their own
    ConfigurationError unchanged (``provision`` cannot fix those); an endpoint that does
    not answer is waited for, readiness false.
    """

    async def look_up() -> ResolvedQueue:
        found = await resolve_queue(clients.sqs, settings.queue_name)
        await call(
            "dynamodb.DescribeTable",
            partial(clients.dynamodb.describe_table, TableName=settings.table_name),
        )
        return found

    try:
        found = await until_done("startup", look_up, observer)
    except MissingResourceError as exc:
        raise MissingResourceError(
            f"queue {settings.queue_name!r} or table {settings.table_name!r} is missing in "
            f"{settings.region} (SQS at {clients.sqs.meta.endpoint_url}, DynamoDB at "
            f"{clients.dynamodb.meta.endpoint_url}) ({exc}); "
            "run `wait-times provision` with the same environment"
        ) from None
    if found.max_receive_count is None:
        log.warning("queue_has_no_dead_letter_queue", queue=settings.queue_name)
    return found


def watched_queues(clients: AwsClients, found: ResolvedQueue) -> dict[str, QueueDepthSource]:
    """The queues whose depth the worker exports, by their ``queue`` label."""
    queues: dict[str, QueueDepthSource] = {"main": SqsDepth(clients.sqs, found.url)}
    if found.dead_letter_url is not None:
        queues["dlq"] = SqsDepth(clients.sqs, found.dead_letter_url)
    return queues


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
    health: Health[Metrics] | None = None,
    task_status: TaskStatus[Worker] = anyio.TASK_STATUS_IGNORED,
) -> int:
    """Run the worker with its metrics server until stopped; returns the exit code."""
    metrics = metrics or (health.metrics if health else Metrics(settings.max_metric_series))
    health = health or Health(metrics)
    observer = PrometheusObserver(metrics, health)
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack, on_call=observer.aws_call)
        async with anyio.create_task_group() as group:
            health.port = await group.start(
                serve_endpoints,
                metrics.registry,
                health,
                settings.metrics_host,
                settings.metrics_port,
            )
            stop_requested = anyio.Event()
            if install_signals:
                group.start_soon(watch_signals, stop_requested.set)
            with anyio.CancelScope() as startup:
                group.start_soon(_cancel_on, stop_requested, startup)
                found = await wait_for_resources(settings, clients, observer)
            if startup.cancelled_caught:
                group.cancel_scope.cancel()
                return EXIT_OK
            worker = build_worker(settings, clients, found.url, found.max_receive_count, observer)
            observer.dependencies_ok()
            # Beside the loop, not in it: a long poll, a flush or an outage's retries never
            # delay a read, and a failed read never reaches a flush (docs/decisions.md).
            group.start_soon(watch_queue_depths, watched_queues(clients, found), observer)
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
