"""The event player: its traffic generator and its clock."""

from __future__ import annotations

import bisect
import json
import math
from typing import Any, cast

import orjson
import pytest
import yaml

from service.cli import build_parser, play_options
from service.core.events import parse_body
from service.core.orders import Role
from service.settings import Settings
from service.tools.player import Schedule, TrafficGenerator, play_generated
from tests.envelopes import envelope
from tests.helpers import ROOT


@pytest.mark.unit
def test_generated_traffic_is_reproducible_with_a_seed() -> None:
    def plan(seed: int) -> list[tuple[float, str, str]]:
        events = TrafficGenerator(seed=seed, rate=2, start=0).events(50)
        return [(e.at, e.detail_type, json.dumps(e.detail, sort_keys=True)) for e in events]

    assert plan(4) == plan(4)
    assert plan(4) != plan(5)
    kinds = {detail_type for _, detail_type, _ in plan(4)}
    assert {"OrderManager.WaitingCompletion", "OrderProcessor.orderFinished"} <= kinds
    assert any(k.endswith("-COMPLETED") for k in kinds)


# --- the player's clock, with compose's exact arguments, over a simulated week -------------

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
WALL_START = 1_790_000_000.0  # any instant: the clock below is the only one the player reads


class WeekOver(Exception):
    """The simulated time is over: ends the endless player."""


class SimulatedClock:
    """Wall time that jumps forward when the player sleeps: a week in seconds of CPU."""

    def __init__(self, start: float, until: float) -> None:
        self.now = start
        self.until = until

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        if self.now >= self.until:
            raise WeekOver


class CheckingBus:
    """EventBridge as the player calls it; every entry is delivered to the worker's parser
    at the simulated wall time of the call, with the worker's future-skew rule."""

    def __init__(self, clock: SimulatedClock, settings: Settings) -> None:
        self.clock = clock
        self.settings = settings
        self.sent: list[tuple[float, float]] = []  # (wall time of the call, event time)
        self.orders = 0

    async def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        now = self.clock.time()
        not_after = int(now) + self.settings.max_clock_skew_seconds
        source = self.settings.source
        for entry in Entries:
            at = entry["Time"].timestamp()
            # The envelope EventBridge delivers to the queue, around the entry's detail.
            delivered = envelope(
                detail_type=entry["DetailType"],
                detail=orjson.loads(entry["Detail"]),
                at=at,
                id="0",
                source=entry["Source"],
            )
            body = orjson.dumps(delivered)
            # What the worker does with it: PoisonMessageError if it would go to the DLQ.
            event = parse_body(body, source=source, not_after=not_after)
            if event is not None and event.role is Role.SUBMITTED:
                self.orders += 1
            self.sent.append((now, at))
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "x"} for _ in Entries]}


def compose_settings() -> Settings:
    """The worker's settings as compose gives them (no endpoint, no credentials needed)."""
    environment = COMPOSE["services"]["worker"]["environment"]
    return Settings(
        **{
            name.removeprefix("WAIT_TIMES_").lower(): value
            for name, value in environment.items()
            if name.startswith("WAIT_TIMES_")
        }
    )


def lag_at(sent: list[tuple[float, float]], wall: float) -> float:
    """How far the first event sent at or after ``wall`` is behind the wall clock."""
    index = bisect.bisect_left(sent, (wall, -math.inf))
    now, at = sent[index]
    return now - at


# A simulated soak (hundreds of thousands of events): the reliability tier, so the
# unit tier stays a seconds-long loop.
@pytest.mark.reliability
async def test_compose_player_plays_a_week_the_worker_accepts_and_keeps_to_the_wall_clock() -> None:
    command = COMPOSE["services"]["player"]["command"]
    args = build_parser().parse_args(command)
    assert args.command == "play"
    assert (args.orders, args.duration, args.file) == (None, None, None), "plays until stopped"
    assert COMPOSE["services"]["player"]["restart"] == "unless-stopped"
    settings = compose_settings()
    clock = SimulatedClock(WALL_START, WALL_START + WEEK)
    bus = CheckingBus(clock, settings)

    with pytest.raises(WeekOver):
        await play_generated(cast(Any, bus), settings.event_bus, **play_options(args), clock=clock)

    sent = bus.sent
    assert clock.now - WALL_START >= WEEK
    assert sent[-1][0] - WALL_START > WEEK - 60, "traffic until the end of the week"
    # The player's own promise, stricter than the worker's rule: never after the wall clock.
    assert all(at <= now for now, at in sent)
    catch_up = args.history / (args.speed - 1)
    # Faster than real time until caught up, then in real time (events sent at their time).
    assert lag_at(sent, WALL_START) == pytest.approx(args.history, abs=60)
    for wall in (2 * HOUR, DAY, 3 * DAY, WEEK - HOUR):
        assert 0 <= lag_at(sent, WALL_START + wall) <= 1, wall
    caught_up = next(now for now, at in sent if now - at <= 1) - WALL_START
    assert caught_up == pytest.approx(catch_up, abs=10)
    # Real-time traffic at the configured rate: orders over the week after the catch-up.
    expected = args.rate * (WEEK + args.history)
    assert bus.orders == pytest.approx(expected, rel=0.02)
    print(
        f"compose player over a simulated week: {len(sent)} events, {bus.orders} orders; "
        f"clock starts {lag_at(sent, WALL_START):.0f} s behind the wall clock, caught up "
        f"after {caught_up:.0f} s; behind by {lag_at(sent, WALL_START + 2 * HOUR):.2f} s "
        f"after 2 h and {lag_at(sent, WALL_START + 3 * DAY):.2f} s after 3 days"
    )


