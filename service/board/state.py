"""The board's state: the highest version of every published value, bounded. Pure: no I/O.

A consumer of the bus keeps, per key, the value of the highest ``version`` it has seen
(docs/events.md): the average of a (tenant, drink), the estimate of a tenant, whatever
order the bus delivers them in. Both are kept in an LRU (``service.lru``), so the memory is
bounded whatever names producers invent. ``view`` is what a browser is sent: only fields
the published events carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from pydantic import ValidationError

from service.core.consumed import MAX_NAME_LENGTH, decode_body, normalize_name
from service.core.published import (
    AVERAGE_DETAIL_TYPE,
    ESTIMATE_DETAIL_TYPE,
    DrinkAverageTime,
    Published,
    WaitEstimate,
)
from service.errors import PoisonMessageError
from service.lru import Lru

TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


class TakeResult(Enum):
    """What taking a published value did (the label of the board's message counter)."""

    KEPT = "kept"  # newer than what was known: the tenant's view changed
    STALE = "stale"  # a version already known or older: nothing changed
    NOT_SERVED = "not_served"  # a tenant outside WAIT_TIMES_BOARD_TENANTS


def served_tenants(setting: str) -> frozenset[str] | None:
    """The tenants ``WAIT_TIMES_BOARD_TENANTS`` names (comma-separated), normalized as every
    name is; None for all of them (an empty setting)."""
    names = {normalize_name(name) for name in setting.split(",")} - {""}
    return frozenset(names) or None


def read_published(body: str | bytes) -> Published | None:
    """One message of the board's queue, an EventBridge envelope: the average or estimate
    in it, or None for another detail-type (ignored). Raises PoisonMessageError for what
    can never be read."""
    envelope = decode_body(body)
    if type(envelope) is not dict:
        raise PoisonMessageError("not_an_envelope", f"JSON {type(envelope).__name__}")
    detail_type = envelope.get("detail-type")
    model: type[DrinkAverageTime] | type[WaitEstimate]
    if detail_type == AVERAGE_DETAIL_TYPE:
        model = DrinkAverageTime
    elif detail_type == ESTIMATE_DETAIL_TYPE:
        model = WaitEstimate
    elif type(detail_type) is str:
        return None
    else:
        raise PoisonMessageError("not_an_envelope", "no string 'detail-type'")
    try:
        value = model.model_validate(envelope.get("detail"))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "detail"
        raise PoisonMessageError("invalid_detail", f"{where}: {error['msg']}"[:200]) from None
    names = (
        [value.eventId, value.drink]
        if isinstance(value, DrinkAverageTime)
        else [
            value.eventId,
            *value.drinks,
        ]
    )
    if any(len(name) > MAX_NAME_LENGTH for name in names):
        raise PoisonMessageError("invalid_name", f"a name over {MAX_NAME_LENGTH} characters")
    return value


@dataclass(frozen=True, slots=True)
class Taken:
    """What ``BoardState.take`` did, and the tenant whose view it was about."""

    result: TakeResult
    tenant: str
    new_tenant: bool = False  # the tenant had no value before: the tenant list changed


class BoardState:
    """The highest version of each average (per tenant and drink) and estimate (per
    tenant), at most ``capacity`` of each (the least recently updated go first)."""

    def __init__(self, capacity: int, served: frozenset[str] | None = None) -> None:
        self.served = served
        self.averages: Lru[tuple[str, str], DrinkAverageTime] = Lru(capacity)
        self.estimates: Lru[str, WaitEstimate] = Lru(capacity)
        self._drinks: dict[str, set[str]] = {}  # the averages' keys, by tenant

    def serves(self, tenant: str) -> bool:
        """Whether the board serves ``tenant`` (WAIT_TIMES_BOARD_TENANTS)."""
        return self.served is None or tenant in self.served

    def knows(self, tenant: str) -> bool:
        """Whether the board has a page for ``tenant``: served, and named by the setting
        or with a value."""
        if not self.serves(tenant):
            return False
        named = self.served is not None
        return named or tenant in self._drinks or tenant in self.estimates

    def tenants(self) -> list[str]:
        """The tenants with a page, sorted."""
        known = set(self._drinks) | set(self.estimates) | set(self.served or ())
        return sorted(t for t in known if self.serves(t))

    def take(self, value: Published) -> Taken:
        """Keep a published value unless its key already has this version or a newer one."""
        tenant = value.eventId
        if not self.serves(tenant):
            return Taken(TakeResult.NOT_SERVED, tenant)
        new_tenant = tenant not in self._drinks and tenant not in self.estimates
        if isinstance(value, DrinkAverageTime):
            kept = self._take_average(value)
        else:
            kept = self._take_estimate(value)
        if not kept:
            return Taken(TakeResult.STALE, tenant)
        return Taken(TakeResult.KEPT, tenant, new_tenant)

    def _take_average(self, average: DrinkAverageTime) -> bool:
        key = (average.eventId, average.drink)
        current = self.averages.get(key)
        if current is not None and current.version >= average.version:
            return False
        for tenant, drink in self.averages.put(key, average):
            drinks = self._drinks.get(tenant, set())
            drinks.discard(drink)
            if not drinks:
                self._drinks.pop(tenant, None)
        self._drinks.setdefault(average.eventId, set()).add(average.drink)
        return True

    def _take_estimate(self, estimate: WaitEstimate) -> bool:
        current = self.estimates.get(estimate.eventId)
        if current is not None and current.version >= estimate.version:
            return False
        self.estimates.put(estimate.eventId, estimate)
        return True

    def view(self, tenant: str) -> dict[str, Any]:
        """What a browser shows of a tenant: per drink its estimate, p90 and last-N average
        (None where not published yet), the tenant's open orders; published fields only."""
        estimate = self.estimates.get(tenant)
        drinks = set(self._drinks.get(tenant, ())) | set(estimate.drinks if estimate else ())
        rows = []
        for drink in sorted(drinks):
            wait = estimate.drinks.get(drink) if estimate else None
            average = self.averages.get((tenant, drink))
            rows.append(
                {
                    "drink": drink,
                    "estimate": None if wait is None else wait.estimate,
                    "p90": None if wait is None else wait.p90,
                    "average": None if average is None else average.duration,
                    "samples": None if average is None else average.samples,
                    "window": None if average is None else average.window,
                    "updatedAt": None
                    if average is None
                    else average.updatedAt.strftime(TIME_FORMAT),
                }
            )
        return {
            "tenant": tenant,
            "openOrders": None if estimate is None else estimate.openOrders,
            "asOf": None if estimate is None else estimate.asOf.strftime(TIME_FORMAT),
            "drinks": rows,
        }
