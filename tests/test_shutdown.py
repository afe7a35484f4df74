"""SIGTERM, as ECS sends it: stop receiving, finish in-flight work, exit 0 well inside 30 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from service.app import run_worker
from tests.helpers import Aws, as_envelopes, expected_rows, generated, put_planned, wait_until

pytestmark = pytest.mark.integration

WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))


async def queue_depth(aws: Aws) -> int:
    attributes = await aws.clients.sqs.get_queue_attributes(
        QueueUrl=aws.resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


async def test_sigterm_mid_stream_exits_0_quickly_and_loses_nothing(aws: Aws) -> None:
    events = generated(orders=240, seed=21)
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    await put_planned(aws, first)
    initial = await queue_depth(aws)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAIT_TIMES_")}
    env.update(aws.cloud.env())
    env.update(
        {
            "AWS_REGION": aws.settings.region,
            "WAIT_TIMES_METRICS_PORT": "0",
            "WAIT_TIMES_LOG_FORMAT": "json",
            # A real 20 s long poll: SIGTERM must not wait for it to end.
            "WAIT_TIMES_RECEIVE_WAIT_SECONDS": "20",
            "WAIT_TIMES_VISIBILITY_TIMEOUT_SECONDS": "5",
        }
    )
    process = subprocess.Popen(  # noqa: ASYNC220 - the process is waited on below, bounded
        [WAIT_TIMES, "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        depth = initial

        async def poll() -> None:
            nonlocal depth
            depth = await queue_depth(aws)

        deadline = anyio.current_time() + 60
        while depth > initial * 0.6 and anyio.current_time() < deadline:
            await poll()
            await anyio.sleep(0.1)
        assert depth <= initial * 0.6, "the worker never got going"
        await put_planned(aws, second)  # traffic keeps arriving while it stops
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await wait_until(lambda: process.poll() is not None, 30, "the worker to exit")
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert elapsed < 30
    logs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    names = [entry["event"] for entry in logs]
    assert "signal_received" in names
    assert names.index("signal_received") < names.index("worker_stopped")
    assert not [entry for entry in logs if entry.get("level") == "error"]

    # Whatever it had not finished is still on the queue: a fresh worker completes it.
    with anyio.fail_after(120):
        await run_worker(aws.settings, burst=True, install_signals=False)
    expected = expected_rows(as_envelopes(events, aws.settings.source), aws.settings)
    assert await aws.stored_rows() == expected
