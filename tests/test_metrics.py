"""/metrics, /healthz and /readyz of a running worker, and bounded label cardinality."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import anyio
import pytest

from service.app import run_worker
from service.metrics import Health, Metrics
from service.worker import Worker
from tests.helpers import Aws, generated, make_settings, put_planned, wait_until


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.integration
async def test_endpoints_of_a_running_worker(aws: Aws) -> None:
    await put_planned(aws, generated(orders=40, seed=2))
    metrics = Metrics()
    health = Health(metrics)
    async with anyio.create_task_group() as group:
        worker: Worker = await group.start(
            lambda task_status: run_worker(
                aws.settings, install_signals=False, health=health, task_status=task_status
            )
        )
        port = health.port
        assert port
        await wait_until(
            lambda: bool(next(iter(metrics.average_wait.collect())).samples),
            60,
            "an average",
        )
        status, body = await anyio.to_thread.run_sync(fetch, port, "/metrics")
        assert status == 200
        for name in (
            "wait_times_messages_received_total",
            "wait_times_messages_processed_total",
            "wait_times_messages_ignored_total",
            "wait_times_messages_failed_total",
            "wait_times_batch_seconds_bucket",
            "wait_times_flush_messages_bucket",
            'wait_times_dynamodb_items_total{operation="',
            "wait_times_events_published_total",
            "wait_times_publish_failures_total",
            "wait_times_pending_orders",
            "wait_times_windows_tracked",
            "wait_times_average_wait_seconds{",
            "wait_times_ready 1.0",
        ):
            assert name in body, name
        assert await anyio.to_thread.run_sync(fetch, port, "/healthz") == (200, "ok\n")
        assert (await anyio.to_thread.run_sync(fetch, port, "/readyz"))[0] == 200
        assert (await anyio.to_thread.run_sync(fetch, port, "/nope"))[0] == 404
        worker.stop()


@pytest.mark.integration
async def test_not_ready_while_the_endpoint_is_unreachable(aws: Aws) -> None:
    settings = make_settings(aws.cloud).through(f"http://127.0.0.1:{closed_port()}")
    health = Health(Metrics())
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: run_worker(settings, install_signals=False, health=health))
        await wait_until(
            lambda: health.port is not None and health.reason == "AWS endpoint unreachable",
            30,
            "readiness to report the unreachable endpoint",
        )
        assert health.port is not None
        status, body = await anyio.to_thread.run_sync(fetch, health.port, "/readyz")
        assert (status, body) == (503, "not ready: AWS endpoint unreachable\n")
        assert (await anyio.to_thread.run_sync(fetch, health.port, "/healthz"))[0] == 200
        group.cancel_scope.cancel()


@pytest.mark.unit
def test_average_series_are_capped() -> None:
    metrics = Metrics(max_average_series=3)
    for index in range(50):
        metrics.observe_average((f"tenant-{index}", "Latte"), 60.0, 1)
    metrics.observe_average(("tenant-0", "Latte"), 30.0, 2)  # known series still update
    samples = next(iter(metrics.average_wait.collect())).samples
    assert len(samples) == 3
    assert {s.labels["tenant"]: s.value for s in samples}["tenant-0"] == 30.0
    assert metrics.series_dropped._value.get() == 47
