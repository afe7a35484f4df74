"""/metrics, /healthz and /readyz of a running worker, content negotiation on /metrics,
the queue depths it exports, the estimate's series (views, scores, drops), and bounded
label cardinality."""

from __future__ import annotations

import gzip
import math
import socket
import urllib.error
import urllib.request
from email.message import Message as Headers
from typing import Any

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from botocore.exceptions import ClientError
from multidict import CIMultiDict
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from service.app import run_worker
from service.aws.errors import translate
from service.core.estimate import DrinkEstimate, Estimate
from service.endpoints import endpoints_app
from service.errors import DependencyError
from service.metrics import OTHER_TENANT, Metrics, PrometheusObserver
from service.ports import QueueDepth
from service.readiness import Health
from service.worker import Worker
from tests.helpers import Aws, generated, make_settings, put_planned, wait_until

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# What Prometheus 2.x/3.x sends by default: OpenMetrics preferred, the text format accepted.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
)


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def fetch_raw(port: int, path: str, headers: dict[str, str]) -> tuple[int, Headers, bytes]:
    """A GET with request headers; the status, the response headers and the raw body."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        return response.status, response.headers, response.read()


async def answer(
    health: Health[Metrics], method: str, path: str, *header_lines: str
) -> web.Response:
    """What the endpoints answer one request with these header lines, routed as the server
    routes it (no socket: the unit tier opens none)."""
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, value = line.split(": ", 1)
        headers.add(name, value)
    app = endpoints_app(health.metrics.registry, health)
    app.freeze()
    request = make_mocked_request(method, path, headers=headers, app=app)
    response = await app._handle(request)  # routing and middleware, as the server runs them
    assert isinstance(response, web.Response)
    await response.prepare(request)  # its head as sent: Content-Length, Connection
    assert response.headers["Connection"] == "close"
    return response


async def ask(metrics: Metrics, *header_lines: str) -> tuple[int, dict[str, str], bytes]:
    """What the metrics server answers a GET /metrics with these header lines."""
    response = await answer(Health(metrics), "GET", "/metrics", "Host: worker", *header_lines)
    body = response.body
    assert isinstance(body, bytes)
    headers = {name.lower(): value for name, value in response.headers.items()}
    assert int(headers["content-length"]) == len(body)
    return response.status, headers, body


def some_metrics() -> Metrics:
    """A registry with a value in each kind of series (counter, histogram, gauges)."""
    metrics = Metrics()
    observer = PrometheusObserver(metrics, Health(metrics))
    observer.flush_started(3, 1)
    observer.average_published(("NYC", "Latte"), 61.5, 3)
    observer.queue_depth("main", QueueDepth(visible=7, in_flight=2))
    return metrics


def observer_on(metrics: Metrics) -> PrometheusObserver:
    return PrometheusObserver(metrics, Health(metrics))


def view(tenant: str, open_orders: int, **drinks: tuple[float, float]) -> Estimate:
    """A tenant's view at 12:00:05 UTC, 2026-12-01, with (estimate, p90) per drink."""
    return Estimate(
        tenant,
        1_796_126_405,
        open_orders,
        {drink: DrinkEstimate(*values) for drink, values in drinks.items()},
    )


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
            "wait_times_flush_seconds_bucket",
            "wait_times_flush_messages_bucket",
            'wait_times_dynamodb_items_total{operation="',
            "wait_times_events_published_total",
            "wait_times_publish_failures_total",
            "wait_times_windows_tracked",
            "wait_times_tenants_tracked",
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


@pytest.mark.unit
@pytest.mark.parametrize("accept", [OPENMETRICS, PROMETHEUS_ACCEPT, f"text/html, {OPENMETRICS}"])
async def test_metrics_answers_openmetrics_when_asked(accept: str) -> None:
    metrics = some_metrics()
    status, headers, body = await ask(metrics, f"Accept: {accept}")
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0;")
    assert "content-encoding" not in headers
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert 'wait_times_queue_messages{queue="main",state="visible"} 7.0\n' in text
    assert "wait_times_messages_received_total 3.0\n" in text


@pytest.mark.unit
@pytest.mark.parametrize("header", [None, "Accept: */*", "Accept: text/plain"])
async def test_metrics_answers_the_classic_text_format_otherwise(header: str | None) -> None:
    metrics = some_metrics()
    status, headers, body = await ask(metrics, *([header] if header else []))
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# EOF" not in body.decode()
    assert body == generate_latest(metrics.registry)


