"""Capped exponential backoff with full jitter, and the service's named backoff policies.

One place for every delay the service waits between attempts (docs/decisions.md, "One
retry policy"). Pure: no clock, no sleeping; the caller sleeps for ``delay(attempt)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``attempt`` (0-based): U(0, min(cap, base * 2**attempt))."""

    base: float
    cap: float
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt``: doubles up to ``cap``."""
        exponent = min(max(attempt, 0), 32)
        return min(self.cap, self.base * float(2**exponent))

    def delay(self, attempt: int) -> float:
        """A jittered delay for retry number ``attempt`` (full jitter, AWS's recommendation)."""
        return self.rng.uniform(0.0, self.ceiling(attempt))


# The worker's outer loop (and its start-up wait for the endpoint): the only loop that
# retries an error without bound; readiness is false while it does.
DEPENDENCY_RETRY = Backoff(base=0.5, cap=10.0)
# Contention and partial answers inside one call's result, never error retries: a window
# write that lost a race is re-read and merged again, DynamoDB's UnprocessedKeys and
# EventBridge's refused entries are asked for again.
CONTENTION = Backoff(base=0.05, cap=2.0)
