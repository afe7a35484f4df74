"""Offline replay: recorded events through the same pure core, final windows out."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from service.core.consumed import (
    MAX_BODY_BYTES,
    known_roles,
    parse_classified,
    parse_envelope,
)
from service.core.earliest import Earliest, EarliestBook, top_by_key
from service.core.estimators.base import EstimateOptions
from service.core.estimators.registry import estimate_options
from service.core.orders import OrderEvent, Role
from service.core.pairing import OrderRecord, top
from service.core.published import WaitEstimate, estimate_detail
from service.core.tenant_index import EstimateBook, Versioned
from service.core.window import Window, WindowEntry, WindowKey
from service.errors import PoisonMessageError
from service.settings import setting_default

SWEEP_EVERY_SECONDS = 3600  # of event time: how often expired records leave memory
# Lines: the fewest between two collections after poison lines (settled_heap).
COLLECT_EVERY_LINES = 100_000


@contextmanager
def settled_heap() -> Iterator[None]:
    """While replaying, the cyclic collector is off: the records replay holds are tuples
    without cycles, and at Python's default thresholds the collector rescanned them for a
    quarter of replay's time (docs/performance.md, "11. Replay as a backtest engine").
    Replay's own path makes no cyclic garbage (a test holds it to that) except through a
    poison line's exception, whose traceback may hold a cycle: after one, ``_feed``
    collects what is new (``_settle_heap``) at most every ``COLLECT_EVERY_LINES`` lines
    and freezes what survives, so each object is scanned at most once. A clean stream is
    never scanned at all. On the way out everything is frozen, then unfrozen, which puts
    it in the oldest generation without a scan (the records' last settling runs inside:
    after ``gc.unfreeze`` every collection of the oldest generation would scan all of
    them), and the collector is re-enabled if it was, so a cycle made meanwhile is still
    collected later."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()


def _settle_heap(events: int) -> int:
    """Collect what is new since the last call, freeze what survives (``settled_heap``);
    the line count before which not to collect again."""
    gc.collect(0)
    gc.freeze()
    return events + COLLECT_EVERY_LINES


@dataclass
class ReplayResult:
    """Final windows plus what was skipped, for the summary on stderr."""

    windows: dict[WindowKey, Window]
    events: int = 0
    ignored: int = 0
    anomalies: int = 0
    late_halves: int = 0
    poison: dict[str, int] = field(default_factory=dict)

    def as_rows(self) -> list[dict[str, Any]]:
        """The contract's output: ``{eventId, drink, duration, samples}`` sorted by key.

        A key with no counted order has no row (its window publishes nothing).
        """
        return [
            {
                "eventId": tenant,
                "drink": drink,
                "duration": window.duration,
                "samples": window.samples,
            }
            for (tenant, drink), window in sorted(self.windows.items())
            if window.samples
        ]


class _Settled:
    """What expired records left in each key: its top N entries, and anomalies counted."""

    def __init__(self, size: int, max_wait_seconds: int) -> None:
        self.size = size
        self.max_wait_seconds = max_wait_seconds
        self.entries: dict[WindowKey, tuple[WindowEntry, ...]] = {}
        self.anomalies = 0

    def add(self, records: Iterable[Earliest]) -> None:
        grown, anomalies = top_by_key(records, self.max_wait_seconds, self.size)
        self.anomalies += anomalies
        for key, entries in grown.items():
            found = self.entries.get(key)
            self.entries[key] = entries if found is None else top((*found, *entries), self.size)


