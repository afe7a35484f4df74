"""Test helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from service.app import run_worker
from service.aws import items
from service.aws.clients import AwsClients
from service.aws.provision import Provisioned
from service.aws.store import DynamoStore
from service.core.estimators.registry import estimate_options
from service.core.pairing import OrderRecord
from service.core.published import AVERAGE_DETAIL_TYPE, ESTIMATE_DETAIL_TYPE
from service.core.window import WindowKey
from service.metrics import Metrics
from service.ports import WindowState
from service.settings import Settings
from service.tools.emulator import Emulator
from service.tools.player import TrafficGenerator, put_entries, to_entry
from service.tools.replay import replay
from testing.localstack import LocalStack
from tests.envelopes import envelope

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "serverlesspresso-events"
RECORDING = DATA / "event-player" / "events.json"
CAPTURE_QUEUE = "capture"
# Every recorded event the tests read; conftest refuses to start a run without one of them.
DATA_FILES = (
    "event-player/OrderManager.OrderNYC-CANCELLED__events-json-index32.json",
    "event-player/OrderManager.OrderNYC-COMPLETED__events-json-index23.json",
    "event-player/OrderManager.WaitingCompletion__events-json-index6.json",
    "event-player/OrderProcessor.WaitingCompletion__events-json-index4.json",
    "event-player/OrderProcessor.WorkflowStarted__events-json-index1.json",
    "event-player/OrderProcessor.orderFinished__events-json-index21.json",
    "event-player/OrderRobot.FulfillOrder__events-json-index25.json",
    "event-player/ProducerRobot.FulfillOrder__events-json-index2.json",
    "event-player/Validator.NewOrder__events-json-index0.json",
    "event-player/events.json",
    "event-player/order-7ea64372-lifecycle/01_OrderManager.WaitingCompletion__events-json-index59.json",
    "event-player/order-7ea64372-lifecycle/02_OrderManager.OrderNYC-COMPLETED__events-json-index67.json",
    "event-player/order-7ea64372-lifecycle/03_OrderProcessor.orderFinished__events-json-index68.json",
    "samples/OrderManager.OrderCancelled__legacy__7-metrics-service.json",
    "samples/OrderManager.OrderStarted__legacy__resumeWF-testEvent.json",
    "samples/OrderManager.WaitingCompletion__6-publisher-service.json",
    "samples/OrderManager.WaitingCompletion__7-metrics-service.json",
    "samples/OrderProcessor.OrderStarted__legacy__6-publisher-service.json",
    "samples/OrderProcessor.OrderTimeOut__7-metrics-service.json",
    "samples/OrderProcessor.WaitingCompletion__4-order-processing.json",
    "samples/OrderProcessor.WorkflowStarted__4-order-processing.json",
    "samples/OrderProcessor.orderFinished__8-order-journey-testEvents-final.json",
    "samples/Validator.NewOrder__7-metrics-service.json",
    "samples/Validator.NewOrder__9-validator.json",
)


EMULATORS = ("moto", "localstack")
# For a test of DynamoDB alone: it runs once, on moto, which serves DynamoDB on both.
DYNAMODB_ONLY = pytest.mark.parametrize("cloud", ["moto"], indirect=True)


@dataclass
class Cloud:
    """The AWS a test runs on: a fixture parameter (``--emulator``), reset before the test.

    ``moto``: everything on the session's moto server. ``localstack``: SQS and EventBridge
    on the session's LocalStack, DynamoDB on moto, through the standard per-service
    endpoint (``AWS_ENDPOINT_URL_DYNAMODB`` for child processes, the matching Settings
    field in process): LocalStack's own DynamoDB needs a download that cannot happen here.
    """

    name: str
    moto: Emulator
    localstack: LocalStack | None = None

    @property
    def url(self) -> str:
        """The general endpoint: SQS and EventBridge."""
        return self.localstack.url if self.localstack is not None else self.moto.url

    @property
    def urls(self) -> dict[str, str]:
        """Each service's endpoint (botocore client names)."""
        return {"sqs": self.url, "events": self.url, "dynamodb": self.moto.url}

    def env(self) -> dict[str, str]:
        """The standard endpoint variables a user would set for this setup."""
        env = {"AWS_ENDPOINT_URL": self.url}
        if self.moto.url != self.url:
            env["AWS_ENDPOINT_URL_DYNAMODB"] = self.moto.url
        return env

    def reset(self) -> None:
        """moto forgets everything; LocalStack's queues, rules and buses are deleted."""
        self.moto.reset()
        if self.localstack is not None:
            self.localstack.reset()