@pytest.mark.unit
@pytest.mark.parametrize("accept", [None, OPENMETRICS])
@pytest.mark.parametrize("encoding", ["gzip", "deflate, GZIP;q=0.8", "br, gzip"])
async def test_metrics_is_gzipped_when_accepted(accept: str | None, encoding: str) -> None:
    metrics = some_metrics()
    accept_line = [f"Accept: {accept}"] if accept else []
    _, plain_headers, plain = await ask(metrics, *accept_line)
    # Header names in any case, as HTTP allows.
    status, headers, body = await ask(metrics, *accept_line, f"accept-ENCODING: {encoding}")
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == plain_headers["content-type"]
    assert gzip.decompress(body) == plain


@pytest.mark.unit
@pytest.mark.parametrize("encoding", ["identity", "deflate", "br", ""])
async def test_metrics_is_not_gzipped_unless_accepted(encoding: str) -> None:
    _, headers, body = await ask(some_metrics(), f"Accept-Encoding: {encoding}")
    assert "content-encoding" not in headers
    assert body.startswith(b"# HELP ")


@pytest.mark.unit
async def test_health_readiness_unknown_paths_and_other_methods() -> None:
    health = Health(some_metrics())
    said = {}
    for method, path in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/nope"),
        ("GET", "/metrics/extra"),
        ("POST", "/metrics"),
        ("DELETE", "/nope"),
    ]:
        response = await answer(health, method, path)
        said[method, path] = (response.status, response.text)
    assert said == {
        ("GET", "/healthz"): (200, "ok\n"),
        ("GET", "/readyz"): (503, "not ready: starting\n"),
        ("GET", "/nope"): (404, "not found\n"),
        ("GET", "/metrics/extra"): (404, "not found\n"),
        ("POST", "/metrics"): (405, "method not allowed\n"),
        ("DELETE", "/nope"): (405, "method not allowed\n"),
    }
    health.set_ready(True)
    ready = await answer(health, "GET", "/readyz")
    assert (ready.status, ready.text) == (200, "ready\n")
    assert health.metrics.value("wait_times_ready") == 1.0
    head = await answer(health, "HEAD", "/metrics", "Accept-Encoding: gzip")
    assert head.status == 200
    assert head.headers["Content-Encoding"] == "gzip"


@pytest.mark.integration
async def test_queue_and_dlq_depths_and_negotiation_on_a_running_worker(aws: Aws) -> None:
    sqs = aws.clients.sqs
    queue_url, dlq_url = aws.resources.queue_url, aws.resources.dlq_url
    # Four messages held by another consumer (in flight, out of the worker's reach), three
    # in the DLQ (nothing consumes it): both depths are known before the worker starts.
    await sqs.send_message_batch(
        QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": "{}"} for i in range(4)]
    )
    held = await sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600
    )
    assert len(held.get("Messages", [])) == 4
    await sqs.send_message_batch(
        QueueUrl=dlq_url, Entries=[{"Id": str(i), "MessageBody": "{}"} for i in range(3)]
    )
    metrics = Metrics()
    health = Health(metrics)
    async with anyio.create_task_group() as group:
        worker: Worker = await group.start(
            lambda task_status: run_worker(
                aws.settings, install_signals=False, health=health, task_status=task_status
            )
        )
        await wait_until(
            lambda: (
                metrics.value("wait_times_queue_read_timestamp_seconds", queue="dlq") > 0
                and metrics.value("wait_times_queue_read_timestamp_seconds", queue="main") > 0
            ),
            30,
            "both depths read",
        )
        port = health.port
        assert port
        _, _, plain = await anyio.to_thread.run_sync(fetch_raw, port, "/metrics", {})
        for line in (
            'wait_times_queue_messages{queue="main",state="visible"} 0.0',
            'wait_times_queue_messages{queue="main",state="in_flight"} 4.0',
            'wait_times_queue_messages{queue="dlq",state="visible"} 3.0',
            'wait_times_queue_messages{queue="dlq",state="in_flight"} 0.0',
        ):
            assert line in plain.decode().splitlines(), line

        status, headers, body = await anyio.to_thread.run_sync(
            fetch_raw, port, "/metrics", {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}
        )
        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        assert headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(body).decode()
        assert text.endswith("# EOF\n")
        assert 'wait_times_queue_messages{queue="dlq",state="visible"} 3.0' in text
        # One read per queue at start, the next 30 s later; none of it touched readiness.
        reads = metrics.value(
            "wait_times_aws_calls_total", service="sqs", operation="GetQueueAttributes"
        )
        assert reads == 3  # the redrive policy at start, then each queue's depth once
        assert metrics.value("wait_times_ready") == 1
        worker.stop()


