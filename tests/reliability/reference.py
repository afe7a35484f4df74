"""The reference model: expected final windows, and each tenant's open orders, from a set of
events, from docs/design.md.

Deliberately independent of ``service/``: no pairing, window or replay code is imported,
and nothing here is clever. It works on the *set* of events (duplicates collapse), so it
cannot depend on delivery order, redeliveries, crashes or the number of workers, which is
exactly the invariant the fault tests hold the service to.

The rules, from the contract:
- roles by detail-type: ``OrderManager.WaitingCompletion`` submits;
  ``OrderManager.Order<tenant>-COMPLETED`` and ``OrderManager.OrderCompleted`` complete;
  ``OrderManager.Order<tenant>-CANCELLED``, ``OrderManager.OrderCancelled`` and
  ``OrderProcessor.OrderTimeOut`` cancel; everything else is ignored, as is any other source;
- tenant: ``detail.eventId`` if a string, else the part of ``detail.state`` before
  ``-CREATED``, else ``""``; it comes from the submission;
- wait = completion time - submission time (envelope times); outside [0, max] it is an
  anomaly and never enters a window;
- a window holds the N paired orders with the latest (completion time, orderId); an order
  that is also cancelled, whenever the cancellation arrives, neither counts nor holds a slot;
- duration = mean of the averaged waits rounded to milliseconds (None if none), samples =
  their count.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SOURCE = "awsserverlessda.serverlesspresso"
MAX_ID = 128


class Unprocessable(Exception):
    """An event the contract says can never be processed (it belongs in the DLQ)."""


@dataclass(frozen=True)
class Half:
    """What one event says about its order."""

    role: str  # "submitted" | "completed" | "cancelled"
    order_id: str
    time: int
    tenant: str = ""
    drink: str = ""


def role_of(detail_type: str) -> str | None:
    """The role of a detail-type, None when the service ignores it."""
    if detail_type == "OrderManager.WaitingCompletion":
        return "submitted"
    if detail_type == "OrderManager.OrderCompleted":
        return "completed"
    if detail_type in ("OrderManager.OrderCancelled", "OrderProcessor.OrderTimeOut"):
        return "cancelled"
    if detail_type.startswith("OrderManager.Order") and detail_type.endswith("-COMPLETED"):
        return "completed"
    if detail_type.startswith("OrderManager.Order") and detail_type.endswith("-CANCELLED"):
        return "cancelled"
    return None


def read_half(envelope: Any, source: str = SOURCE) -> Half | None:
    """The half an envelope carries; None if ignored; Unprocessable if it never can be."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("detail-type"), str):
        raise Unprocessable("not an envelope")
    role = role_of(envelope["detail-type"])
    if role is None or envelope.get("source") != source:
        return None
    detail = envelope.get("detail")
    if not isinstance(detail, dict):
        raise Unprocessable("detail is not an object")
    order_id = detail.get("orderId")
    if not isinstance(order_id, str) or not order_id.strip() or len(order_id.strip()) > MAX_ID:
        raise Unprocessable("bad orderId")
    try:
        parsed = datetime.fromisoformat(str(envelope.get("time")))
    except ValueError:
        raise Unprocessable("bad time") from None
    if parsed.tzinfo is None:
        raise Unprocessable("time without a UTC offset")
    when = int(parsed.timestamp())
    if role != "submitted":
        return Half(role, order_id.strip(), when)
    drink_order = detail.get("drinkOrder")
    drink = drink_order.get("drink") if isinstance(drink_order, dict) else None
    if not isinstance(drink, str) or not drink.strip() or len(drink.strip()) > MAX_ID:
        raise Unprocessable("bad drink")
    tenant = detail.get("eventId")
    if not isinstance(tenant, str):
        state = detail.get("state")
        tenant = (
            state[: -len("-CREATED")]
            if isinstance(state, str) and state.endswith("-CREATED")
            else ""
        )
    tenant = unicodedata.normalize("NFC", tenant).strip()
    if len(tenant) > MAX_ID:
        raise Unprocessable("tenant too long")
    return Half(role, order_id.strip(), when, tenant, unicodedata.normalize("NFC", drink).strip())


@dataclass
class _Order:
    submitted: list[Half] = field(default_factory=list)
    completed: list[Half] = field(default_factory=list)
    cancelled: bool = False


def expected_windows(
    envelopes: list[Any],
    *,
    window_size: int = 10,
    max_wait_seconds: int = 7200,
    source: str = SOURCE,
) -> list[dict[str, Any]]:
    """Final windows as ``{eventId, drink, duration, samples}`` rows sorted by key."""
    orders: dict[str, _Order] = defaultdict(_Order)
    for envelope in envelopes:
        try:
            half = read_half(envelope, source)
        except Unprocessable:
            continue
        if half is None:
            continue
        order = orders[half.order_id]
        if half.role == "submitted":
            order.submitted.append(half)
        elif half.role == "completed":
            order.completed.append(half)
        else:
            order.cancelled = True

    # key → [(completed time, order id, wait)]: earliest submission (ties: tenant, drink)
    # and earliest completion count; a cancelled order neither counts nor holds a slot.
    entries: dict[tuple[str, str], list[tuple[int, str, int]]] = defaultdict(list)
    for order_id, order in orders.items():
        if not order.submitted or not order.completed or order.cancelled:
            continue
        first = min(order.submitted, key=lambda h: (h.time, h.tenant, h.drink))
        done = min(h.time for h in order.completed)
        wait = done - first.time
        if wait < 0 or wait > max_wait_seconds:
            continue
        entries[(first.tenant, first.drink)].append((done, order_id, wait))

    rows = []
    for key in sorted(entries):
        waits = [wait for _, _, wait in sorted(entries[key], reverse=True)[:window_size]]
        rows.append(
            {
                "eventId": key[0],
                "drink": key[1],
                "duration": round(sum(waits) / len(waits), 3),
                "samples": len(waits),
            }
        )
    return rows