def make_settings(cloud: Cloud | Emulator, **overrides: Any) -> Settings:
    """Settings pointing at the emulators (a bare Emulator: moto for every service), tuned
    so tests never wait for long polls."""
    moto_url = cloud.url if isinstance(cloud, Emulator) else cloud.moto.url
    values: dict[str, Any] = {
        "endpoint_url": cloud.url,
        "dynamodb_endpoint_url": moto_url if moto_url != cloud.url else None,
        "region": "us-east-1",
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "receive_wait_seconds": 1,
        "visibility_timeout_seconds": 5,
        "max_receive_count": 3,
        "drain_seconds": 10,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Aws:
    """A freshly provisioned emulator, its settings and clients."""

    settings: Settings
    clients: AwsClients
    resources: Provisioned
    cloud: Cloud
    # Drained from the capture queue and not yet returned, by detail-type: ``published``
    # and ``estimates`` each drain what has arrived and keep the other kind here.
    captured: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {AVERAGE_DETAIL_TYPE: [], ESTIMATE_DETAIL_TYPE: []}, repr=False
    )

    def store(self) -> DynamoStore:
        """A store over the test table (for reading windows back)."""
        return DynamoStore(
            self.clients.dynamodb,
            self.settings.table_name,
            window_size=self.settings.window_size,
            ttl_seconds=self.settings.pending_ttl_seconds,
            estimates=estimate_options(self.settings.max_wait_seconds, self.settings.estimator),
        )

    async def stored_rows(self) -> list[dict[str, Any]]:
        """Final windows as stored in DynamoDB, in replay's output shape."""
        windows = await scan_windows(self.clients, self.settings)
        return [
            {
                "eventId": t,
                "drink": d,
                "duration": s.window.duration,
                "samples": s.window.samples,
            }
            for (t, d), s in sorted(windows.items())
            if s.window.samples
        ]

    async def drain_queue(self, url: str) -> list[dict[str, Any]]:
        """Every message body currently in a queue (deleted as read)."""
        bodies: list[dict[str, Any]] = []
        sqs = self.clients.sqs
        while True:
            response = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                try:
                    bodies.append(json.loads(message["Body"]))
                except ValueError:
                    bodies.append({"raw": message["Body"]})
            await sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )

    async def published(self) -> list[dict[str, Any]]:
        """The ``OrderManager.DrinkAverageTime`` details that reached the capture queue
        through the bus since the last call (the estimates drained with them wait for
        ``estimates``)."""
        return await self._take(AVERAGE_DETAIL_TYPE)

    async def estimates(self) -> list[dict[str, Any]]:
        """The ``OrderManager.WaitEstimate`` details that reached the capture queue since
        the last call (the averages drained with them wait for ``published``)."""
        return await self._take(ESTIMATE_DETAIL_TYPE)

    async def _take(self, detail_type: str) -> list[dict[str, Any]]:
        """Drain the capture queue once, sort what came by detail-type, and hand over (and
        forget) every detail of ``detail_type`` drained so far, in arrival order."""
        assert self.resources.capture_queue_url is not None
        for body in await self.drain_queue(self.resources.capture_queue_url):
            kind = body.get("detail-type")
            assert kind in self.captured, f"the capture queue got {body}"
            self.captured[kind].append(body["detail"])
        taken, self.captured[detail_type] = self.captured[detail_type], []
        return taken


