"""Messy order traffic for the fault tests: the worst a real bus delivers, reproducibly.

Every order is planned as a set of EventBridge envelopes (the *event set*, what the
reference model reads), then the deliveries are made messy: times jittered by minutes so
completions often arrive before their submissions, 10% of messages delivered twice,
events of types the service ignores mixed in, all three tenant shapes (2021, 2022,
current), legacy detail-types, cancellations and time-outs, orders cancelled after they
completed, halves that never pair, anomalous waits, and ties on completion time.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.envelopes import envelope

DRINKS = {
    "Espresso": 45,
    "Americano": 60,
    "Cappuccino": 95,
    "Caffe Latte": 100,
    "Flat White": 85,
    "Chai Latte": 90,
}
UNRELATED = (
    "Validator.NewOrder",
    "OrderProcessor.WorkflowStarted",
    "OrderProcessor.orderFinished",
    "OrderRobot.FulfillOrder",
    "ConfigService.ConfigChanged",
)


@dataclass
class Traffic:
    """The event set and the messy deliveries of it."""

    envelopes: list[dict[str, Any]] = field(default_factory=list)  # the set, one of each
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # in delivery order
    orders: int = 0

    @property
    def bodies(self) -> list[str]:
        """SQS message bodies, as the EventBridge rule would deliver them."""
        return [json.dumps(e, ensure_ascii=False) for e in self.deliveries]

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of the same event."""
        return len(self.deliveries) - len({e["id"] for e in self.deliveries})


def event_id(rng: random.Random) -> str:
    """A reproducible uuid4 for an envelope's id."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def messy_traffic(
    orders: int,
    *,
    seed: int,
    tenants: tuple[str, ...] = ("NYC", "LDN", "Zürich"),
    start: float | None = None,
    orders_per_minute: float = 30.0,
    jitter_seconds: float = 240.0,
    duplicate_rate: float = 0.10,
    unrelated_rate: float = 0.3,
    open_at_end: int = 0,
) -> Traffic:
    """``orders`` orders of messy traffic, reproducible for a ``seed`` (times aside). The
    last ``open_at_end`` orders are only ever submitted: still open when the traffic ends
    (0, the default, leaves the traffic of a seed as it always was)."""
    rng = random.Random(seed)
    if start is None:
        # Days in the past: well inside the service's future-time guard, whatever today is.
        start = datetime.now(UTC).timestamp() - 3 * 86400
    traffic = Traffic(orders=orders)
    planned: list[tuple[float, dict[str, Any]]] = []

    def add(detail_type: str, at: float, detail: dict[str, Any], deliver_at: float) -> None:
        event = envelope(detail_type=detail_type, detail=detail, at=at, id=event_id(rng))
        traffic.envelopes.append(event)
        planned.append((deliver_at + rng.uniform(-jitter_seconds, jitter_seconds), event))

    arrival = start
    for number in range(orders):
        arrival += rng.expovariate(orders_per_minute / 60)
        tenant = rng.choice(tenants)
        drink = rng.choice(list(DRINKS))
        order_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        shape = rng.random()
        if shape < 0.75:  # current shape: eventId
            submitted_detail: dict[str, Any] = {"orderId": order_id, "eventId": tenant}
            completed_type = f"OrderManager.Order{tenant}-COMPLETED"
            cancelled_type = f"OrderManager.Order{tenant}-CANCELLED"
        elif shape < 0.9:  # 2022 shape: tenant only in state
            submitted_detail = {"orderId": order_id, "state": f"{tenant}-CREATED"}
            completed_type = f"OrderManager.Order{tenant}-COMPLETED"
            cancelled_type = f"OrderManager.Order{tenant}-CANCELLED"
        else:  # 2021 shape: no tenant at all, legacy detail-types
            submitted_detail = {"orderId": order_id}
            completed_type = "OrderManager.OrderCompleted"
            cancelled_type = "OrderManager.OrderCancelled"
        submitted_detail["drinkOrder"] = {"drink": drink, "modifiers": [], "icon": "x"}
        submitted_detail["orderNumber"] = str(number)
        submitted = arrival + rng.uniform(5, 20)
        wait = max(1.0, rng.gauss(DRINKS[drink], DRINKS[drink] * 0.3))
        fate = rng.random()
        if fate < 0.02:
            wait = -rng.uniform(5, 60)  # clocks disagree: negative wait, an anomaly
        elif fate < 0.03:
            wait = 7200 + rng.uniform(1, 600)  # forgotten order: above the maximum
        done = submitted + wait
        if rng.random() < 0.05 and planned:
            # A tie on completion time with an earlier order: orderId breaks it.
            done = float(int(datetime.fromisoformat(planned[-1][1]["time"]).timestamp()))
            submitted = min(submitted, done)
        ref = {"orderId": order_id, "eventId": tenant} if shape < 0.9 else {"orderId": order_id}
        ending = rng.random()
        still_open = number >= orders - open_at_end
        if ending < 0.03 and not still_open:  # completion only: its submission was never seen
            add(completed_type, done, dict(ref), done)
            continue
        add("OrderManager.WaitingCompletion", submitted, submitted_detail, submitted)
        if still_open or ending < 0.06:  # submission only: never completed (still pending)
            continue
        if ending < 0.11:
            add(cancelled_type, done, dict(ref), done)
        elif ending < 0.15:
            add("OrderProcessor.OrderTimeOut", done, {**ref, "cause": "timeout"}, done)
        else:
            add(completed_type, done, dict(ref), done)
            if ending > 0.98:  # cancelled after completing: excluded, no slot
                add(cancelled_type, done + 3, dict(ref), done + 3)
        if rng.random() < unrelated_rate:
            add(rng.choice(UNRELATED), done + 1, dict(ref), done + 1)

    planned.sort(key=lambda item: item[0])
    deliveries = [event for _, event in planned]
    for event in list(deliveries):
        if rng.random() < duplicate_rate:
            deliveries.insert(rng.randrange(len(deliveries) + 1), event)
    traffic.deliveries = deliveries
    return traffic
