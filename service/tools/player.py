"""The event player: realistic Serverlesspresso order traffic, or a recording, onto the bus."""

from __future__ import annotations

import heapq
import json
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from service.aws.publisher import put_events
from service.backoff import DEPENDENCY_RETRY
from service.errors import DependencyError
from service.settings import DEFAULT_SOURCE

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_events.type_defs import PutEventsRequestEntryTypeDef

log = structlog.get_logger(__name__)

# Drinks of the Serverlesspresso menu and a typical barista time in seconds for each.
MENU: dict[str, float] = {
    "Espresso": 45,
    "Americano": 60,
    "Cappuccino": 95,
    "Caffe Latte": 100,
    "Flat White": 85,
    "Cafe Mocha": 120,
    "Chai Latte": 90,
    "Hot Chocolate": 75,
}
TENANTS = ("NYC", "LDN", "SYD")
CANCEL_RATE = 0.06
TIMEOUT_RATE = 0.04
MAX_PUT_ATTEMPTS = 8


@dataclass(order=True, frozen=True)
class PlannedEvent:
    """An event due at a simulated time."""

    at: float
    seq: int
    detail_type: str
    detail: dict[str, Any]


class TrafficGenerator:
    """Orders arriving as a Poisson process; each order's events come out in time order.

    ``rate``: orders per simulated second. Reproducible for a given ``seed``.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        rate: float = 1.0,
        tenants: Sequence[str] = TENANTS,
        start: float | None = None,
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - traffic, not cryptography
        self.rate = rate
        self.tenants = tuple(tenants)
        self.clock = datetime.now(UTC).timestamp() if start is None else start
        self._heap: list[PlannedEvent] = []
        self._seq = 0
        self._order_number = 0

    def _push(self, at: float, detail_type: str, detail: dict[str, Any]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, PlannedEvent(at, self._seq, detail_type, detail))

    def _plan_order(self, at: float) -> None:
        rng = self.rng
        tenant = rng.choice(self.tenants)
        drink = rng.choice(list(MENU))
        order_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self._order_number += 1
        user = "robot"
        common = {"orderId": order_id, "userId": user, "eventId": tenant}
        self._push(at, "Validator.NewOrder", {**common, "bucket": {"eventId": tenant}})
        self._push(at + 2, "OrderProcessor.WorkflowStarted", {**common, "TaskToken": "token"})
        drink_order = {"drink": drink, "modifiers": [], "icon": "barista-icons", "userId": user}
        submitted = at + rng.uniform(5, 20)
        self._push(
            submitted,
            "OrderProcessor.WaitingCompletion",
            {**common, "orderNumber": self._order_number, "TaskToken": "token"},
        )
        self._push(
            submitted,
            "OrderManager.WaitingCompletion",
            {
                **common,
                "orderNumber": str(self._order_number),
                "state": f"{tenant}-CREATED",
                "drinkOrder": drink_order,
                "robot": False,
                "TS": int(submitted * 1000),
            },
        )
        fate = rng.random()
        wait = max(5.0, rng.gauss(MENU[drink], MENU[drink] * 0.25))
        done = submitted + wait
        if fate < CANCEL_RATE:
            self._push(
                done,
                f"OrderManager.Order{tenant}-CANCELLED",
                {**common, "ORDERSTATE": f"{tenant}-CANCELLED", "Message": "cancelled"},
            )
        elif fate < CANCEL_RATE + TIMEOUT_RATE:
            self._push(done, "OrderProcessor.OrderTimeOut", {**common, "cause": "Barista timedout"})
        else:
            self._push(
                done,
                f"OrderManager.Order{tenant}-COMPLETED",
                {**common, "ORDERSTATE": f"{tenant}-COMPLETED", "Message": "completed"},
            )
            self._push(done + 1, "OrderRobot.FulfillOrder", {**common})
        self._push(done + 1, "OrderProcessor.orderFinished", {**common, "Message": "finished"})

    def events(self, orders: int | None = None) -> Iterator[PlannedEvent]:
        """Events in simulated-time order, for ``orders`` orders (None: endless)."""
        planned = 0
        next_arrival = self.clock
        while True:
            while (orders is None or planned < orders) and (
                not self._heap or next_arrival <= self._heap[0].at
            ):
                self._plan_order(next_arrival)
                planned += 1
                next_arrival += self.rng.expovariate(self.rate)
            if not self._heap:
                return
            yield heapq.heappop(self._heap)


def to_entry(
    event: PlannedEvent, bus: str, source: str = DEFAULT_SOURCE
) -> PutEventsRequestEntryTypeDef:
    """A PutEvents entry for a planned event, its envelope time the simulated time."""
    return {
        "EventBusName": bus,
        "Source": source,
        "DetailType": event.detail_type,
        "Detail": json.dumps(event.detail),
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
) -> int:
    """Generate traffic; ``speed`` simulated seconds pass per real second (0: no pacing).

    ``progress`` is told how many events were accepted after every PutEvents call.
    """
    generator = TrafficGenerator(seed=seed, rate=rate, tenants=tenants)
    started = anyio.current_time()
    sim_start = generator.clock
    sent = 0
    pending: list[PutEventsRequestEntryTypeDef] = []
    for event in generator.events(orders):
        elapsed = anyio.current_time() - started
        if duration is not None and elapsed >= duration:
            break
        if speed > 0:
            due = (event.at - sim_start) / speed
            if due > elapsed and pending:
                sent += await put_entries(events_client, pending, progress)
                pending = []
            if due > anyio.current_time() - started:
                await anyio.sleep(due - (anyio.current_time() - started))
        pending.append(to_entry(event, bus))
        if len(pending) == 10:
            sent += await put_entries(events_client, pending, progress)
            pending = []
    sent += await put_entries(events_client, pending, progress)
    log.info("player_finished", events=sent)
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
