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
from service.aws.queue import SqsQueue, resolve_queue
from service.aws.store import DynamoStore
from service.errors import ConfigurationError
from service.metrics import Health, Metrics, PrometheusObserver, serve_http
from service.ports import Observer
from service.settings import Settings
from service.worker import Worker, until_done

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_MISSING_RESOURCE = 3


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
        observer=observer,
        max_cached_windows=settings.max_windows_in_memory,
    )
    publisher = EventBridgePublisher(
        clients.events, settings.event_bus, settings.source, observer=observer
    )
    return Worker(queue, store, publisher, settings, observer, max_receive_count=max_receive_count)


async def wait_for_resources(
    settings: Settings, clients: AwsClients, observer: Observer
) -> tuple[str, int | None]:
    """Find the queue and check the table, waiting while the endpoint is unreachable.

    A resource that does not exist raises ConfigurationError (the operator must run
    ``provision``); an endpoint that does not answer is waited for, readiness false.
    """

    async def look_up() -> tuple[str, int | None]:
        found = await resolve_queue(clients.sqs, settings.queue_name)
        await call(
            "dynamodb.DescribeTable",
            partial(clients.dynamodb.describe_table, TableName=settings.table_name),
        )
        return found

    try:
        url, max_receive = await until_done("startup", look_up, observer)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"queue {settings.queue_name!r} or table {settings.table_name!r} is missing in "
            f"{settings.region} (SQS at {clients.sqs.meta.endpoint_url}, DynamoDB at "
            f"{clients.dynamodb.meta.endpoint_url}) ({exc}); "
            "run `wait-times provision` with the same environment"
        ) from None
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
    observer = PrometheusObserver(metrics, health)
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack, on_call=observer.aws_call)
        async with anyio.create_task_group() as group:
            health.port = await group.start(
                serve_http, metrics, health, settings.metrics_host, settings.metrics_port
            )
            stop_requested = anyio.Event()
            if install_signals:
                group.start_soon(watch_signals, stop_requested.set)
            with anyio.CancelScope() as startup:
                group.start_soon(_cancel_on, stop_requested, startup)
                queue_url, max_receive = await wait_for_resources(settings, clients, observer)
            if startup.cancelled_caught:
                group.cancel_scope.cancel()
                return EXIT_OK
            worker = build_worker(settings, clients, queue_url, max_receive, observer)
            observer.dependencies_ok()
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
