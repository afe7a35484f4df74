"""Dependencies misbehaving: throttling and 5xx, an outage, latency beyond the visibility timeout."""

from __future__ import annotations

import time

import pytest

from service.metrics import Metrics
from tests.conftest import Aws
from tests.reliability.harness import (
    burst_worker,
    check_against_reference,
    send_bodies,
)
from tests.reliability.proxy import FaultProxy
from tests.reliability.traffic import messy_traffic

pytestmark = pytest.mark.slow


async def test_throttling_and_5xx_on_a_fifth_of_requests(aws: Aws, proxy: FaultProxy) -> None:
    traffic = messy_traffic(160, seed=4)
    await send_bodies(aws, traffic.bodies)
    settings = aws.settings.model_copy(update={"endpoint_url": proxy.url})
    proxy.configure(throttle_rate=0.10, error_rate=0.10)
    metrics = Metrics()
    started = time.monotonic()
    await burst_worker(settings, metrics)
    elapsed = time.monotonic() - started
    proxy.configure()
    checked = await check_against_reference(aws, traffic.envelopes, settings)
    throttled, failed = proxy.injected_total("throttled"), proxy.injected_total("5xx")
    retries = sum(
        s.value for s in metrics.aws_retries.collect()[0].samples if s.name.endswith("_total")
    )
    print(f"throttled={throttled} 5xx={failed} retries={retries} {checked} {elapsed:.1f}s")
    assert throttled > 20 and failed > 20
    assert retries > 0