def replay(
    envelopes: Iterable[Any],
    *,
    window_size: int = setting_default("window_size"),
    max_wait_seconds: int = setting_default("max_wait_seconds"),
    ttl_seconds: int = setting_default("pending_ttl_seconds"),
    max_clock_skew_seconds: int = setting_default("max_clock_skew_seconds"),
    source: str | None = None,
    wall_clock: float | None = None,
    completion: str = setting_default("completion_event"),
) -> ReplayResult:
    """Run decoded envelopes through the same pairing rules as the worker.

    The clock is the latest accepted event time, so a recording expires pending records
    as it would have live. An event later than the wall clock plus the allowed skew is
    refused as the worker refuses it (unprocessable), and so cannot move the clock. Each
    order is kept as the projection of its record that ``outcome`` reads (``EarliestBook``,
    held to ``join_event`` through ``OrderBook`` by a property test): a half of an order
    whose record has expired is counted (``late_halves``) and never paired. The result
    does not depend on the order of the envelopes, only on their set (and the expiry
    horizon).
    """
    not_after = int(time.time() if wall_clock is None else wall_clock) + max_clock_skew_seconds
    book = EarliestBook(ttl_seconds)
    settled = _Settled(window_size, max_wait_seconds)
    result = ReplayResult({})
    with settled_heap():
        _feed(envelopes, book, settled, result, source, not_after, completion)
        # Still inside: settling the last records allocates, and once the collector is on
        # again every collection of the oldest generation would scan all of them.
        settled.add(book.take_stale())
        settled.add(book.records.values())
    result.windows = {key: Window(window_size, entries) for key, entries in settled.entries.items()}
    result.anomalies = settled.anomalies
    result.late_halves = book.late_halves
    return result


def _feed(
    envelopes: Iterable[Any],
    book: EarliestBook,
    settled: _Settled,
    result: ReplayResult,
    source: str | None,
    not_after: int,
    completion: str,
) -> None:
    """The hot loop of ``wait-times replay``: parse, join, sweep expired records now and then.
    One function on purpose: a call per line costs more than its branches."""
    apply = book.apply
    classified = parse_classified
    roles = known_roles(completion)
    poison = result.poison
    ignored = events = now = sweep_at = collect_at = 0
    for envelope in envelopes:
        events += 1
        # Half the lines of a real stream are of types the service ignores: a look-up
        # decides, as parse_envelope would (a type not classified yet goes to it).
        role = None
        if type(envelope) is dict:
            detail_type = envelope.get("detail-type")
            if type(detail_type) is str:
                role = roles.get(detail_type, 0)
                if role is None:
                    ignored += 1
                    continue
        try:
            if type(role) is Role:  # not 0 (a type not classified yet), nor None (no dict)
                event = classified(envelope, role, source, not_after)
            elif type(envelope) is PoisonMessageError:
                raise envelope
            else:
                event = parse_envelope(
                    envelope, source=source, not_after=not_after, completion=completion
                )
        except PoisonMessageError as exc:
            poison[exc.reason] = poison.get(exc.reason, 0) + 1
            if events >= collect_at:  # its traceback may hold a cycle (settled_heap)
                collect_at = _settle_heap(events)
            continue
        if event is None:
            ignored += 1
            continue
        if event.time > now:  # noqa: PLR1730 - the hot path: cheaper than a call to max
            now = event.time
        apply(event, now)
        if now >= sweep_at:
            sweep_at = _sweep(book, settled, now)
    result.events = events
    result.ignored = ignored


def _sweep(book: EarliestBook, settled: _Settled, now: int) -> int:
    """Settle the records expired at ``now`` (once an hour of event time); when to sweep
    again."""
    book.expire(now)
    settled.add(book.take_stale())
    return now + SWEEP_EVERY_SECONDS


def replay_estimates(envelopes: Iterable[Any], **options: Any) -> Iterator[WaitEstimate]:
    """Every ``WaitEstimate`` detail the estimate's rules give for these events
    (``estimate_changes``, whose options it takes), as the models the worker publishes."""
    for found in estimate_changes(envelopes, **options):
        yield estimate_detail(found.estimate, found.version)


