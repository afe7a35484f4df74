"""A messy stream, of the kind a recording of a real bus gives: built from the clean one.

About half the lines are of types the service ignores, about 10% are delivered twice (the
same envelope, as at-least-once delivery repeats it), and delivery is jittered (each
event late by an exponential delay, 20 s on average, at most 120 s), so a completion can
come before its submission. Seeded: every run reads the same bytes.
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import orjson

from service.core.events import role_of
from service.tools.coffeebar import PlannedEvent

DUPLICATES = 0.10
JITTER_MEAN_SECONDS = 20.0
JITTER_MAX_SECONDS = 120.0


def generate(clean: Path, path: Path, seed: int = 7) -> None:
    """Write ``path``: the clean file's consumed events, as many ignored ones, duplicates
    and jittered delivery (JSON Lines, one envelope a line)."""
    rng = random.Random(seed)
    consumed: list[bytes] = []
    ignored: list[bytes] = []
    with clean.open("rb") as handle:
        for line in handle:
            envelope = orjson.loads(line)
            (ignored if role_of(envelope["detail-type"]) is None else consumed).append(line)
    rng.shuffle(ignored)
    lines = consumed + ignored[: len(consumed)]
    lines += [line for line in lines if rng.random() < DUPLICATES]
    delivered = []
    for line in lines:
        at = orjson.loads(line)["time"]
        late = min(rng.expovariate(1 / JITTER_MEAN_SECONDS), JITTER_MAX_SECONDS)
        delivered.append((at, late, rng.random(), line))
    # Delivery order: event time plus its delay; ties at random.
    delivered.sort(key=lambda item: (_epoch(item[0]) + item[1], item[2]))
    with path.open("wb") as out:
        out.writelines(line for *_, line in delivered)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def messy_planned(events: list[PlannedEvent], seed: int = 7) -> list[PlannedEvent]:
    """The same mess for a stream put on the bus: as many events of ignored types as
    consumed ones (the rule keeps them off the queue), 10% put twice, and the order of
    putting jittered as ``generate`` jitters delivery."""
    rng = random.Random(seed)
    consumed = [e for e in events if role_of(e.detail_type) is not None]
    ignored = [e for e in events if role_of(e.detail_type) is None]
    rng.shuffle(ignored)
    chosen = consumed + ignored[: len(consumed)]
    chosen += [e for e in chosen if rng.random() < DUPLICATES]
    late = [min(rng.expovariate(1 / JITTER_MEAN_SECONDS), JITTER_MAX_SECONDS) for _ in chosen]
    ties = [rng.random() for _ in chosen]
    order = sorted(range(len(chosen)), key=lambda i: (chosen[i].at + late[i], ties[i]))
    return [chosen[i] for i in order]
