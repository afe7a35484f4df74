"""What replay keeps of an order: only what its outcome reads. Pure: no I/O here.

``outcome`` (service/core/pairing.py) reads of an order's record its earliest submission,
its earliest completion and whether it was cancelled; expiry reads when the record was
first seen. Each of those is a projection of the record that the join preserves: the
earliest of a union is the earlier of the two earliest, a cancellation is sticky, and the
expiry is set once. So replay, which only ever asks for outcomes, keeps of each order that
projection (``Earliest``), changed in place, instead of the whole record rebuilt at every
event: the same results (a property test holds ``EarliestBook`` to ``OrderBook`` seen
through the projection, event by event), with no allocation for an event that completes an
order.
The worker and ``replay --estimates`` keep whole records: the estimate reads every
submission's tenant and every cancellation time.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter
from typing import Any, Final

from service.core.orders import OrderEvent, Role
from service.core.pairing import ExpiringBook
from service.core.window import WindowEntry, WindowKey

# An order's projection: a list, changed in place (a list is the cheapest mutable record
# to build and to index; replay makes one for every order), in this layout.
Earliest = list[Any]
SUBMISSION: Final = 0  # the earliest (time, tenant, drink), or None
COMPLETED_AT: Final = 1  # the earliest completion time, or None
CANCELLED: Final = 2  # whether any cancellation (a timeout is one) was seen
EXPIRES_AT: Final = 3  # when the record expires: set once, when the order is first seen
ORDER_ID: Final = 4

_SUBMITTED: Final = Role.SUBMITTED  # globals, not attribute look-ups on the enum
_COMPLETED: Final = Role.COMPLETED
_new_tuple: Final = tuple.__new__


class EarliestBook(ExpiringBook[Earliest]):
    """``OrderBook``'s rules (``ExpiringBook``), keeping of each order its ``Earliest``
    projection. Replay's hot path: one ``apply`` per accepted event."""

    _order_id_of = itemgetter(ORDER_ID)
    _expires_at_of = itemgetter(EXPIRES_AT)

    def apply(self, event: OrderEvent, now: int) -> None:
        """Join an event into its order's projection, at ``now``."""
        role, order_id, at, tenant, drink, _ = event
        found = self.records.get(order_id)
        if found is None:
            if order_id in self.expired_ids:
                self.late_halves += 1
            elif role is _SUBMITTED:
                half = (at, tenant, drink or "")
                self.records[order_id] = [half, None, False, now + self.ttl_seconds, order_id]
            elif role is _COMPLETED:
                self.records[order_id] = [None, at, False, now + self.ttl_seconds, order_id]
            else:
                self.records[order_id] = [None, None, True, now + self.ttl_seconds, order_id]
            return
        if found[EXPIRES_AT] <= now:  # it expired before this half came
            self._retire(found)
            self.late_halves += 1
        elif role is _SUBMITTED:
            half = (at, tenant, drink or "")
            earliest = found[SUBMISSION]
            if earliest is None or half < earliest:
                found[SUBMISSION] = half
        elif role is _COMPLETED:
            earliest = found[COMPLETED_AT]
            if earliest is None or at < earliest:
                found[COMPLETED_AT] = at
        else:
            found[CANCELLED] = True


def top_by_key(
    records: Iterable[Earliest], max_wait_seconds: int, size: int
) -> tuple[dict[WindowKey, tuple[WindowEntry, ...]], int]:
    """``outcome`` of many orders at once, from their projections: each key's ``top``
    ``size`` entries, and how many orders were anomalous. The orders are distinct (one
    projection per order id, as a book holds them). Replay settles every order through
    here, so the rule is applied inline, and the entries are ranked as plain tuples
    (completion, order id, wait): with distinct ids that is ``top``'s order, compared
    natively instead of through a key function, and only the kept ones become
    ``WindowEntry``. A property test holds it to ``outcome`` and ``top``."""
    grown: dict[WindowKey, list[tuple[int, str, int]]] = {}
    anomalies = 0
    for submission, completed_at, cancelled, _, order_id in records:
        if submission is None or completed_at is None:
            continue
        submitted_at, tenant, drink = submission
        wait = completed_at - submitted_at
        if wait < 0 or wait > max_wait_seconds:
            anomalies += 1
            continue
        if cancelled:
            continue
        found = grown.get((tenant, drink))
        if found is None:
            grown[tenant, drink] = [(completed_at, order_id, wait)]
        else:
            found.append((completed_at, order_id, wait))
    new = _new_tuple
    kept = {
        key: tuple(new(WindowEntry, ranked) for ranked in sorted(entries, reverse=True)[:size])
        for key, entries in grown.items()
    }
    return kept, anomalies