@pytest.mark.integration
async def test_a_dlq_that_cannot_be_looked_up_is_not_watched_and_the_worker_runs(
    aws: Aws,
) -> None:
    # The redrive policy names a DLQ that GetQueueUrl refuses (gone here; a task role
    # without sqs:GetQueueUrl on it in AWS): logged, not watched, never fatal.
    await aws.clients.sqs.delete_queue(QueueUrl=aws.resources.dlq_url)
    metrics = Metrics()
    health = Health(metrics)
    with capture_logs() as logs:
        async with anyio.create_task_group() as group:
            worker: Worker = await group.start(
                lambda task_status: run_worker(
                    aws.settings, install_signals=False, health=health, task_status=task_status
                )
            )
            await wait_until(
                lambda: metrics.value("wait_times_queue_read_timestamp_seconds", queue="main") > 0,
                30,
                "the queue's depth read",
            )
            assert health.ready
            worker.stop()
    assert metrics.value("wait_times_queue_read_timestamp_seconds", queue="dlq") == 0
    assert (
        metrics.registry.get_sample_value(
            "wait_times_queue_messages", {"queue": "dlq", "state": "visible"}
        )
        is None
    )
    [warning] = [e for e in logs if e["event"] == "dead_letter_queue_not_watched"]
    assert warning["queue"] == f"{aws.settings.queue_name}-dlq"
    assert "sqs:GetQueueUrl" in warning["fix"]


@pytest.mark.unit
def test_flush_finished_exports_the_tenants_tracked_and_no_pending_orders() -> None:
    metrics = Metrics()
    observer_on(metrics).flush_finished(
        processed=4, ignored=1, deleted=5, seconds=0.2, windows_tracked=7, tenants_tracked=3
    )
    assert metrics.value("wait_times_tenants_tracked") == 3
    assert metrics.value("wait_times_windows_tracked") == 7
    assert metrics.value("wait_times_messages_processed_total") == 4
    # The approximate gauge is gone: the open orders per tenant replace it.
    assert not hasattr(metrics, "pending_orders")
    assert "wait_times_pending_orders" not in generate_latest(metrics.registry).decode()


@pytest.mark.unit
def test_a_tenant_view_exports_open_orders_its_time_and_each_drink() -> None:
    metrics = Metrics()
    observer = observer_on(metrics)
    observer.tenant_estimate(view("NYC", 12, Latte=(412.0, 560.0), Mocha=(300.0, 420.0)))
    assert metrics.value("wait_times_open_orders", tenant="NYC") == 12
    assert metrics.value("wait_times_estimate_as_of_timestamp_seconds", tenant="NYC") == (
        1_796_126_405
    )
    assert metrics.value("wait_times_estimate_seconds", tenant="NYC", drink="Latte") == 412
    assert metrics.value("wait_times_estimate_p90_seconds", tenant="NYC", drink="Latte") == 560
    assert metrics.value("wait_times_estimate_seconds", tenant="NYC", drink="Mocha") == 300
    assert metrics.value("wait_times_estimate_p90_seconds", tenant="NYC", drink="Mocha") == 420

    # The next view: the queue emptied, Mocha left the training orders.
    observer.tenant_estimate(view("NYC", 0, Latte=(95.0, 130.0)))
    assert metrics.value("wait_times_open_orders", tenant="NYC") == 0
    assert metrics.value("wait_times_estimate_seconds", tenant="NYC", drink="Latte") == 95
    for name in ("wait_times_estimate_seconds", "wait_times_estimate_p90_seconds"):
        assert math.isnan(metrics.value(name, tenant="NYC", drink="Mocha")), name

    # A view with no estimate at all (drinks: {}) still counts its open orders.
    observer.tenant_estimate(view("NYC", 3))
    assert metrics.value("wait_times_open_orders", tenant="NYC") == 3
    assert math.isnan(metrics.value("wait_times_estimate_seconds", tenant="NYC", drink="Latte"))
    assert metrics.value("wait_times_metric_series_dropped_total") == 0


