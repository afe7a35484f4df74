"""SIGTERM during a burst, ten times: exit 0 well inside 30 s every time, nothing lost."""

from __future__ import annotations

import random
import time

import anyio
import pytest

from tests.helpers import Aws, wait_until
from tests.reliability.harness import (
    WorkerProcess,
    burst_worker,
    check_against_reference,
    send_bodies,
    set_max_receive_count,
    worker_env,
)
from tests.reliability.traffic import messy_traffic

pytestmark = pytest.mark.reliability

ROUNDS = 10


async def test_sigterm_during_a_burst_ten_times(aws: Aws) -> None:
    # A long poll cancelled by SIGTERM may already have taken messages (receive count +1,
    # invisible until the timeout); over ten stops one message can reach maxReceiveCount 3
    # and be redriven by design. Suspected cause of one unreproduced failure in a full run.
    await set_max_receive_count(aws, 20)
    traffic = messy_traffic(150, seed=8)
    bodies = traffic.bodies
    rng = random.Random(8)
    env = worker_env(aws.settings)
    started = time.monotonic()
    exits: list[float] = []
    size = -(-len(bodies) // ROUNDS)
    for round_ in range(ROUNDS):
        await send_bodies(aws, bodies[round_ * size : (round_ + 1) * size])  # the burst
        worker = WorkerProcess(env)
        try:
            await wait_until(lambda: worker.logged("worker_started"), 30, "the worker")  # noqa: B023 - awaited at once
            await anyio.sleep(rng.uniform(0.2, 1.5))  # mid-flush, most of the time
            signalled = time.monotonic()
            worker.terminate()
            await wait_until(lambda: not worker.alive(), 30, "exit within 30 s")  # noqa: B023 - awaited at once
            exits.append(time.monotonic() - signalled)
            assert worker.process.returncode == 0, worker.raw_log()[-2000:]
            logs = worker.logs()
            assert not [e for e in logs if e.get("level") == "error"], logs
        finally:
            worker.close()
    await burst_worker(aws.settings)  # whatever was not finished is still on the queue
    checked = await check_against_reference(aws, traffic.envelopes, aws.settings)
    print(
        f"rounds={ROUNDS} max_exit_s={max(exits):.2f} {checked} {time.monotonic() - started:.1f}s"
    )
    assert len(exits) == ROUNDS and max(exits) < 30