# A simulated soak (hundreds of thousands of events): the reliability tier, so the
# unit tier stays a seconds-long loop.
@pytest.mark.reliability
async def test_the_demo_player_runs_past_a_day_too() -> None:
    # Before, at the demo's x20, every event was from the future after about 76 minutes.
    args = build_parser().parse_args(["demo"])
    settings = Settings()
    clock = SimulatedClock(WALL_START, WALL_START + DAY)
    bus = CheckingBus(clock, settings)
    with pytest.raises(WeekOver):
        # As the demo calls it: no history given, so the player's default.
        await play_generated(
            cast(Any, bus),
            settings.event_bus,
            orders=None,
            duration=None,
            rate=args.rate,
            speed=args.speed,
            seed=args.seed,
            clock=clock,
        )
    assert all(at <= now for now, at in bus.sent)
    assert 0 <= lag_at(bus.sent, WALL_START + 2 * HOUR) <= 1
    assert bus.sent[-1][0] - WALL_START > DAY - 60


@pytest.mark.unit
async def test_no_pacing_plays_the_past_at_once_and_the_future_in_real_time() -> None:
    settings = Settings()
    clock = SimulatedClock(WALL_START, WALL_START + DAY)
    bus = CheckingBus(clock, settings)
    # `play --orders 20 --speed 0 --rate 5`: all of it in the hour before now, sent at once.
    sent = await play_generated(
        cast(Any, bus), "bus", orders=20, duration=None, rate=5, speed=0, seed=3, clock=clock
    )
    assert sent == len(bus.sent) > 20 * 5
    assert clock.now == WALL_START, "no waiting"
    assert all(at <= WALL_START for _, at in bus.sent)
    # With no history, the same orders play in real time from now.
    bus.sent.clear()
    await play_generated(
        cast(Any, bus),
        "bus",
        orders=20,
        duration=None,
        rate=5,
        speed=0,
        seed=3,
        history=0,
        clock=clock,
    )
    assert clock.now > WALL_START + 60
    assert all(at <= now for now, at in bus.sent)


@pytest.mark.unit
async def test_duration_counts_real_seconds() -> None:
    settings = Settings()
    clock = SimulatedClock(WALL_START, WALL_START + DAY)
    bus = CheckingBus(clock, settings)
    await play_generated(
        cast(Any, bus), "bus", orders=None, duration=60, rate=1, speed=30, seed=3, clock=clock
    )
    assert clock.now - WALL_START < 60
    assert bus.sent and all(now - WALL_START < 60 for now, _ in bus.sent)
    # 60 real seconds at x30 from an hour ago: 30 simulated minutes of traffic.
    assert bus.sent[-1][1] - (WALL_START - HOUR) == pytest.approx(30 * 60, abs=60)


@pytest.mark.parametrize("speed", [0, 0.5, 1, 2, 30])
@pytest.mark.parametrize("history", [0, 60, 3600])
@pytest.mark.unit
def test_the_schedule_never_plays_an_event_before_its_time(speed: float, history: float) -> None:
    schedule = Schedule(WALL_START, history, speed)
    times = [schedule.start + step * 7.3 for step in range(2000)]
    dues = [schedule.due(at) for at in times]
    assert all(due >= at for due, at in zip(dues, times, strict=True))
    assert dues == sorted(dues), "in order"
    assert dues[0] == WALL_START, "the first event at once"
    catch_up = schedule.catch_up_seconds
    if catch_up is not None:
        # From the catch-up on, events are played exactly at their time.
        assert all(
            due == at
            for due, at in zip(dues, times, strict=True)
            if due > WALL_START + catch_up + 1e-6
        )
    else:
        assert all(due > at for due, at in zip(dues[1:], times[1:], strict=True)), "behind"
