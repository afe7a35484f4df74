"""A messy stream, of the kind a recording of a real bus gives: built from the clean one.

About half the lines are of types the service ignores, about 10% are delivered twice (the
same envelope, as at-least-once delivery repeats it), and delivery is jittered (each
event late by an exponential delay, 20 s on average, at most 120 s), so a completion can
come before its submission. Seeded: every run reads the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import orjson

# bench.compare carries this module into older trees, whose events were one module.
try:
    from service.core.consumed import role_of
except ImportError:
    from service.core.events import role_of  # type: ignore[import-untyped,no-redef]
from service.tools.coffeebar import PlannedEvent

DUPLICATES = 0.10
JITTER_MEAN_SECONDS = 20.0
JITTER_MAX_SECONDS = 120.0
T = TypeVar("T")


def generate(clean: Path, path: Path, seed: int = 7) -> None:
    """Write ``path``: the clean file's consumed events, as many ignored ones, duplicates
    and jittered delivery (JSON Lines, one envelope a line)."""
    consumed: list[bytes] = []
    ignored: list[bytes] = []
    with clean.open("rb") as handle:
        for line in handle:
            envelope = orjson.loads(line)
            (ignored if role_of(envelope["detail-type"]) is None else consumed).append(line)
    delivered = _mess(consumed, ignored, lambda line: _epoch(orjson.loads(line)["time"]), seed)
    with path.open("wb") as out:
        out.writelines(delivered)


def _mess(consumed: list[T], ignored: list[T], time_of: Callable[[T], float], seed: int) -> list[T]:
    """The mess itself, for lines or planned events alike: as many ignored items as
    consumed ones, ``DUPLICATES`` of them twice, in the order of their time plus an
    exponential delay (ties at random)."""
    rng = random.Random(seed)
    ignored = list(ignored)
    rng.shuffle(ignored)
    chosen = consumed + ignored[: len(consumed)]
    chosen += [item for item in chosen if rng.random() < DUPLICATES]
    delivered = []
    for item in chosen:
        late = min(rng.expovariate(1 / JITTER_MEAN_SECONDS), JITTER_MAX_SECONDS)
        delivered.append((time_of(item) + late, rng.random(), item))
    delivered.sort(key=lambda entry: (entry[0], entry[1]))
    return [item for *_, item in delivered]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def messy_planned(events: list[PlannedEvent], seed: int = 7) -> list[PlannedEvent]:
    """The same mess for a stream put on the bus: as many events of ignored types as
    consumed ones (the rule keeps them off the queue), 10% put twice, and the order of
    putting jittered as ``generate`` jitters delivery."""
    consumed = [e for e in events if role_of(e.detail_type) is not None]
    ignored = [e for e in events if role_of(e.detail_type) is None]
    return _mess(consumed, ignored, lambda event: event.at, seed)