@pytest.mark.unit
def test_scores_give_the_error_histogram_and_the_share_over_p90() -> None:
    metrics = Metrics()
    observer = observer_on(metrics)
    observer.tenant_estimate(view("NYC", 2, Latte=(100.0, 150.0)))
    # Heard of, not yet scored: its scoring series are there, at zero.
    assert metrics.value("wait_times_estimate_error_seconds_count", tenant="NYC") == 0
    assert (
        metrics.registry.get_sample_value("wait_times_estimate_over_p90_total", {"tenant": "NYC"})
        == 0
    )
    for reason in ("no_estimate", "completed_first"):
        assert (
            metrics.registry.get_sample_value(
                "wait_times_estimate_unscored_total", {"tenant": "NYC", "reason": reason}
            )
            == 0
        )

    for error, over in [(4.0, False), (25.0, False), (70.0, True), (3000.0, True)]:
        observer.estimate_scored("NYC", error, over)
    observer.estimate_scored("LDN", 12.0, False)  # first heard of by its score

    def bucket(le: str, tenant: str = "NYC") -> float:
        return metrics.value("wait_times_estimate_error_seconds_bucket", tenant=tenant, le=le)

    assert metrics.value("wait_times_estimate_error_seconds_count", tenant="NYC") == 4
    assert metrics.value("wait_times_estimate_error_seconds_sum", tenant="NYC") == 3099
    assert (bucket("5.0"), bucket("30.0"), bucket("90.0"), bucket("3600.0")) == (1, 2, 3, 4)
    assert bucket("7200.0") == bucket("+Inf") == 4
    over_p90 = metrics.value("wait_times_estimate_over_p90_total", tenant="NYC")
    assert over_p90 / metrics.value("wait_times_estimate_error_seconds_count", tenant="NYC") == 0.5
    assert metrics.value("wait_times_estimate_error_seconds_count", tenant="LDN") == 1
    assert (
        metrics.registry.get_sample_value("wait_times_estimate_over_p90_total", {"tenant": "LDN"})
        == 0
    )


@pytest.mark.unit
def test_unscored_orders_by_reason_and_dropped_tenant_orders() -> None:
    metrics = Metrics()
    observer = observer_on(metrics)
    observer.estimate_unscored("NYC", "no_estimate")
    observer.estimate_unscored("NYC", "no_estimate")
    observer.estimate_unscored("NYC", "completed_first")
    observer.estimate_unscored("LDN", "completed_first")
    unscored = "wait_times_estimate_unscored_total"
    assert metrics.value(unscored, tenant="NYC", reason="no_estimate") == 2
    assert metrics.value(unscored, tenant="NYC", reason="completed_first") == 1
    assert metrics.value(unscored, tenant="LDN", reason="completed_first") == 1
    assert metrics.value("wait_times_estimate_error_seconds_count", tenant="NYC") == 0

    observer.tenant_orders_dropped(3)
    observer.tenant_orders_dropped(1)
    assert metrics.value("wait_times_tenant_orders_dropped_total") == 4


@pytest.mark.unit
def test_tenant_series_are_capped() -> None:
    metrics = Metrics(max_average_series=2)
    observer = observer_on(metrics)
    observer.tenant_estimate(view("NYC", 1, Latte=(60.0, 90.0)))
    observer.estimate_scored("LDN", 10.0, False)  # a score admits a tenant too
    # The third tenant: no view series; the view and its two drinks count as dropped.
    observer.tenant_estimate(view("SYD", 4, Latte=(60.0, 90.0), Mocha=(70.0, 99.0)))
    assert metrics.registry.get_sample_value("wait_times_open_orders", {"tenant": "SYD"}) is None
    assert (
        metrics.registry.get_sample_value(
            "wait_times_estimate_seconds", {"tenant": "SYD", "drink": "Latte"}
        )
        is None
    )
    assert metrics.value("wait_times_metric_series_dropped_total") == 3
    # Its scores and unscored orders are counted, under tenant="_other" with the others
    # past the cap, so totals across tenants stay exact.
    observer.estimate_scored("SYD", 200.0, True)
    observer.estimate_scored("PAR", 5.0, False)
    observer.estimate_unscored("SYD", "no_estimate")
    assert metrics.value("wait_times_estimate_error_seconds_count", tenant=OTHER_TENANT) == 2
    assert metrics.value("wait_times_estimate_over_p90_total", tenant=OTHER_TENANT) == 1
    assert (
        metrics.value("wait_times_estimate_unscored_total", tenant="_other", reason="no_estimate")
        == 1
    )
    assert (
        metrics.registry.get_sample_value(
            "wait_times_estimate_error_seconds_count", {"tenant": "SYD"}
        )
        is None
    )
    # Scoring series are not dropped series; known tenants still update.
    assert metrics.value("wait_times_metric_series_dropped_total") == 3
    observer.tenant_estimate(view("NYC", 5, Latte=(80.0, 120.0)))
    assert metrics.value("wait_times_open_orders", tenant="NYC") == 5
    viewed = {
        s.labels["tenant"] for s in next(iter(metrics.estimates.open_orders.collect())).samples
    }
    assert viewed == {"NYC"}  # LDN is in, scored but never viewed
    scored = {
        s.labels["tenant"] for s in next(iter(metrics.estimates.estimate_error.collect())).samples
    }
    assert scored == {"NYC", "LDN", OTHER_TENANT}


