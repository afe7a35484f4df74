"""A simulated coffee bar per tenant: the traffic the player sends, and its ground truth.

Pure and deterministic for a seed (no AWS, no clock): ``TrafficGenerator(...).events(N)``
yields the Serverlesspresso events of ``N`` orders in time order, and with ``record=True``
``generator.records`` holds what really happened to each placed order, so a benchmark
knows every order's true wait.

The model, per tenant: ``baristas`` serving one first-come-first-served queue. Orders
arrive as a non-homogeneous Poisson process (the base ``rate`` times a periodic ``Rush``),
are submitted a few seconds later, and join the queue; a free barista takes the oldest
waiting order and prepares it for a lognormal time around the menu's typical seconds. A
customer still waiting in the queue when their patience runs out cancels; a small share of
started orders time out instead of completing; an arrival finding ``cap`` orders already
open is turned away (no events; counted).
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

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
# A prep time is lognormal with the menu's seconds as its mean and this coefficient of
# variation: a flat white is never instant, and now and then takes half as long again.
PREP_SPREAD = 0.25
# How long a customer waits in the queue before cancelling: lognormal, mean six minutes.
# Not exponential: that would have many customers give up within seconds of ordering, when
# cancellations really come from long queues, in rushes.
PATIENCE_MEAN_SECONDS = 360.0
PATIENCE_SPREAD = 0.5
# Share of started orders that end in OrderProcessor.OrderTimeOut instead of completing.
TIMEOUT_RATE = 0.04
# Open orders (placed, not yet ended) a tenant's bar accepts: the app stops taking orders.
OPEN_ORDER_CAP = 25
# Baristas per tenant when not fixed: drawn from the seed and the tenant's id.
BARISTAS = (2, 4)
# From the app's first event to the submitted drink order (the customer choosing).
SUBMIT_DELAY_SECONDS = (5.0, 20.0)


def lognormal(rng: random.Random, mean: float, spread: float) -> float:
    """A lognormal draw with this mean and coefficient of variation ``spread``."""
    sigma = math.sqrt(math.log1p(spread * spread))
    return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)


@dataclass(frozen=True)
class Rush:
    """Periodic rushes: every ``every`` seconds, ``length`` seconds at ``factor`` times the
    base arrival rate. A rush begins at ``anchor`` (None: the generator's start) and every
    ``every`` seconds before and after it. ``factor`` 1 (or ``length`` 0): steady traffic.
    """

    every: float = 1200.0
    length: float = 300.0
    factor: float = 5.0
    anchor: float | None = None

    def __post_init__(self) -> None:
        """Refuse a shape that is not a rush (ValueError)."""
        finite = all(math.isfinite(v) for v in (self.every, self.length, self.factor))
        if not finite or self.every <= 0 or not 0 <= self.length <= self.every:
            raise ValueError("rush: every must be > 0 and 0 <= length <= every")
        if self.factor < 1:
            raise ValueError("rush: factor must be >= 1")

    def anchored(self, at: float) -> Rush:
        """This rush, beginning at ``at`` unless it already has an anchor."""
        return self if self.anchor is not None else replace(self, anchor=at)

    def factor_at(self, at: float) -> float:
        """The multiple of the base rate at simulated time ``at``."""
        into = (at - (self.anchor or 0.0)) % self.every
        return self.factor if into < self.length else 1.0


class OrderEnd(StrEnum):
    """How a placed order ended."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


@dataclass(slots=True)
class OrderRecord:
    """Ground truth of one placed order; ``end`` None while it is still open.

    ``submitted_at`` is the time of its submission events (``OrderManager.WaitingCompletion``),
    ``ended_at`` that of its completion, cancellation or timeout event.
    """

    order_id: str
    tenant: str
    drink: str
    arrived_at: float
    submitted_at: float
    patience: float
    started_at: float | None = None
    ended_at: float | None = None
    end: OrderEnd | None = None

    @property
    def completed_at(self) -> float | None:
        """When the completion event is stamped, for a completed order."""
        return self.ended_at if self.end is OrderEnd.COMPLETED else None

    @property
    def wait(self) -> float | None:
        """The true wait the service should measure: submission to completion."""
        done = self.completed_at
        return None if done is None else done - self.submitted_at


@dataclass(order=True, frozen=True)
class PlannedEvent:
    """An event due at a simulated time."""

    at: float
    seq: int
    detail_type: str
    detail: dict[str, Any]


@dataclass(slots=True)
class _Order:
    record: OrderRecord
    number: int
    common: dict[str, Any]
    times_out: bool = False


@dataclass
class Bar:
    """One tenant's bar: its baristas, its queue, and what it turned away."""

    tenant: str
    baristas: int
    busy: int = 0
    open: int = 0
    max_open: int = 0
    turned_away: int = 0
    queue: deque[_Order] = field(default_factory=deque)


def seeded_baristas(seed: int, tenant: str) -> int:
    """A tenant's barista count for a seed, whatever the other tenants."""
    return random.Random(f"{seed}/{tenant}").randint(*BARISTAS)  # noqa: S311 - a simulation


# What the simulation does at a time, with the order it concerns.
_Step = Callable[[float, _Order], None]


class TrafficGenerator:
    """Serverlesspresso traffic from a discrete-event simulation of each tenant's bar.

    ``rate``: base arrivals per simulated second over all tenants (split evenly), outside
    rushes. ``start``: the simulated time of the first possible arrival (default: now).
    ``rush``: the rush profile (None: ``Rush()``), anchored at ``start`` unless it has an
    anchor. ``baristas``: the same count for every tenant (None: 2 to 4 each, from the seed).
    ``cap``: open orders per tenant. ``patience``: customers' mean patience in seconds.
    ``record``: keep an ``OrderRecord`` per placed order in ``records``. Reproducible for a
    given ``seed``; iterate ``events`` once.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        rate: float = 1.0,
        tenants: Sequence[str] = TENANTS,
        start: float | None = None,
        rush: Rush | None = None,
        baristas: int | None = None,
        cap: int = OPEN_ORDER_CAP,
        patience: float = PATIENCE_MEAN_SECONDS,
        record: bool = False,
    ) -> None:
        staffed = baristas is None or baristas >= 1
        if rate <= 0 or patience <= 0 or not tenants or cap < 1 or not staffed:
            raise ValueError("rate, patience > 0; tenants not empty; cap, baristas >= 1")
        self.rng = random.Random(seed)  # noqa: S311 - traffic, not cryptography
        self.rate = rate
        self.tenants = tuple(tenants)
        self.clock = datetime.now(UTC).timestamp() if start is None else start
        self.rush = (rush or Rush()).anchored(self.clock)
        self.cap = cap
        self.patience = patience
        self.bars = {
            t: Bar(t, baristas if baristas is not None else seeded_baristas(seed, t))
            for t in self.tenants
        }
        self.records: list[OrderRecord] | None = [] if record else None
        self.arrivals = 0  # after thinning, the turned away included
        self.placed = 0
        self._drinks = list(MENU)
        # (time, sequence, ...): plain tuples compare far faster than dataclasses, and the
        # sequence keeps equal times in the order they were planned.
        self._out: list[tuple[float, int, PlannedEvent]] = []
        self._steps: list[tuple[float, int, _Step, _Order]] = []
        self._seq = 0

    @property
    def turned_away(self) -> int:
        """Arrivals not placed because their tenant's bar had ``cap`` orders open."""
        return sum(bar.turned_away for bar in self.bars.values())

    def events(self, orders: int | None = None) -> Iterator[PlannedEvent]:
        """Events in simulated-time order, for ``orders`` placed orders (None: endless),
        until every one of them has ended."""
        peak = self.rate * self.rush.factor
        wanted = orders is None or orders > 0
        next_arrival = self.clock + self.rng.expovariate(peak) if wanted else math.inf
        out, steps = self._out, self._steps
        while True:
            next_step = steps[0][0] if steps else math.inf
            if out and out[0][0] <= min(next_step, next_arrival):
                # Safe to hand out: nothing simulated later plans an event before it.
                yield heapq.heappop(out)[2]
            elif next_arrival == next_step == math.inf:
                return
            elif next_arrival <= next_step:
                self._arrive(next_arrival, peak)
                more = orders is None or self.placed < orders
                next_arrival = next_arrival + self.rng.expovariate(peak) if more else math.inf
            else:
                at, _, step, order = heapq.heappop(steps)
                step(at, order)

    def _emit(self, at: float, detail_type: str, detail: dict[str, Any]) -> None:
        self._seq += 1
        heapq.heappush(self._out, (at, self._seq, PlannedEvent(at, self._seq, detail_type, detail)))

    def _plan(self, at: float, step: _Step, order: _Order) -> None:
        self._seq += 1
        heapq.heappush(self._steps, (at, self._seq, step, order))

    def _arrive(self, at: float, peak: float) -> None:
        """A candidate arrival of the peak-rate process, kept with the rush's probability
        (thinning: a Poisson process whose rate follows the rush profile)."""
        rng = self.rng
        if rng.random() * peak >= self.rate * self.rush.factor_at(at):
            return
        self.arrivals += 1
        bar = self.bars[rng.choice(self.tenants)]
        if bar.open >= self.cap:
            bar.turned_away += 1
            return
        self.placed += 1
        bar.open += 1
        bar.max_open = max(bar.max_open, bar.open)
        order = self._new_order(at, bar.tenant)
        self._emit_placed(order)
        self._plan(order.record.submitted_at, self._submit, order)

    def _new_order(self, at: float, tenant: str) -> _Order:
        rng = self.rng
        drink = rng.choice(self._drinks)
        order_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        submitted = at + rng.uniform(*SUBMIT_DELAY_SECONDS)
        patience = lognormal(rng, self.patience, PATIENCE_SPREAD)
        record = OrderRecord(order_id, tenant, drink, at, submitted, patience)
        if self.records is not None:
            self.records.append(record)
        common = {"orderId": order_id, "userId": "robot", "eventId": tenant}
        return _Order(record, self.placed, common)

    def _emit_placed(self, order: _Order) -> None:
        """The app's events from the order's arrival to its submission."""
        record, common = order.record, order.common
        at, submitted, tenant = record.arrived_at, record.submitted_at, record.tenant
        self._emit(at, "Validator.NewOrder", {**common, "bucket": {"eventId": tenant}})
        self._emit(at + 2, "OrderProcessor.WorkflowStarted", {**common, "TaskToken": "token"})
        self._emit(
            submitted,
            "OrderProcessor.WaitingCompletion",
            {**common, "orderNumber": order.number, "TaskToken": "token"},
        )
        drink_order = {
            "drink": record.drink,
            "modifiers": [],
            "icon": "barista-icons",
            "userId": common["userId"],
        }
        self._emit(
            submitted,
            "OrderManager.WaitingCompletion",
            {
                **common,
                "orderNumber": str(order.number),
                "state": f"{tenant}-CREATED",
                "drinkOrder": drink_order,
                "robot": False,
                "TS": int(submitted * 1000),
            },
        )

    def _submit(self, at: float, order: _Order) -> None:
        bar = self.bars[order.record.tenant]
        if bar.busy < bar.baristas:
            self._start(at, order, bar)
        else:
            bar.queue.append(order)
            self._plan(at + order.record.patience, self._give_up, order)

    def _start(self, at: float, order: _Order, bar: Bar) -> None:
        bar.busy += 1
        order.record.started_at = at
        prep = lognormal(self.rng, MENU[order.record.drink], PREP_SPREAD)
        order.times_out = self.rng.random() < TIMEOUT_RATE
        self._plan(at + prep, self._ready, order)

    def _give_up(self, at: float, order: _Order) -> None:
        if order.record.started_at is not None:
            return  # a barista took it in time
        tenant = order.record.tenant
        bar = self.bars[tenant]
        # Left in the queue, skipped when reached: removing it would cost the queue's length.
        bar.open -= 1
        self._end(order, at, OrderEnd.CANCELLED)
        self._emit(
            at,
            f"OrderManager.Order{tenant}-CANCELLED",
            {**order.common, "ORDERSTATE": f"{tenant}-CANCELLED", "Message": "cancelled"},
        )
        self._emit(at + 1, "OrderProcessor.orderFinished", {**order.common, "Message": "finished"})

    def _ready(self, at: float, order: _Order) -> None:
        """The barista is done with ``order``, and takes the next one in the queue."""
        tenant = order.record.tenant
        bar = self.bars[tenant]
        bar.busy -= 1
        bar.open -= 1
        common = order.common
        if order.times_out:
            self._end(order, at, OrderEnd.TIMED_OUT)
            self._emit(at, "OrderProcessor.OrderTimeOut", {**common, "cause": "Barista timedout"})
        else:
            self._end(order, at, OrderEnd.COMPLETED)
            self._emit(
                at,
                f"OrderManager.Order{tenant}-COMPLETED",
                {**common, "ORDERSTATE": f"{tenant}-COMPLETED", "Message": "completed"},
            )
            self._emit(at + 1, "OrderRobot.FulfillOrder", {**common})
        self._emit(at + 1, "OrderProcessor.orderFinished", {**common, "Message": "finished"})
        queue = bar.queue
        while queue and queue[0].record.end is OrderEnd.CANCELLED:
            queue.popleft()
        if queue:
            self._start(at, queue.popleft(), bar)

    @staticmethod
    def _end(order: _Order, at: float, end: OrderEnd) -> None:
        order.record.ended_at = at
        order.record.end = end
