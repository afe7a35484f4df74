"""Shared fixtures: one moto server (a real HTTP endpoint) for the run, reset per test."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from service.aws import AwsClients, open_clients
from service.emulator import Emulator
from service.provision import Provisioned, provision
from service.settings import Settings
from service.store import DynamoStore

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_ENDPOINT_URL", None)

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference" / "serverlesspresso-events"
RECORDING = REFERENCE / "event-player" / "events.json"
CAPTURE_QUEUE = "capture"


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """The moto server child process for the whole run."""
    with Emulator() as running:
        yield running


def make_settings(emulator: Emulator, **overrides: Any) -> Settings:
    """Settings pointing at the emulator, tuned so tests never wait for long polls."""
    values: dict[str, Any] = {
        "endpoint_url": emulator.url,
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
    emulator: Emulator

    def store(self) -> DynamoStore:
        """A store over the test table (for reading windows back)."""
        return DynamoStore(
            self.clients.dynamodb,
            self.settings.table_name,
            window_size=self.settings.window_size,
            ttl_seconds=self.settings.pending_ttl_seconds,
        )

    async def stored_rows(self) -> list[dict[str, Any]]:
        """Final windows as stored in DynamoDB, in replay's output shape."""
        windows = await self.store().scan_windows()
        return [
            {
                "eventId": t,
                "drink": d,
                "duration": s.window.duration,
                "samples": s.window.samples,
            }
            for (t, d), s in sorted(windows.items())
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
        """DrinkAverageTime details that reached the capture queue through the bus."""
        assert self.resources.capture_queue_url is not None
        return [b["detail"] for b in await self.drain_queue(self.resources.capture_queue_url)]


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


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll a condition (no fixed sleeps in tests); fail with ``what`` after ``seconds``."""
    with anyio.move_on_after(seconds):
        while not condition():  # noqa: ASYNC110 - the condition is a plain predicate
            await anyio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


@pytest.fixture
async def aws(emulator: Emulator) -> AsyncIterator[Aws]:
    """A reset emulator with the service's resources and a capture queue provisioned."""
    emulator.reset()
    settings = make_settings(emulator)
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        resources = await provision(settings, clients, capture_queue=CAPTURE_QUEUE)
        yield Aws(settings, clients, resources, emulator)
