"""Bad configuration at start, with the real CLI: one clear line and the README's exit code."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.helpers import Aws, wait_until
from tests.reliability.harness import WAIT_TIMES, WorkerProcess, worker_env
from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.reliability


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WAIT_TIMES, "run"], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("problem", "extra", "code", "named"),
    [
        (
            "non-numeric window size",
            {"WAIT_TIMES_WINDOW_SIZE": "ten"},
            2,
            ["WAIT_TIMES_WINDOW_SIZE", "'ten'"],
        ),
        (
            "queue does not exist",
            {"WAIT_TIMES_QUEUE_NAME": "no-such-queue"},
            3,
            ["'no-such-queue'", "provision"],
        ),
        (
            "table does not exist",
            {"WAIT_TIMES_TABLE_NAME": "no-such-table"},
            3,
            ["'no-such-table'", "provision"],
        ),
        ("wrong region", {"AWS_REGION": "eu-west-3"}, 3, ["eu-west-3", "provision"]),
    ],
)
def test_a_bad_start_is_one_line_and_the_documented_exit_code(
    aws: Aws, problem: str, extra: dict[str, str], code: int, named: list[str]
) -> None:
    env = worker_env(aws.settings, **extra)
    result = _run(env)
    assert result.returncode == code, (problem, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (problem, lines)
    for name in named:
        assert name in lines[0], (problem, lines[0])


async def test_an_unreachable_endpoint_is_waited_for_not_ready(aws: Aws, proxy: FaultProxy) -> None:
    started = time.monotonic()
    proxy.refuse()
    worker = WorkerProcess(worker_env(aws.settings.through(proxy.url)))
    try:
        await wait_until(lambda: worker.logged("aws_unreachable"), 30, "aws_unreachable")
        await wait_until(lambda: worker.metrics_port() is not None, 10, "the metrics port")
        assert worker.get("/readyz")[0] == 503
        assert worker.get("/healthz")[0] == 200
        warning = next(e for e in worker.logs() if e["event"] == "aws_unreachable")
        assert warning["level"] == "warning" and "retry_in_s" in warning
        assert worker.alive()
        proxy.restore()
        await wait_until(lambda: worker.logged("worker_started"), 30, "the worker to start")
        await wait_until(lambda: worker.get("/readyz")[0] == 200, 10, "/readyz 200")
        worker.terminate()
        await wait_until(lambda: not worker.alive(), 30, "the worker to stop")
        assert worker.process.returncode == 0
    finally:
        worker.close()
    print(f"unreachable endpoint waited for, then ready; {time.monotonic() - started:.1f}s")
    assert os.environ.get("AWS_ENDPOINT_URL") is None
