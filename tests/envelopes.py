"""The one builder of EventBridge envelopes of order events, for the tests and the benchmark.

``envelope`` gives the envelope as the rule delivers it to the queue (every field
EventBridge sets, in its order, its canonical ``YYYY-MM-DDTHH:MM:SSZ`` time), either of an
order event named by its kind, or of any detail-type around any detail.

The service itself never builds one: the player sends PutEvents entries
(``service.tools.player.to_entry``) and EventBridge wraps them. This module is apart from
tests/helpers.py because the benchmark imports it (bench/core.py, and through it the
memory benchmark's measured child process): it must not pull in pytest or the emulators.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from service.core.consumed import (
    LEGACY_CANCELLED_DETAIL_TYPE,
    LEGACY_COMPLETED_DETAIL_TYPE,
    ORDER_FINISHED_DETAIL_TYPE,
    SUBMITTED_DETAIL_TYPE,
    TENANT_ORDER_PREFIX,
    TIMED_OUT_DETAIL_TYPE,
)
from service.settings import DEFAULT_SOURCE

Kind = Literal["submitted", "completed", "cancelled", "timeout", "finished"]
ACCOUNT = "123456789012"
REGION = "us-east-1"


def iso(epoch: float) -> str:
    """EventBridge's envelope time format (whole seconds, UTC, ``Z``)."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def detail_type_of(kind: Kind, tenant: str = "NYC") -> str:
    """The detail-type of an order event; tenant ``""`` is the 2021 shape's legacy names."""
    if kind == "submitted":
        return SUBMITTED_DETAIL_TYPE
    if kind == "timeout":
        return TIMED_OUT_DETAIL_TYPE
    if kind == "finished":
        return ORDER_FINISHED_DETAIL_TYPE
    if not tenant:
        return LEGACY_COMPLETED_DETAIL_TYPE if kind == "completed" else LEGACY_CANCELLED_DETAIL_TYPE
    return f"{TENANT_ORDER_PREFIX}{tenant}-{kind.upper()}"


def envelope(
    kind: Kind | None = None,
    order_id: str | None = None,
    *,
    at: float | str,
    tenant: str = "NYC",
    drink: str = "Latte",
    detail_type: str | None = None,
    detail: dict[str, Any] | None = None,
    id: str = "",
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """The envelope of one event, as the queue receives it.

    An order event by ``kind``: its detail-type from the kind and ``tenant``; its detail
    ``orderId``, ``eventId`` (the tenant; left out when ``tenant`` is ``""``, the 2021
    shape, whose detail-types are then the legacy ones), and for a submission
    ``drinkOrder.drink``. ``order_id=None`` leaves ``orderId`` out (a malformed event).

    Any other event: ``detail_type`` and ``detail`` as given (either one also replaces what
    ``kind`` would give, e.g. for a malformed detail). ``at``: epoch seconds, or a string
    used as the time verbatim (a malformed or far-future one).
    """
    if kind is None:
        if detail_type is None or detail is None:
            raise ValueError("without a kind, give both detail_type and detail")
    else:
        if detail_type is None:
            detail_type = detail_type_of(kind, tenant)
        if detail is None:
            detail = {} if order_id is None else {"orderId": order_id}
            if tenant:
                detail["eventId"] = tenant
            if kind == "submitted":
                detail["drinkOrder"] = {"drink": drink}
    return {
        "version": "0",
        "id": id,
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": at if isinstance(at, str) else iso(at),
        "region": REGION,
        "resources": [],
        "detail": detail,
    }
