"""The events the service publishes, ``OrderManager.DrinkAverageTime`` (a key's window)
and ``OrderManager.WaitEstimate`` (a tenant's estimate): their detail-types, their details
as pydantic models (the published schema) built from the core's values, and the pattern
that matches them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field

from service.core.estimate import Estimate
from service.core.window import Window, WindowKey

AVERAGE_DETAIL_TYPE: Final = "OrderManager.DrinkAverageTime"
ESTIMATE_DETAIL_TYPE: Final = "OrderManager.WaitEstimate"


class DrinkAverageTime(BaseModel):
    """``detail`` of ``OrderManager.DrinkAverageTime``, the event the service publishes."""

    model_config = ConfigDict(frozen=True)
    eventId: str = Field(description="tenant")
    drink: str
    duration: float = Field(
        ge=0, description="mean wait in seconds of the orders in the window (3 decimals)"
    )
    samples: int = Field(ge=1, description="orders averaged")
    window: int = Field(ge=1, description="configured window size N")
    version: int = Field(ge=1, description="rises with every change of this key's window")
    updatedAt: datetime


class DrinkWait(BaseModel):
    """A drink's line in a ``WaitEstimate``: the predicted wait and its p90, in seconds."""

    model_config = ConfigDict(frozen=True)
    estimate: float = Field(ge=0, description="predicted wait of an order placed now (s)")
    p90: float = Field(ge=0, description="the wait 90% of such orders stay under (s)")


class WaitEstimate(BaseModel):
    """A tenant's queue-aware estimate, the detail of ``OrderManager.WaitEstimate`` (what
    the worker publishes, and ``replay --estimates`` prints)."""

    model_config = ConfigDict(frozen=True)
    eventId: str = Field(description="tenant")
    asOf: datetime = Field(description="the event time the estimate is for (UTC)")
    openOrders: int = Field(ge=0, description="the tenant's orders open at asOf")
    drinks: dict[str, DrinkWait] = Field(
        description="per drink the tenant has completed counted orders of"
    )
    version: int = Field(ge=1, description="rises with every change of this tenant's estimate")


Published = DrinkAverageTime | WaitEstimate  # the details the service puts on the bus


def estimate_event(
    tenant: str,
    as_of: int,
    open_orders: int,
    drinks: dict[str, tuple[float, float]],
    version: int,
) -> WaitEstimate:
    """The detail of a tenant's estimate at ``version``."""
    return WaitEstimate(
        eventId=tenant,
        asOf=datetime.fromtimestamp(as_of, UTC),
        openOrders=open_orders,
        drinks={d: DrinkWait(estimate=e, p90=p) for d, (e, p) in sorted(drinks.items())},
        version=version,
    )


def estimate_detail(estimate: Estimate, version: int) -> WaitEstimate:
    """The detail of a tenant's estimate (``service.core.estimate``) at ``version``: what
    the worker publishes and ``replay --estimates`` prints."""
    drinks = {drink: (e.estimate, e.p90) for drink, e in estimate.drinks.items()}
    return estimate_event(estimate.tenant, estimate.as_of, estimate.open_orders, drinks, version)


def estimate_json(estimate: Estimate, version: int) -> bytes:
    """``estimate_detail(estimate, version).model_dump_json()``, byte for byte, without
    building the models: ``replay --estimates`` prints one per changed estimate, and the
    models' construction cost five times the parse of the events behind them
    (docs/performance.md, section 13). The estimate's values come from the model, already
    within the models' bounds; a test holds the two encodings equal."""
    as_of = estimate.as_of
    stamp = _STAMPS.get(as_of)
    if stamp is None:
        stamp = datetime.fromtimestamp(as_of, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if len(_STAMPS) >= 4096:
            _STAMPS.clear()
        _STAMPS[as_of] = stamp
    return _dumps(
        {
            "eventId": estimate.tenant,
            "asOf": stamp,
            "openOrders": estimate.open_orders,
            "drinks": {
                drink: {"estimate": e.estimate, "p90": e.p90}
                for drink, e in sorted(estimate.drinks.items())
            },
            "version": version,
        }
    )


_STAMPS: dict[int, str] = {}  # epoch seconds -> the detail's asOf: an event time repeats
_dumps = orjson.dumps


def average_event(
    key: WindowKey, window: Window, version: int, window_size: int, now: datetime | None = None
) -> DrinkAverageTime:
    """The published detail for a key's window at ``version`` (it has a counted order: a
    window with none is never published)."""
    tenant, drink = key
    duration = window.duration
    if duration is None:
        raise ValueError(f"no counted order in the window of {key}: nothing to publish")
    return DrinkAverageTime(
        eventId=tenant,
        drink=drink,
        duration=duration,
        samples=window.samples,
        window=window_size,
        version=version,
        updatedAt=(now or datetime.now(UTC)).replace(microsecond=0),
    )


def published_event_pattern(source: str) -> dict[str, Any]:
    """A pattern matching both events the service publishes, ``OrderManager.DrinkAverageTime``
    and ``OrderManager.WaitEstimate`` (for capture queues and consumers; a consumer of one
    of them lists its detail-type alone)."""
    return {"source": [source], "detail-type": [AVERAGE_DETAIL_TYPE, ESTIMATE_DETAIL_TYPE]}