def paired_orders(envelopes: list[Any], source: str = SOURCE) -> int:
    """How many distinct orders have both halves (what a check covers)."""
    halves: dict[str, set[str]] = defaultdict(set)
    for envelope in envelopes:
        try:
            half = read_half(envelope, source)
        except Unprocessable:
            continue
        if half is not None:
            halves[half.order_id].add(half.role)
    return sum(1 for roles in halves.values() if {"submitted", "completed"} <= roles)


# -- open orders per tenant ----------------------------------------------------------------
#
# The rules, from the contract (docs/design.md, "The wait estimate"):
# - an order is a tenant's when its earliest submission (ties: tenant, drink) names it;
# - open at t: submitted at s <= t, no completion or cancellation at a time <= t, and
#   t - s <= the maximum wait;
# - the time a tenant's count is for: its latest event, of the earliest submission, the
#   earliest completion and the earliest cancellation each of its orders has, unless that
#   one stands alone more than LONE_EVENT_GAP seconds after all the others (then the one
#   before it); never later than ``now``.

LONE_EVENT_GAP = 900


@dataclass(frozen=True)
class _Timeline:
    """One order as the open count sees it: whose, when submitted, when it could end."""

    tenant: str
    submitted: int
    ends: tuple[int, ...]  # every completion and cancellation time
    kept: tuple[int, ...]  # its earliest submission, completion and cancellation


def _timelines(envelopes: list[Any], source: str) -> list[_Timeline]:
    submissions: dict[str, list[Half]] = defaultdict(list)
    completions: dict[str, list[int]] = defaultdict(list)
    cancellations: dict[str, list[int]] = defaultdict(list)
    for envelope in envelopes:
        try:
            half = read_half(envelope, source)
        except Unprocessable:
            continue
        if half is None:
            continue
        if half.role == "submitted":
            submissions[half.order_id].append(half)
        elif half.role == "completed":
            completions[half.order_id].append(half.time)
        else:
            cancellations[half.order_id].append(half.time)
    found = []
    for order_id, halves in submissions.items():
        first = min(halves, key=lambda h: (h.time, h.tenant, h.drink))
        done, cancelled = completions[order_id], cancellations[order_id]
        kept = [first.time]
        if done:
            kept.append(min(done))
        if cancelled:
            kept.append(min(cancelled))
        found.append(_Timeline(first.tenant, first.time, (*done, *cancelled), tuple(kept)))
    return found


def _open_at(orders: list[_Timeline], at: int, max_wait_seconds: int) -> int:
    """How many of ``orders`` are open at event time ``at``."""
    return sum(
        1
        for order in orders
        if order.submitted <= at
        and at - order.submitted <= max_wait_seconds
        and not any(end <= at for end in order.ends)
    )


def _as_of(orders: list[_Timeline], now: int | None) -> int | None:
    """The event time the count of one tenant's ``orders`` is for (None: no order)."""
    times = sorted({at for order in orders for at in order.kept})
    if not times:
        return None
    latest = times[-1]
    if len(times) > 1 and times[-1] - times[-2] > LONE_EVENT_GAP:
        latest = times[-2]
    return latest if now is None else min(now, latest)


def _by_tenant(envelopes: list[Any], source: str) -> dict[str, list[_Timeline]]:
    """Every order's timeline, grouped by its tenant."""
    grouped: dict[str, list[_Timeline]] = defaultdict(list)
    for order in _timelines(envelopes, source):
        grouped[order.tenant].append(order)
    return grouped


def open_orders_at(
    envelopes: list[Any],
    tenant: str,
    at: int,
    *,
    max_wait_seconds: int = 7200,
    source: str = SOURCE,
) -> int:
    """How many of ``tenant``'s orders are open at event time ``at``."""
    return _open_at(_by_tenant(envelopes, source).get(tenant, []), at, max_wait_seconds)


def tenant_as_of(
    envelopes: list[Any], tenant: str, *, now: int | None = None, source: str = SOURCE
) -> int | None:
    """The event time ``tenant``'s count is for (None: it has no order)."""
    return _as_of(_by_tenant(envelopes, source).get(tenant, []), now)


def expected_open_orders(
    envelopes: list[Any],
    *,
    max_wait_seconds: int = 7200,
    now: int | None = None,
    source: str = SOURCE,
) -> dict[str, tuple[int, int]]:
    """Every tenant with an order: ``{tenant: (as_of, open orders at as_of)}`` (the events
    read once, then tenant by tenant: a flood of 50,000 tenants stays linear)."""
    found = {}
    for tenant, orders in sorted(_by_tenant(envelopes, source).items()):
        as_of = _as_of(orders, now)
        assert as_of is not None
        found[tenant] = (as_of, _open_at(orders, as_of, max_wait_seconds))
    return found