def latest_by_key(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Highest-version average per key, in replay's output shape."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for detail in details:
        key = (detail["eventId"], detail["drink"])
        if key not in best or detail["version"] > best[key]["version"]:
            best[key] = detail
    return [
        {k: best[key][k] for k in ("eventId", "drink", "duration", "samples")}
        for key in sorted(best)
    ]


def latest_by_tenant(details: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Highest-version WaitEstimate detail per tenant (``eventId``), whole, by tenant."""
    best: dict[str, dict[str, Any]] = {}
    for detail in details:
        tenant = detail["eventId"]
        if tenant not in best or detail["version"] > best[tenant]["version"]:
            best[tenant] = detail
    return dict(sorted(best.items()))


def aws_calls(metrics: Metrics) -> dict[str, float]:
    """Every AWS request a worker's metrics counted, keyed ``sqs.ReceiveMessage`` and so on."""
    return {
        f"{s.labels['service']}.{s.labels['operation']}": s.value
        for s in next(iter(metrics.aws_calls.collect())).samples
        if s.name.endswith("_total")
    }


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll a condition (no fixed sleeps in tests); fail with ``what`` after ``seconds``."""
    with anyio.move_on_after(seconds):
        while not condition():  # noqa: ASYNC110 - the condition is a plain predicate
            await anyio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def generated(orders: int, seed: int, tenants: tuple[str, ...] = ("NYC", "LDN")) -> list[Any]:
    """Planned events (sim-time order) for ``orders`` orders."""
    generator = TrafficGenerator(seed=seed, rate=2.0, tenants=tenants, start=1_790_000_000)
    return list(generator.events(orders))


def as_envelopes(events: list[Any], source: str) -> list[dict[str, Any]]:
    """The envelopes of planned events (what the queue receives, what replay reads)."""
    return [
        envelope(detail_type=e.detail_type, detail=e.detail, at=e.at, source=source) for e in events
    ]


async def put_planned(aws: Aws, events: list[Any]) -> None:
    await put_entries(aws.clients.events, [to_entry(e, aws.settings.event_bus) for e in events])


async def burst(settings: Settings, metrics: Metrics | None = None) -> None:
    with anyio.fail_after(120):
        await run_worker(settings, burst=True, install_signals=False, metrics=metrics)


def expected_rows(envelopes: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    return replay(
        envelopes, window_size=settings.window_size, max_wait_seconds=settings.max_wait_seconds
    ).as_rows()


async def scan_windows(clients: AwsClients, settings: Settings) -> dict[WindowKey, WindowState]:
    """Every stored window (a full scan: for tests, never on the service's path)."""
    windows: dict[WindowKey, WindowState] = {}
    request: dict[str, Any] = {
        "TableName": settings.table_name,
        "FilterExpression": f"begins_with({items.KEY}, :w)",
        "ExpressionAttributeValues": {":w": {"S": items.WINDOW_PREFIX}},
        "ConsistentRead": True,
    }
    while True:
        page = await clients.dynamodb.scan(**request)
        for item in page.get("Items", []):
            stored = items.window_from_item(item, settings.window_size)
            if stored is not None:
                state, window, version = stored
                windows[state.key] = WindowState(window, version)
        if "LastEvaluatedKey" not in page:
            return windows
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def order_record(
    order_id: str,
    tenant: str | None = None,
    drink: str | None = None,
    submitted_at: int | None = None,
    completed_at: int | None = None,
    cancelled: bool = False,
    expires_at: int | None = None,
) -> OrderRecord:
    """A record of at most one submission and one completion."""
    submissions: tuple[tuple[int, str, str], ...] = ()
    if submitted_at is not None:
        submissions = ((submitted_at, tenant or "", drink or ""),)
    completions = () if completed_at is None else (completed_at,)
    return OrderRecord(order_id, submissions, completions, cancelled, expires_at)