def estimate_changes(
    envelopes: Iterable[Any],
    *,
    max_wait_seconds: int = setting_default("max_wait_seconds"),
    ttl_seconds: int = setting_default("pending_ttl_seconds"),
    max_clock_skew_seconds: int = setting_default("max_clock_skew_seconds"),
    source: str | None = None,
    wall_clock: float | None = None,
    completion: str = setting_default("completion_event"),
    result: ReplayResult | None = None,
    estimates: EstimateOptions | None = None,
) -> Iterator[Versioned]:
    """Every estimate the estimate's rules publish for these events, at its version, replayed in
    time order (ties: by order id, then role) one at a time, as one message per flush:
    the worker publishes the same sequence, ``version`` aside (docs/design.md, "The wait
    estimate").

    Which events count is decided as ``replay`` decides it, in the files' order (the
    delivery order, for both modes): a half delivered after its order expired is late and
    left out, whatever its time (``delivered``), so the two modes give the same summary
    for the same lines. The rest are joined in time order, as records (``OrderRecord``),
    into the tenants' states and estimates of ``EstimateBook``; the clock is the latest
    accepted event time. ``result``, when given, receives the counts of the summary
    (events, ignored, unprocessable, anomalies, late halves). ``estimates``: the tenants'
    options, whose maximum wait then decides for both (None: the configured estimator at
    ``max_wait_seconds``).
    """
    summary = result if result is not None else ReplayResult({})
    not_after = int(time.time() if wall_clock is None else wall_clock) + max_clock_skew_seconds
    accepted: list[OrderEvent] = []
    for envelope in envelopes:
        summary.events += 1
        try:
            if type(envelope) is PoisonMessageError:
                raise envelope
            event = parse_envelope(
                envelope, source=source, not_after=not_after, completion=completion
            )
        except PoisonMessageError as exc:
            summary.poison[exc.reason] = summary.poison.get(exc.reason, 0) + 1
            continue
        if event is None:
            summary.ignored += 1
        else:
            accepted.append(event)
    # One maximum wait for both: what counts as an anomaly and what the tenants read.
    options = estimates or estimate_options(max_wait_seconds, setting_default("estimator"))
    joined = delivered(accepted, summary, ttl_seconds, options.max_wait_seconds)
    # Ties in time (whole seconds) by order id, then role: the output is the same whatever
    # the order of the files' lines within the expiry horizon.
    joined.sort(key=lambda e: (e.time, e.order_id, e.role.value))
    records: dict[str, OrderRecord] = {}
    estimates_book = EstimateBook(options)
    now = 0
    for event in joined:
        now = max(now, event.time)
        current = records.get(event.order_id)
        # No expiry here: ``delivered`` has left out every late half, and in time order
        # an order can look expired that its delivery did not expire (a half stamped
        # more than the TTL before its partner but delivered after it).
        record = (current or OrderRecord(event.order_id)).merge(event, now + ttl_seconds)
        if record is current:
            continue
        records[event.order_id] = record
        yield from estimates_book.update([record], now)


def delivered(
    accepted: list[OrderEvent], summary: ReplayResult, ttl_seconds: int, max_wait_seconds: int
) -> list[OrderEvent]:
    """The accepted events that join their order, in the order they were delivered, by
    ``replay``'s book and clock (``EarliestBook``; the clock is the latest event time so
    far): every event but the halves delivered after their order expired. Counts those
    (``late_halves``) and the anomalous orders (``anomalies``, as replay settles them)
    into ``summary``."""
    book = EarliestBook(ttl_seconds)
    joined = []
    now = 0
    for event in accepted:
        now = max(now, event.time)
        late = book.late_halves
        book.apply(event, now)
        if book.late_halves == late:
            joined.append(event)
    summary.late_halves = book.late_halves
    _, summary.anomalies = top_by_key(
        [*book.records.values(), *book.take_stale()], max_wait_seconds, 0
    )
    return joined


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
    undecodable line, or one over the limit of a message body (``MAX_BODY_BYTES``, the
    worker's), is yielded as a PoisonMessageError, so one bad line is counted and
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
        if _oversized(first):
            yield from _lines(path, chain([first], handle))
            return
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
        if len(line) > MAX_BODY_BYTES and _oversized(line):
            yield PoisonMessageError(
                "oversized", f"{path}:{number}: line of {len(line)} bytes > {MAX_BODY_BYTES}"
            )
            continue
        try:
            yield loads(line)
        except orjson.JSONDecodeError as exc:
            if line.strip():
                yield PoisonMessageError("not_json", f"{path}:{number}: {exc}")


def _oversized(line: bytes) -> bool:
    """Whether a line is over the limit of a message body (``decode_body``): the worker
    refuses such a message as ``oversized``, and so does replay, whatever it holds."""
    return len(line.rstrip(b"\r\n")) > MAX_BODY_BYTES
