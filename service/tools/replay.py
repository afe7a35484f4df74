"""Offline replay: recorded events through the same pure core, final windows out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.core.events import parse_envelope
from service.core.orders import Role
from service.core.pairing import OrderBook, Paired, outcome
from service.core.window import Window, WindowKey
from service.errors import PoisonMessageError

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
    it would have live. The loop is the hot path of ``wait-times replay``: it keeps to
    local names and skips every step an event cannot affect.
    """
    book = OrderBook(ttl_seconds)
    apply = book.apply
    windows: dict[WindowKey, Window] = {}
    result = ReplayResult(windows)
    poison = result.poison
    ignored = anomalies = 0
    now = 0
    index = 0
    cancelled = Role.CANCELLED
    for index, envelope in enumerate(envelopes, 1):
        try:
            if type(envelope) is PoisonMessageError:
                raise envelope
            event = parse_envelope(envelope, source=source)
        except PoisonMessageError as exc:
            poison[exc.reason] = poison.get(exc.reason, 0) + 1
            continue
        if event is None:
            ignored += 1
            continue
        now = max(now, event.time)
        record = apply(event, now)
        if record is None:
            continue
        found = outcome(record, max_wait_seconds)
        if found is None:
            pass
        elif type(found) is Paired:
            current = windows.get(found.key)
            if current is None:
                current = Window(window_size)
            windows[found.key] = current.merge_one(found.entry)
        elif event.role is not cancelled:
            anomalies += 1
        if index % EXPIRE_EVERY == 0:
            book.expire(now)
    result.events = index
    result.ignored = ignored
    result.anomalies = anomalies
    return result


class NotEventsError(ValueError):
    """A file that is neither a JSON array nor JSON Lines at all: nothing in it decodes."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{path} is not JSON: expected a JSON array of events, or JSON Lines (one event "
            f"per line) ({' '.join(detail.split())})"
        )


def read_events(path: Path) -> Iterator[Any]:
    """Envelopes from a JSON array, a single (possibly pretty-printed) object, or JSON Lines.

    JSON Lines are streamed, so a large file is never held in memory twice. An
    undecodable line is yielded as a PoisonMessageError, so one bad line is counted and
    skipped instead of ending the replay. A file of which nothing decodes (truncated
    JSON, random bytes) raises NotEventsError.
    """
    with path.open("rb") as handle:
        head = handle.read(1)
        while head in (b" ", b"\n", b"\r", b"\t"):
            head = handle.read(1)
        handle.seek(0)
        if head == b"[":
            try:
                decoded = orjson.loads(handle.read())
            except orjson.JSONDecodeError as exc:
                raise NotEventsError(path, str(exc)) from None
            yield from decoded
            return
        first = handle.readline()
        try:
            decoded = orjson.loads(first)
        except orjson.JSONDecodeError as exc:
            text = first + handle.read()
            try:
                yield orjson.loads(text)
            except orjson.JSONDecodeError:
                lines = list(_lines(path, text.splitlines(keepends=True)))
                if lines and all(type(line) is PoisonMessageError for line in lines):
                    raise NotEventsError(path, str(exc)) from None
                yield from lines
            return
        yield decoded
        yield from _lines(path, handle, start=2)


def _lines(path: Path, lines: Iterable[bytes], start: int = 1) -> Iterator[Any]:
    loads = orjson.loads
    for number, line in enumerate(lines, start):
        try:
            yield loads(line)
        except orjson.JSONDecodeError as exc:
            if line.strip():
                yield PoisonMessageError("not_json", f"{path}:{number}: {exc}")
