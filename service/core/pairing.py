"""Pairing submissions with completions, in either order of arrival. Pure: no I/O here.

An order's record is the join of its events: the first submission (tenant, drink, time),
the first completion time and whether any cancellation exists. The DynamoDB store applies
exactly this merge atomically (``if_not_exists``); ``OrderBook`` applies it in memory for
``replay``. ``outcome`` turns a record into a window entry, an anomaly, or nothing yet.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from service.core.orders import OrderEvent, Role
from service.core.window import WindowEntry, WindowKey


class OrderRecord(NamedTuple):
    """What is known about one order so far (immutable; a NamedTuple because it is cheap)."""

    order_id: str
    tenant: str | None = None
    drink: str | None = None
    submitted_at: int | None = None
    completed_at: int | None = None
    cancelled: bool = False
    expires_at: int | None = None

    def merge(self, event: OrderEvent, expires_at: int | None = None) -> OrderRecord:
        """The record after one more event; applying an event twice changes nothing."""
        # Positional construction, not dataclasses.replace: this is replay's hot path.
        expiry = self.expires_at if self.expires_at is not None else expires_at
        role = event.role
        if role is Role.SUBMITTED:
            if self.submitted_at is not None:
                return self
            return OrderRecord(
                self.order_id,
                event.tenant,
                event.drink,
                event.time,
                self.completed_at,
                self.cancelled,
                expiry,
            )
        if role is Role.COMPLETED:
            if self.completed_at is not None:
                return self
            return OrderRecord(
                self.order_id,
                self.tenant,
                self.drink,
                self.submitted_at,
                event.time,
                self.cancelled,
                expiry,
            )
        if self.cancelled:
            return self
        return OrderRecord(
            self.order_id,
            self.tenant,
            self.drink,
            self.submitted_at,
            self.completed_at,
            True,
            expiry,
        )

    @property
    def key(self) -> WindowKey | None:
        """The window this order belongs to, once its submission is known."""
        if self.tenant is None or self.drink is None:
            return None
        return (self.tenant, self.drink)


class Anomaly(StrEnum):
    """Why a paired order is counted in metrics and logs but never averaged."""

    NEGATIVE_WAIT = "negative_wait"
    WAIT_ABOVE_MAXIMUM = "wait_above_maximum"


class Paired(NamedTuple):
    """A record with both halves: the entry for its window."""

    key: WindowKey
    entry: WindowEntry


class Anomalous(NamedTuple):
    """A record with both halves whose wait is out of bounds."""

    key: WindowKey
    order_id: str
    wait: int
    anomaly: Anomaly


Outcome = Paired | Anomalous | None


def outcome(record: OrderRecord, max_wait_seconds: int) -> Outcome:
    """What a record contributes: an entry, an anomaly, or nothing while a half is missing.

    A cancelled order without a completion contributes nothing. One with a completion
    contributes a cancelled entry (see ``WindowEntry``).
    """
    key = record.key
    if key is None or record.submitted_at is None or record.completed_at is None:
        return None
    wait = record.completed_at - record.submitted_at
    if wait < 0:
        return Anomalous(key, record.order_id, wait, Anomaly.NEGATIVE_WAIT)
    if wait > max_wait_seconds:
        return Anomalous(key, record.order_id, wait, Anomaly.WAIT_ABOVE_MAXIMUM)
    return Paired(key, WindowEntry(record.completed_at, record.order_id, wait, record.cancelled))


class OrderBook:
    """In-memory order records with expiry, for ``replay`` (the worker keeps them in DynamoDB).

    Expiry is garbage collection: the TTL is longer than the maximum wait, so a pair whose
    halves are further apart than the TTL would be an anomaly anyway, and dropping either
    half can never change a window.
    """

    def __init__(self, ttl_seconds: int) -> None:
        self.ttl_seconds = ttl_seconds
        self.records: dict[str, OrderRecord] = {}
        self.expired = 0

    def apply(self, event: OrderEvent, now: int) -> OrderRecord | None:
        """Merge an event into its order's record; the new record, or None if unchanged."""
        current = self.records.get(event.order_id)
        if current is None:
            current = OrderRecord(event.order_id)
        merged = current.merge(event, now + self.ttl_seconds)
        if merged is current:
            return None
        self.records[event.order_id] = merged
        return merged

    def expire(self, now: int) -> int:
        """Drop records whose TTL has passed; returns how many.

        A record's expiry is set when it is first seen, from a clock that never goes back,
        and a dict keeps first-insertion order: the expired records are a prefix.
        """
        stale = []
        for order_id, record in self.records.items():
            if record.expires_at is None or record.expires_at > now:
                break
            stale.append(order_id)
        for order_id in stale:
            del self.records[order_id]
        self.expired += len(stale)
        return len(stale)

    @property
    def open_orders(self) -> int:
        """Orders with one half and no outcome yet (neither paired nor cancelled)."""
        return sum(
            1
            for r in self.records.values()
            if (r.submitted_at is None) != (r.completed_at is None) and not r.cancelled
        )
