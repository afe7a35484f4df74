"""Capped exponential backoff with full jitter: growth, cap, and the spread of the jitter."""

from __future__ import annotations

import itertools
import random

import pytest

from service.backoff import CONTENTION, DEPENDENCY_RETRY, Backoff

pytestmark = pytest.mark.unit


def test_the_ceiling_doubles_with_each_attempt_until_the_cap() -> None:
    backoff = Backoff(base=0.1, cap=3.0)
    ceilings = [backoff.ceiling(attempt) for attempt in range(8)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0])
    # Exponential, not linear: each step before the cap is twice the last.
    assert all(b == pytest.approx(2 * a) for a, b in itertools.pairwise(ceilings[:5]))


def test_huge_and_negative_attempts_stay_within_bounds() -> None:
    backoff = Backoff(base=0.5, cap=10.0)
    assert backoff.ceiling(10_000) == 10.0
    assert backoff.ceiling(-3) == 0.5


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(7))
    delays = [backoff.delay(3) for _ in range(4000)]  # ceiling 8.0
    assert min(delays) >= 0.0 and max(delays) <= 8.0
    # Uniform over [0, 8]: every eighth of the range is hit about equally often.
    buckets = [0] * 8
    for delay in delays:
        buckets[min(int(delay), 7)] += 1
    assert all(400 < count < 600 for count in buckets), buckets
    assert sum(delays) / len(delays) == pytest.approx(4.0, rel=0.05)


def test_the_named_policies() -> None:
    assert DEPENDENCY_RETRY.ceiling(0) == 0.5 and DEPENDENCY_RETRY.ceiling(10) == 10.0
    assert CONTENTION.ceiling(0) == 0.05 and CONTENTION.ceiling(10) == 2.0
