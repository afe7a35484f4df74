"""What every fault scenario shares: feeding the queue, real worker processes, the check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from service.app import run_worker
from service.aws import items
from service.metrics import Metrics
from service.settings import Settings
from tests.helpers import Aws, latest_by_key
from tests.reliability import reference

WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))


async def send_bodies(aws: Aws, bodies: list[str], queue_url: str | None = None) -> None:
    """SendMessageBatch straight to the queue, ten at a time, ten calls at once."""
    url = queue_url or aws.resources.queue_url
    chunks = [bodies[i : i + 10] for i in range(0, len(bodies), 10)]
    limiter = anyio.CapacityLimiter(10)

    async def send(chunk: list[str]) -> None:
        async with limiter:
            response = await aws.clients.sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
            )
            assert not response.get("Failed"), response["Failed"]

    async with anyio.create_task_group() as group:
        for chunk in chunks:
            group.start_soon(send, chunk)


async def queue_counts(aws: Aws, url: str | None = None) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = await aws.clients.sqs.get_queue_attributes(
        QueueUrl=url or aws.resources.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    values = attributes["Attributes"]
    return (
        int(values["ApproximateNumberOfMessages"]),
        int(values["ApproximateNumberOfMessagesNotVisible"]),
    )


async def wait_for_empty_queue(aws: Aws, seconds: float) -> None:
    """Until nothing is waiting or in flight on the main queue."""
    with anyio.fail_after(seconds):
        while await queue_counts(aws) != (0, 0):  # noqa: ASYNC110 - polls SQS, no event exists
            await anyio.sleep(0.25)


async def burst_worker(settings: Settings, metrics: Metrics | None = None) -> None:
    """An in-process worker that stops when the queue is drained."""
    with anyio.fail_after(180):
        await run_worker(settings, burst=True, install_signals=False, metrics=metrics)


@dataclass
class Checked:
    """What a check covered."""

    keys: int
    paired_orders: int
    published: int


async def check_against_reference(
    aws: Aws, envelopes: list[dict[str, Any]], settings: Settings, *, dlq_empty: bool = True
) -> Checked:
    """Stored windows and the latest published averages both equal the reference model."""
    expected = reference_windows(envelopes, settings)
    assert expected, "the traffic pairs some orders"
    dead = await aws.drain_queue(aws.resources.dlq_url) if dlq_empty else []
    assert dead == [], f"{len(dead)} good messages ended in the DLQ: {dead[:2]}"
    wrong = await window_mismatches(aws, expected)
    assert not wrong, "\n".join(wrong[:20])
    published = await aws.published()
    # A key left with no counted order publishes nothing (its last average stays the last
    # one a consumer saw): compare the keys that have a window.
    keys = {(row["eventId"], row["drink"]) for row in expected}
    latest = [row for row in latest_by_key(published) if (row["eventId"], row["drink"]) in keys]
    assert latest == expected, _diff(latest, expected)
    # One version of a key is one window: never two different averages under one version.
    by_version: dict[tuple[str, str, int], tuple[Any, Any]] = {}
    for detail in published:
        seen = by_version.setdefault(
            (detail["eventId"], detail["drink"], detail["version"]),
            (detail["duration"], detail["samples"]),
        )
        assert seen == (detail["duration"], detail["samples"]), detail
    return Checked(len(expected), reference.paired_orders(envelopes), len(published))


def reference_windows(envelopes: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """The reference model's final windows of ``envelopes`` under ``settings``."""
    return reference.expected_windows(
        envelopes,
        window_size=settings.window_size,
        max_wait_seconds=settings.max_wait_seconds,
        source=settings.source,
    )


async def window_mismatches(aws: Aws, expected: list[dict[str, Any]]) -> list[str]:
    """One line per key whose window stored in DynamoDB is not the ``expected`` one (a key
    missing on either side included): empty when the table agrees."""
    return _mismatches(await aws.stored_rows(), expected)


@dataclass
class OpenChecked:
    """What an open-orders check covered."""

    tenants: int
    open_orders: int

    def __str__(self) -> str:
        return f"tenants={self.tenants} open_orders={self.open_orders}"


