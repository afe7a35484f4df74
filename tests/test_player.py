"""The event player's traffic generator."""

from __future__ import annotations

import json

import pytest

from service.tools.player import TrafficGenerator

pytestmark = pytest.mark.unit


def test_generated_traffic_is_reproducible_with_a_seed() -> None:
    def plan(seed: int) -> list[tuple[float, str, str]]:
        events = TrafficGenerator(seed=seed, rate=2, start=0).events(50)
        return [(e.at, e.detail_type, json.dumps(e.detail, sort_keys=True)) for e in events]

    assert plan(4) == plan(4)
    assert plan(4) != plan(5)
    kinds = {detail_type for _, detail_type, _ in plan(4)}
    assert {"OrderManager.WaitingCompletion", "OrderProcessor.orderFinished"} <= kinds
    assert any(k.endswith("-COMPLETED") for k in kinds)