@pytest.mark.unit
def test_estimate_series_are_capped_per_tenant_and_drink() -> None:
    metrics = Metrics(max_average_series=3)
    observer = observer_on(metrics)
    observer.tenant_estimate(view("NYC", 1, Latte=(60.0, 90.0), Mocha=(70.0, 99.0)))
    # One key left: LDN's Americano (drinks in name order) gets it, its Latte does not.
    observer.tenant_estimate(view("LDN", 2, Latte=(50.0, 80.0), Americano=(40.0, 70.0)))
    keys = {
        (s.labels["tenant"], s.labels["drink"])
        for s in next(iter(metrics.estimates.estimate.collect())).samples
    }
    assert keys == {("NYC", "Latte"), ("NYC", "Mocha"), ("LDN", "Americano")}
    assert len(next(iter(metrics.estimates.estimate_p90.collect())).samples) == 3
    assert metrics.value("wait_times_metric_series_dropped_total") == 1
    assert metrics.value("wait_times_open_orders", tenant="LDN") == 2  # the tenant is in
    # Known keys still update; a key that left a view keeps its place under the cap.
    observer.tenant_estimate(view("NYC", 0, Latte=(61.0, 91.0)))
    observer.tenant_estimate(view("LDN", 2, Latte=(50.0, 80.0), Americano=(41.0, 71.0)))
    assert metrics.value("wait_times_estimate_seconds", tenant="NYC", drink="Latte") == 61
    assert metrics.value("wait_times_estimate_seconds", tenant="LDN", drink="Americano") == 41
    assert math.isnan(metrics.value("wait_times_estimate_seconds", tenant="NYC", drink="Mocha"))
    assert metrics.value("wait_times_metric_series_dropped_total") == 2
    # The averages have a cap of their own: the estimates took none of it.
    metrics.observe_average(("NYC", "Latte"), 60.0, 1)
    metrics.observe_average(("LDN", "Latte"), 60.0, 1)
    assert len(next(iter(metrics.average_wait.collect())).samples) == 2
    assert metrics.value("wait_times_metric_series_dropped_total") == 2


@pytest.mark.unit
@pytest.mark.parametrize(
    ("code", "status", "counted"),
    [
        ("ProvisionedThroughputExceededException", 400, "throttling"),
        ("TooManyRequestsException", 429, "throttling"),
        ("ThrottlingException", 400, "throttling"),
        ("InternalServerError", 500, "InternalServerError"),
    ],
)
def test_retries_are_counted_by_the_kind_the_error_carries(
    code: str, status: int, counted: str
) -> None:
    """The metrics read throttling off the error (service.aws.errors decided it): botocore's
    throttling codes count as ``throttling``, the others under their code."""
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    failure = ClientError(response, "PutItem")
    error = translate(failure, "dynamodb.PutItem")
    assert isinstance(error, DependencyError)
    metrics = Metrics()
    health = Health(metrics)
    PrometheusObserver(metrics, health).retrying("commit", error)
    assert (
        metrics.value("wait_times_aws_retries_total", operation="dynamodb.PutItem", error=counted)
        == 1.0
    )
    assert health.reason == f"dynamodb.PutItem failing: {code}"