async def stored_tenant_names(aws: Aws) -> set[str]:
    """Every tenant with a state item in the table (a full scan: tests only)."""
    names: set[str] = set()
    request: dict[str, Any] = {
        "TableName": aws.settings.table_name,
        "FilterExpression": f"begins_with({items.KEY}, :t)",
        "ExpressionAttributeValues": {":t": {"S": items.TENANT_PREFIX}},
        "ConsistentRead": True,
    }
    while True:
        page = await aws.clients.dynamodb.scan(**request)
        names.update(item[items.TENANT]["S"] for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return names
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def check_open_orders(
    aws: Aws, envelopes: list[dict[str, Any]], settings: Settings
) -> OpenChecked:
    """Every tenant's stored state, read back from the table, says what the reference says:
    its estimate is for the tenant's latest event time in ``envelopes`` and counts the
    orders open then. Tenants are compared as a set: none missing, none extra."""
    checked, wrong = await open_order_mismatches(aws, envelopes, settings)
    assert checked.tenants, "the traffic submits some orders"
    assert not wrong, "\n".join(wrong)
    return checked


async def open_order_mismatches(
    aws: Aws, envelopes: list[dict[str, Any]], settings: Settings
) -> tuple[OpenChecked, list[str]]:
    """What ``check_open_orders`` compares, without asserting: what the reference covers,
    and one line per tenant whose stored (as_of, open orders) differs from it."""
    now = int(time.time())
    expected = reference.expected_open_orders(
        envelopes, max_wait_seconds=settings.max_wait_seconds, now=now, source=settings.source
    )
    names = await stored_tenant_names(aws)
    loaded = await aws.store().load_tenants(sorted(names | expected.keys()), now)
    actual = {
        tenant: (stored.view.as_of, stored.view.open_orders)
        for tenant, stored in loaded.items()
        if stored.view is not None
    }
    wrong = [
        f"{tenant!r}: service (as_of, open) {actual.get(tenant)} != reference {expected.get(tenant)}"
        for tenant in sorted(actual.keys() | expected.keys())
        if actual.get(tenant) != expected.get(tenant)
    ]
    return OpenChecked(len(expected), sum(count for _, count in expected.values())), wrong


def _diff(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str:
    return "\n".join(_mismatches(actual, expected)[:20])


def _mismatches(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> list[str]:
    """One line per key whose row differs between two lists of window rows."""
    a = {(r["eventId"], r["drink"]): r for r in actual}
    e = {(r["eventId"], r["drink"]): r for r in expected}
    return [
        f"{k}: service {a.get(k)} != reference {e.get(k)}"
        for k in sorted(a.keys() | e.keys())
        if a.get(k) != e.get(k)
    ]


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``wait-times run`` child process with ``settings`` (their
    endpoints as the standard variables: ``settings.through(proxy.url)`` for a proxy)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAIT_TIMES_")}
    env.update(settings.to_environ())
    env.update(
        {
            "WAIT_TIMES_METRICS_PORT": "0",
            "WAIT_TIMES_METRICS_HOST": "127.0.0.1",
            "WAIT_TIMES_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A real ``wait-times run`` child; its JSON log goes to a file (a pipe could fill)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            mode="w+", prefix="wait-times-", suffix=".log", delete=False
        )
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [WAIT_TIMES, "run", *args],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines so far."""
        text = Path(self.log_file.name).read_text(errors="replace")
        entries = []
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
        return entries

    def raw_log(self) -> str:
        """The whole output, for failure messages."""
        return Path(self.log_file.name).read_text(errors="replace")

    def logged(self, event: str) -> bool:
        """Whether a log event with this name was written."""
        return f'"event": "{event}"' in self.raw_log() or f'"event":"{event}"' in self.raw_log()

    def metrics_port(self) -> int | None:
        """The /metrics port, once the worker has logged it."""
        for entry in self.logs():
            if entry.get("event") == "metrics_listening":
                return int(entry["port"])
        return None

    def get(self, path: str) -> tuple[int, str]:
        """GET one of the worker's HTTP endpoints."""
        port = self.metrics_port()
        assert port is not None, "the worker has not logged its metrics port yet"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def alive(self) -> bool:
        """Still running."""
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no checkpoint, exactly what an OOM kill or a lost host does."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> None:
        """SIGTERM, as ECS sends it."""
        self.process.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Kill if still running, remove the log file."""
        if self.alive():
            self.process.kill()
        self.process.wait(10)
        self.log_file.close()
        Path(self.log_file.name).unlink(missing_ok=True)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples in Prometheus text whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


async def set_max_receive_count(aws: Aws, count: int) -> None:
    """Change the queue's redrive threshold (what ``provision`` set from the settings)."""
    sqs = aws.clients.sqs
    dlq_arn = (
        await sqs.get_queue_attributes(QueueUrl=aws.resources.dlq_url, AttributeNames=["QueueArn"])
    )["Attributes"]["QueueArn"]
    await sqs.set_queue_attributes(
        QueueUrl=aws.resources.queue_url,
        Attributes={
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(count)}
            )
        },
    )
