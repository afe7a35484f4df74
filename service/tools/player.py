"""The event player: realistic Serverlesspresso order traffic, or a recording, onto the bus.

The traffic is a simulated coffee bar per tenant (``service.tools.coffeebar``: baristas,
one queue, rushes, impatient customers); this module puts it on the bus on time.

Generated traffic is stamped with a simulated clock that is never ahead of the wall clock:
it starts ``history`` seconds in the past, runs ``speed`` times faster than real time until
it has caught up with the wall clock, then plays in real time, for as long as it is left
running. (A clock that ran ahead would stamp events the worker refuses as from the future,
beyond ``WAIT_TIMES_MAX_CLOCK_SKEW_SECONDS``; one that wrapped back would stamp completions
older than those already in full windows, which never enter them.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import orjson
import structlog

from service.aws.publisher import put_events
from service.backoff import DEPENDENCY_RETRY
from service.errors import DependencyError
from service.settings import DEFAULT_SOURCE
from service.tools.coffeebar import MENU, TENANTS, PlannedEvent, Rush, TrafficGenerator

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_events.type_defs import PutEventsRequestEntryTypeDef

# The simulation lives in coffeebar (pure, no AWS); these names have always been here too.
__all__ = [
    "MENU",
    "TENANTS",
    "Clock",
    "PlannedEvent",
    "Rush",
    "Schedule",
    "TrafficGenerator",
    "WallClock",
    "default_history",
    "envelope_to_entry",
    "play_generated",
    "play_recording",
    "put_entries",
    "to_entry",
]

log = structlog.get_logger(__name__)

MAX_PUT_ATTEMPTS = 8
# How far in the past generated traffic starts by default: enough orders to fill every
# window at once, and a catch-up of a few minutes at the speeds compose and the demo use.
DEFAULT_HISTORY_SECONDS = 3600.0


class Clock(Protocol):
    """Where the player reads the time and how it waits (injected by tests)."""

    def time(self) -> float:
        """The wall clock, seconds since the epoch (what the worker's clock also reads)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait this many seconds."""
        ...


class WallClock:
    """The real clock: ``time.time()`` and ``anyio.sleep``."""

    def time(self) -> float:
        """Now, in seconds since the epoch."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Wait, cancellably."""
        await anyio.sleep(seconds)


def default_history(speed: float) -> float:
    """An hour when the clock can catch up (``speed`` 0 or above 1); else none, so that a
    clock at real time or slower starts at the wall clock instead of staying behind it."""
    return DEFAULT_HISTORY_SECONDS if speed == 0 or speed > 1 else 0.0


@dataclass(frozen=True)
class Schedule:
    """When each simulated instant is played on the wall clock.

    The simulated clock starts ``history`` seconds before ``started`` (the wall time the
    player began) and runs ``speed`` times faster than real time (0: as fast as the calls
    go) until it reaches the wall clock; from then on it is the wall clock. An event is
    therefore never played before the wall clock has reached its time.
    """

    started: float
    history: float
    speed: float

    @property
    def start(self) -> float:
        """The simulated time of the first event."""
        return self.started - self.history

    @property
    def catch_up_seconds(self) -> float | None:
        """Real seconds until the simulated clock reaches the wall clock; None: never (a
        speed below 1, or of 1 with some history, stays behind it)."""
        if self.speed == 0 or (self.history <= 0 and self.speed >= 1):
            return 0.0
        if self.speed <= 1:
            return None
        return self.history / (self.speed - 1)

    def due(self, at: float) -> float:
        """The wall time at which the event of simulated time ``at`` is played: paced by
        ``speed`` from the start, and never before ``at`` itself."""
        paced = self.started if self.speed == 0 else self.started + (at - self.start) / self.speed
        return max(paced, at)


def to_entry(
    event: PlannedEvent, bus: str, source: str = DEFAULT_SOURCE
) -> PutEventsRequestEntryTypeDef:
    """A PutEvents entry for a planned event, its envelope time the simulated time."""
    return {
        "EventBusName": bus,
        "Source": source,
        "DetailType": event.detail_type,
        "Detail": orjson.dumps(event.detail).decode(),
        "Time": datetime.fromtimestamp(int(event.at), UTC),
    }


def envelope_to_entry(envelope: dict[str, Any], bus: str) -> PutEventsRequestEntryTypeDef:
    """A PutEvents entry that reproduces a recorded envelope (its time included)."""
    entry: PutEventsRequestEntryTypeDef = {
        "EventBusName": bus,
        "Source": envelope.get("source", DEFAULT_SOURCE),
        "DetailType": envelope["detail-type"],
        "Detail": json.dumps(envelope.get("detail", {})),
        "Resources": list(envelope.get("resources", [])),
    }
    if "time" in envelope:
        entry["Time"] = datetime.fromisoformat(str(envelope["time"]).replace("Z", "+00:00"))
    return entry


async def put_entries(
    events_client: EventBridgeClient,
    entries: Sequence[PutEventsRequestEntryTypeDef],
    progress: Callable[[int], None] | None = None,
) -> int:
    """PutEvents in tens (``service.aws.publisher.put_events``); returns how many went out.

    The player is its own outer loop: a call that fails retriably is tried again, a few
    times, with the service's dependency backoff; entries still refused are reported.
    """

    def accepted(count: int, _refused: int) -> None:
        if progress is not None:
            progress(count)

    for attempt in range(MAX_PUT_ATTEMPTS):
        try:
            refused = await put_events(events_client, entries, on_result=accepted, rounds=3)
        except DependencyError as exc:
            if not exc.retriable or attempt + 1 == MAX_PUT_ATTEMPTS:
                raise
            await anyio.sleep(DEPENDENCY_RETRY.delay(attempt))
        else:
            if refused:
                log.warning("player_entries_refused", refused=len(refused))
            return len(entries) - len(refused)
    return 0


async def play_generated(
    events_client: EventBridgeClient,
    bus: str,
    *,
    orders: int | None,
    duration: float | None,
    rate: float,
    speed: float,
    seed: int,
    tenants: Sequence[str] = TENANTS,
    progress: Callable[[int], None] | None = None,
    history: float | None = None,
    clock: Clock | None = None,
    rush: Rush | None = None,
    baristas: int | None = None,
) -> int:
    """Generate traffic until ``orders`` placed orders or ``duration`` real seconds (both
    None: until cancelled); returns how many events were accepted.

    The simulated clock starts ``history`` seconds ago and runs ``speed`` times faster than
    real time (0: no pacing) until it has caught up with the wall clock, then in real time
    (``Schedule``); ``history`` None: ``default_history(speed)``. ``progress`` is told how
    many events were accepted after every PutEvents call. The traffic is the coffee bar of
    ``service.tools.coffeebar``: ``rate`` is its base rate over all tenants, ``rush`` (None:
    ``Rush()``) its rushes, a rush beginning when the player starts unless anchored
    elsewhere, ``baristas`` (None: 2 to 4 per tenant from the seed) its staff.
    """
    if history is None:
        history = default_history(speed)
    if rate <= 0 or speed < 0 or history < 0 or not tenants:
        raise ValueError("rate must be > 0, speed and history >= 0, and tenants not empty")
    clock = clock or WallClock()
    schedule = Schedule(clock.time(), history, speed)
    # Anchored at the wall clock's start, not the simulated one: whatever the history, the
    # live part begins in a rush, so the demo shows one within its first minutes.
    rush = (rush or Rush()).anchored(schedule.started)
    generator = TrafficGenerator(
        seed=seed,
        rate=rate,
        tenants=tenants,
        start=schedule.start,
        rush=rush,
        baristas=baristas,
    )
    catch_up = schedule.catch_up_seconds
    log.info(
        "player_started",
        simulated_start=datetime.fromtimestamp(int(schedule.start), UTC).isoformat(),
        speed=speed,
        rate=rate,
        seed=seed,
        rush=f"x{rush.factor:g} for {rush.length:g}s every {rush.every:g}s",
        baristas={tenant: bar.baristas for tenant, bar in generator.bars.items()},
        real_time_after_s=None if catch_up is None else round(catch_up, 1),
    )
    sent = 0
    caught_up = False
    pending: list[PutEventsRequestEntryTypeDef] = []
    for event in generator.events(orders):
        due = schedule.due(event.at)
        if duration is not None and max(due, clock.time()) - schedule.started >= duration:
            break
        if due > clock.time():
            if pending:
                sent += await put_entries(events_client, pending, progress)
                pending = []
            while (now := clock.time()) < due:
                await clock.sleep(due - now)
        if not caught_up and due <= event.at:
            caught_up = True
            log.info("player_caught_up", events=sent + len(pending))
        pending.append(to_entry(event, bus))
        if len(pending) == 10:
            sent += await put_entries(events_client, pending, progress)
            pending = []
    sent += await put_entries(events_client, pending, progress)
    log.info(
        "player_finished",
        events=sent,
        orders=generator.placed,
        turned_away=generator.turned_away,
    )
    return sent


async def play_recording(
    events_client: EventBridgeClient, bus: str, envelopes: Sequence[dict[str, Any]], *, speed: float
) -> int:
    """Replay a recording onto the bus with its original spacing divided by ``speed``."""
    if not envelopes:
        return 0
    times = [
        datetime.fromisoformat(str(e.get("time", "")).replace("Z", "+00:00")).timestamp()
        if e.get("time")
        else None
        for e in envelopes
    ]
    first = next((t for t in times if t is not None), 0.0)
    started = anyio.current_time()
    sent = 0
    pending: list[PutEventsRequestEntryTypeDef] = []
    for envelope, at in zip(envelopes, times, strict=True):
        if speed > 0 and at is not None:
            due = (at - first) / speed
            if due > anyio.current_time() - started:
                sent += await put_entries(events_client, pending)
                pending = []
                await anyio.sleep(due - (anyio.current_time() - started))
        pending.append(envelope_to_entry(envelope, bus))
        if len(pending) == 10:
            sent += await put_entries(events_client, pending)
            pending = []
    sent += await put_entries(events_client, pending)
    log.info("player_finished", events=sent)
    return sent
