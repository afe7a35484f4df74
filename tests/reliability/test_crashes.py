"""kill -9 anywhere, many times, and several workers sharing the queue: nothing lost or doubled."""

from __future__ import annotations

import random
import time
from typing import Any

import anyio
import pytest

from service.tools.player import envelope_to_entry, put_entries
from tests.helpers import Aws, wait_until
from tests.reliability.harness import (
    WorkerProcess,
    burst_worker,
    check_against_reference,
    check_open_orders,
    metric_value,
    send_bodies,
    set_max_receive_count,
    wait_for_empty_queue,
    worker_env,
)
from tests.reliability.proxy import FaultProxy
from tests.reliability.traffic import messy_traffic

pytestmark = pytest.mark.reliability

# Where a kill lands. "hold" points stop the worker's first request of that operation in
# the proxy and kill the process while it is held, so the crash is exactly there.
KILL_POINTS = (
    ("random", None),  # after a random short delay: anywhere at all
    ("inside a small flush: order records written one by one", "UpdateItem"),
    ("inside a flush: order records (or windows) written in one transaction", "TransactWriteItems"),
    ("records written, being read back (or cold windows read)", "BatchGetItem"),
    ("records written, one window write in flight", "PutItem"),
    ("window written, publish in flight", "PutEvents"),
    ("published, SQS delete in flight", "DeleteMessageBatch"),
)


async def _kill_lane(
    lane: int, proxy: FaultProxy, env: dict[str, str], kills: int, log: list[str]
) -> None:
    """Start ``wait-times run`` through ``proxy`` and SIGKILL it ``kills`` times."""
    rng = random.Random(lane)
    for number in range(kills):
        where, operation = KILL_POINTS[(number + lane) % len(KILL_POINTS)]
        drop = rng.random() < 0.5  # the held request dies with the process, or lands late
        if operation is not None:
            proxy.hold(operation, after=rng.randrange(0, 3))
        worker = WorkerProcess(env)
        try:
            if operation is None:
                await anyio.sleep(rng.uniform(0.5, 3.0))
            else:
                with anyio.move_on_after(10):
                    while not proxy.held[operation]:  # noqa: ASYNC110 - another thread's counter
                        await anyio.sleep(0.02)
                if not proxy.held[operation]:
                    where = f"random (no {operation} within 10 s)"
                    operation = None
            assert worker.alive(), worker.raw_log()[-2000:]
            worker.kill()
            late = "" if operation is None else (" (dropped)" if drop else " (landed late)")
            log.append(f"lane {lane}: {where}{late}")
        finally:
            proxy.release(drop=drop)
            worker.close()


