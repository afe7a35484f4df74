"""Offline replay: recorded events through the same pure core, final windows out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import PoisonMessageError
from service.events import Role, parse_envelope
from service.pairing import Anomalous, OrderBook, Paired, outcome
from service.window import Window, WindowKey

EXPIRE_EVERY = 10_000


@dataclass
class ReplayResult:
    """Final windows plus what was skipped, for the summary on stderr."""

    windows: dict[WindowKey, Window]
    events: int = 0
    ignored: int = 0
    anomalies: int = 0
    poison: dict[str, int] = field(default_factory=dict)

    def as_rows(self) -> list[dict[str, Any]]:
        """The contract's output: ``{eventId, drink, duration, samples}`` sorted by key."""
        return [
            {
                "eventId": tenant,
                "drink": drink,
                "duration": window.duration,
                "samples": window.samples,
            }
            for (tenant, drink), window in sorted(self.windows.items())
        ]


def replay(
    envelopes: Iterable[Any],
    *,
    window_size: int = 10,
    max_wait_seconds: int = 7200,
    ttl_seconds: int = 86400,
    source: str | None = None,
) -> ReplayResult:
    """Run decoded envelopes through pairing and windows in the given order.

    The clock is the latest event time seen, so a recording expires pending halves as
    it would have live.
    """
    book = OrderBook(ttl_seconds)
    windows: dict[WindowKey, Window] = {}
    result = ReplayResult(windows)
    now = 0
    for index, envelope in enumerate(envelopes, 1):
        result.events += 1
        try:
            if isinstance(envelope, PoisonMessageError):
                raise envelope
            event = parse_envelope(envelope, source=source)
        except PoisonMessageError as exc:
            result.poison[exc.reason] = result.poison.get(exc.reason, 0) + 1
            continue
        if event is None:
            result.ignored += 1
            continue
        now = max(now, event.time)
        record = book.apply(event, now)
        found = None if record is None else outcome(record, max_wait_seconds)
        if isinstance(found, Paired):
            current = windows.get(found.key)
            if current is None:
                current = windows[found.key] = Window(window_size)
            windows[found.key] = current.merge((found.entry,))
        elif isinstance(found, Anomalous) and event.role is not Role.CANCELLED:
            result.anomalies += 1
        if index % EXPIRE_EVERY == 0:
            book.expire(now)
    return result


def read_events(path: Path) -> Iterator[Any]:
    """Envelopes from a JSON array, a single JSON object, or JSON Lines.

    An undecodable JSON Lines line is yielded as a PoisonMessageError, so one bad line
    is counted and skipped instead of ending the replay.
    """
    with path.open("rb") as handle:
        head = handle.read(1)
        while head in (b" ", b"\n", b"\r", b"\t"):
            head = handle.read(1)
        handle.seek(0)
        if head == b"[":
            yield from json.load(handle)
            return
        text = handle.read()
    try:
        yield json.loads(text)
    except ValueError:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    yield PoisonMessageError("not_json", f"{path}:{number}: {exc}")
