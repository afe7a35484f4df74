"""Dependencies misbehaving: throttling and 5xx, an outage, latency beyond the visibility timeout."""

from __future__ import annotations

import time

import anyio
import pytest

from service.app import run_worker
from service.metrics import Metrics
from service.readiness import Health
from tests.helpers import Aws, aws_calls, wait_until
from tests.reliability.harness import (
    burst_worker,
    check_against_reference,
    send_bodies,
    wait_for_empty_queue,
)
from tests.reliability.proxy import FaultProxy
from tests.reliability.traffic import messy_traffic

pytestmark = pytest.mark.reliability


async def test_throttling_and_5xx_on_a_fifth_of_requests(aws: Aws, proxy: FaultProxy) -> None:
    traffic = messy_traffic(110, seed=4)
    await send_bodies(aws, traffic.bodies)
    # No heartbeat in this test (a 60 s visibility timeout puts the first one 20 s into a
    # flush): a flush's end cancels its heartbeat, at times with a request already counted
    # as sent but not yet on the wire, and this test counts requests exactly (CI once saw
    # 148 sent, 147 answered). test_flushes_slower_than_the_visibility_timeout covers them.
    settings = aws.settings.through(proxy.url).model_copy(update={"visibility_timeout_seconds": 60})
    # A fifth of requests fail, throttling and 5xx in turn: a schedule, not dice, so the
    # counts below follow from the number of requests.
    proxy.configure(fault_every=5)
    metrics = Metrics()
    started = time.monotonic()
    await burst_worker(settings, metrics)
    elapsed = time.monotonic() - started
    requests = proxy.scheduled("faulted")
    proxy.configure()
    checked = await check_against_reference(aws, traffic.envelopes, settings)
    throttled, failed = proxy.injected_total("throttled"), proxy.injected_total("5xx")
    retries = sum(
        s.value
        for s in next(iter(metrics.aws_retries.collect())).samples
        if s.name.endswith("_total")
    )
    calls = aws_calls(metrics)
    sent = sum(calls.values())
    print(
        f"requests={requests} sent={sent} throttled={throttled} 5xx={failed} retries={retries} "
        f"{checked} "
        f"{elapsed:.1f}s"
    )
    assert throttled + failed == requests // 5
    assert throttled >= failed >= throttled - 1
    # Flushes share calls across receives (~150 requests in all), but receiving and deleting
    # the traffic's messages alone takes more than 50 requests: at least 5 faults of each kind.
    assert len(traffic.bodies) >= 250
    assert failed >= 5
    # Every request the proxy answered was one the worker sent, and every fault was retried
    # (by botocore's second attempt or, past it, by the service), since the windows match.
    assert sent == requests
    assert calls.get("sqs.ChangeMessageVisibilityBatch", 0) == 0


async def _readyz(port: int) -> int:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        with anyio.move_on_after(5):
            while True:
                try:
                    answer += await stream.receive()
                except anyio.EndOfStream:
                    break
    return int(answer.split(b" ", 2)[1])


async def test_emulator_unreachable_for_10_s_mid_stream(aws: Aws, proxy: FaultProxy) -> None:
    traffic = messy_traffic(100, seed=3)
    bodies = traffic.bodies
    await send_bodies(aws, bodies[: len(bodies) // 2])
    settings = aws.settings.through(proxy.url)
    metrics = Metrics()
    health = Health(metrics)
    seen: list[int] = []
    started = time.monotonic()

    async def watch_readiness() -> None:
        while True:
            if health.port is not None:
                status = await _readyz(health.port)
                if not seen or seen[-1] != status:
                    seen.append(status)
            await anyio.sleep(0.1)

    async with anyio.create_task_group() as group:
        worker = await group.start(
            lambda task_status: run_worker(
                settings,
                install_signals=False,
                metrics=metrics,
                health=health,
                task_status=task_status,
            )
        )
        group.start_soon(watch_readiness)
        await wait_until(lambda: metrics.messages_processed._value.get() >= 40, 60, "40 processed")
        await send_bodies(aws, bodies[len(bodies) // 2 :])  # traffic keeps arriving
        proxy.blackhole()  # no answers at all
        await anyio.sleep(5)
        proxy.refuse()  # then connection refused
        await anyio.sleep(5)
        proxy.restore()
        await wait_until(lambda: health.ready, 60, "readiness to come back")
        await wait_for_empty_queue(aws, 90)
        worker.stop()
        group.cancel_scope.cancel()
    outage = {k: proxy.injected_total(k) for k in ("blackholed",)}
    checked = await check_against_reference(aws, traffic.envelopes, settings)
    print(f"readyz={seen} {outage} {checked} {time.monotonic() - started:.1f}s")
    assert seen[0] == 200 and 503 in seen and seen[-1] == 200, seen


async def test_flushes_slower_than_the_visibility_timeout(aws: Aws, proxy: FaultProxy) -> None:
    traffic = messy_traffic(40, seed=5)
    await send_bodies(aws, traffic.bodies)
    settings = aws.settings.through(proxy.url)
    assert settings.visibility_timeout_seconds == 5
    # 6 s on a quarter of the window writes and heartbeats: flushes outlive the 5 s
    # visibility timeout; a late heartbeat lets a flush's messages reappear meanwhile.
    # A schedule, not dice: the first two order or window writes take 6 s, so the first
    # flushes outlive the 5 s visibility timeout and only their heartbeats (never delayed
    # here: a heartbeat of a large flush is several requests, and delaying any of them
    # would make "extended" depend on flush sizes) keep their messages invisible; after
    # that every 4th write is slow too.
    writes = frozenset({"PutItem", "TransactWriteItems"})
    proxy.configure(
        latency=6.0,
        latency_first=2,
        latency_first_operations=writes,
        latency_every=4,
        latency_operations=writes,
    )
    first, second = Metrics(), Metrics()
    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(burst_worker, settings, first)
        group.start_soon(burst_worker, settings, second)
    proxy.configure()
    checked = await check_against_reference(aws, traffic.envelopes, settings)
    extensions = (
        first.visibility_extensions._value.get() + second.visibility_extensions._value.get()
    )
    redelivered = first.messages_redelivered._value.get() + second.messages_redelivered._value.get()
    delayed = proxy.injected_total("delayed")
    print(
        f"delayed={delayed} extensions={extensions} redelivered={redelivered} {checked} "
        f"{time.monotonic() - started:.1f}s"
    )
    assert delayed >= 2
    assert extensions > 0