async def _feed(aws: Aws, bodies: list[str], parts: int, every: float) -> None:
    """Traffic keeps arriving while workers die."""
    size = -(-len(bodies) // parts)
    for start in range(0, len(bodies), size):
        await send_bodies(aws, bodies[start : start + size])
        await anyio.sleep(every)


async def test_sigkill_at_26_points_spread_over_a_run(aws: Aws) -> None:
    # Every kill abandons the killed worker's flush in flight, so one message can be in
    # several crashed flushes; past maxReceiveCount SQS moves it to the DLQ by design. The
    # threshold is raised above the number of kills so that any message missing at the end
    # was lost by the service, not redriven by the policy.
    await set_max_receive_count(aws, 40)
    traffic = messy_traffic(130, seed=1)
    started = time.monotonic()
    kills: list[str] = []
    urls = aws.cloud.urls
    with FaultProxy(urls, seed=1) as first, FaultProxy(urls, seed=2) as second:
        async with anyio.create_task_group() as lanes:
            lanes.start_soon(_feed, aws, traffic.bodies, 60, 1.2)
            for lane, proxy in enumerate((first, second)):
                env = worker_env(aws.settings.through(proxy.url))
                lanes.start_soon(_kill_lane, lane, proxy, env, 13, kills)
    # A survivor finishes what the killed ones left (held messages return after the
    # visibility timeout).
    await burst_worker(aws.settings)
    checked = await check_against_reference(aws, traffic.envelopes, aws.settings)
    opened = await check_open_orders(aws, traffic.envelopes, aws.settings)
    print(f"kills={len(kills)} {checked} {opened} {time.monotonic() - started:.1f}s")
    print("\n".join(kills))
    assert len(kills) == 26
    # Two points exist only when timing makes them: a flush of one or two orders (the
    # UpdateItem path) and a flush that changed exactly one key (the single PutItem; several
    # keys go in one TransactWriteItems). They are reported, not required (a CI run hit the
    # PutItem point once); the others come with every flush of three orders or more, which
    # this traffic (60 parts of about five orders) makes throughout: each is hit twice.
    timing_made = {"UpdateItem", "PutItem"}
    for where, operation in KILL_POINTS[1:]:
        hits = sum(where in k for k in kills)
        print(f"{hits} kills: {where}")
        if operation not in timing_made:
            assert hits >= 2, where


def _processed(worker: WorkerProcess) -> float:
    port = worker.metrics_port()
    if port is None:
        return 0.0
    try:
        status, text = worker.get("/metrics")
    except OSError:
        return 0.0
    return metric_value(text, "wait_times_messages_processed_total") if status == 200 else 0.0


async def test_three_workers_one_killed_and_restarted_twice(aws: Aws) -> None:
    traffic = messy_traffic(150, seed=2)
    started = time.monotonic()
    env = worker_env(aws.settings)
    workers = [WorkerProcess(env) for _ in range(3)]
    victims: list[WorkerProcess] = []
    try:
        # Traffic keeps arriving (flushes of up to 100 messages would drain a preloaded
        # queue before a restarted worker is up), so each victim dies mid-stream.
        async with anyio.create_task_group() as feeding:
            feeding.start_soon(_feed, aws, traffic.bodies, 30, 1.0)
            for round_ in range(2):
                victim = workers[0]
                await wait_until(
                    lambda: _processed(victim) >= 15,  # noqa: B023 - awaited at once
                    60,
                    f"victim {round_} to be mid-stream",
                )
                victim.kill()
                victims.append(victim)
                workers[0] = WorkerProcess(env)
        await wait_for_empty_queue(aws, 90)
        # The last restart can still be starting up when the queue empties; a SIGTERM that
        # lands before Python has installed its handler is the default kill, not a drain.
        for worker in workers:
            await wait_until(
                lambda: any(e.get("event") == "worker_started" for e in worker.logs()),  # noqa: B023 - awaited at once
                30,
                "a worker to start",
            )
        for worker in workers:
            worker.terminate()
        for worker in workers:
            await wait_until(lambda: not worker.alive(), 30, "a worker to stop")  # noqa: B023 - awaited at once
            assert worker.process.returncode == 0, worker.raw_log()[-2000:]
        checked = await check_against_reference(aws, traffic.envelopes, aws.settings)
        opened = await check_open_orders(aws, traffic.envelopes, aws.settings)
    finally:
        for worker in workers + victims:
            worker.close()
    print(
        f"deliveries={len(traffic.deliveries)} duplicates={traffic.duplicates} "
        f"{checked} {opened} {time.monotonic() - started:.1f}s"
    )


async def _feed_the_bus(
    aws: Aws, envelopes: list[dict[str, Any]], parts: int, every: float, fed: list[int]
) -> None:
    """PutEvents on the service's bus, in ``parts`` (each counted in ``fed`` once sent):
    the rule routes them to the queue."""
    size = -(-len(envelopes) // parts)
    for start in range(0, len(envelopes), size):
        chunk = envelopes[start : start + size]
        entries = [envelope_to_entry(e, aws.settings.event_bus) for e in chunk]
        assert await put_entries(aws.clients.events, entries) == len(entries)
        fed.append(len(entries))
        await anyio.sleep(every)


PARTS = 12


async def test_open_orders_exact_after_sigkill_and_restart(aws: Aws) -> None:
    # Two rounds, each through the bus while the worker dies: half of the deliveries, a
    # SIGKILL once the worker is mid-stream, a restart that drains, then every tenant's
    # stored open count against the reference of what was sent so far (many orders are
    # open there: their endings are in the second half); then the rest, the same again,
    # with the last orders of the traffic never completed. Two crashed flushes can hold the
    # same message: the redrive threshold is raised so that nothing good reaches the DLQ.
    await set_max_receive_count(aws, 10)
    traffic = messy_traffic(110, seed=11, open_at_end=12)
    started = time.monotonic()
    half = len(traffic.deliveries) // 2
    rounds = (traffic.deliveries[:half], traffic.deliveries[half:])
    env = worker_env(aws.settings)
    worker = WorkerProcess(env)
    dead: list[WorkerProcess] = []
    sent: list[dict[str, Any]] = []
    checked = []
    try:
        for number, new in enumerate(rounds):
            sent += new
            before = _processed(worker)
            fed: list[int] = []
            async with anyio.create_task_group() as feeding:
                feeding.start_soon(_feed_the_bus, aws, new, PARTS, 0.8, fed)
                await wait_until(
                    lambda: _processed(worker) >= before + 15,  # noqa: B023 - awaited at once
                    60,
                    f"worker {number} to be mid-stream",
                )
                assert worker.alive(), worker.raw_log()[-2000:]
                worker.kill()
                dead.append(worker)
                assert len(fed) < PARTS, "killed before the round's traffic was all sent"
                killed_at = f"killed after {len(fed)}/{PARTS} parts"
                worker = WorkerProcess(env)
            await wait_for_empty_queue(aws, 60)
            opened = await check_open_orders(aws, sent, aws.settings)
            assert opened.open_orders > 0, "some orders are open"
            checked.append(
                f"round {number}: {killed_at}, {opened} ({time.monotonic() - started:.1f}s)"
            )
        await wait_until(lambda: worker.logged("worker_started"), 30, "the last worker to start")
        worker.terminate()
        await wait_until(lambda: not worker.alive(), 30, "the last worker to stop")
        assert worker.process.returncode == 0, worker.raw_log()[-2000:]
        windows = await check_against_reference(aws, traffic.envelopes, aws.settings)
    finally:
        for process in (*dead, worker):
            process.close()
    print(f"{'; '.join(checked)}; {windows} {time.monotonic() - started:.1f}s")
