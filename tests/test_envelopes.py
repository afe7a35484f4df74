"""The shared envelope builder (tests/envelopes.py) gives what the worker reads as meant."""

from __future__ import annotations

import json

import pytest

from service.core.consumed import ORDER_FINISHED, parse_body, parse_envelope
from service.core.orders import OrderEvent, Role
from service.errors import PoisonMessageError
from service.settings import DEFAULT_SOURCE
from tests.envelopes import Kind, envelope

pytestmark = pytest.mark.unit

AT = 1_790_000_000  # 2026-09-21T14:13:20Z


@pytest.mark.parametrize(
    ("kind", "tenant", "detail_type", "role"),
    [
        ("submitted", "NYC", "OrderManager.WaitingCompletion", Role.SUBMITTED),
        ("completed", "NYC", "OrderManager.OrderNYC-COMPLETED", Role.COMPLETED),
        ("cancelled", "NYC", "OrderManager.OrderNYC-CANCELLED", Role.CANCELLED),
        ("timeout", "NYC", "OrderProcessor.OrderTimeOut", Role.CANCELLED),
        # The 2021 shape: no tenant in the detail, the legacy detail-types.
        ("submitted", "", "OrderManager.WaitingCompletion", Role.SUBMITTED),
        ("completed", "", "OrderManager.OrderCompleted", Role.COMPLETED),
        ("cancelled", "", "OrderManager.OrderCancelled", Role.CANCELLED),
    ],
)
def test_every_kind_round_trips_through_the_workers_parser(
    kind: Kind, tenant: str, detail_type: str, role: Role
) -> None:
    built = envelope(kind, "o-1", at=AT, tenant=tenant, drink="Flat White", id="e-1")
    assert built["detail-type"] == detail_type
    assert built["time"] == "2026-09-21T14:13:20Z"
    assert ("eventId" in built["detail"]) == bool(tenant)
    event = parse_body(json.dumps(built), source=DEFAULT_SOURCE)
    if role is Role.SUBMITTED:
        assert event == OrderEvent(role, "o-1", AT, tenant, "Flat White", "e-1")
    else:  # a completion's or cancellation's tenant is never read
        assert event == OrderEvent(role, "o-1", AT, "", None, "e-1")


def test_the_workflows_end_is_ignored_unless_it_is_the_completion_event() -> None:
    built = envelope("finished", "o-1", at=AT)
    assert built["detail-type"] == "OrderProcessor.orderFinished"
    assert parse_envelope(built) is None
    assert parse_envelope(built, completion=ORDER_FINISHED) == OrderEvent(Role.COMPLETED, "o-1", AT)


def test_any_detail_type_and_detail_as_given() -> None:
    built = envelope(detail_type="OrderProcessor.WorkflowStarted", detail={"orderId": "o"}, at=AT)
    assert built["detail"] == {"orderId": "o"}
    assert parse_envelope(built) is None  # an ignored type
    with pytest.raises(ValueError, match="detail_type and detail"):
        envelope(detail={"orderId": "o"}, at=AT)
    assert envelope("completed", at=AT, source="elsewhere")["source"] == "elsewhere"


def test_malformed_variants_are_the_poison_they_mean_to_be() -> None:
    with pytest.raises(PoisonMessageError) as no_order:
        parse_envelope(envelope("completed", None, at=AT))
    assert no_order.value.reason == "missing_order_id"
    with pytest.raises(PoisonMessageError) as bad_time:
        parse_envelope(envelope("submitted", "o", at="yesterday"))
    assert bad_time.value.reason == "invalid_time"
    with pytest.raises(PoisonMessageError) as no_drink:
        parse_envelope(envelope("submitted", detail={"orderId": "o", "drinkOrder": {}}, at=AT))
    assert no_drink.value.reason == "missing_drink"


def test_an_offset_time_means_the_same_instant_as_the_canonical_one() -> None:
    # Some tests built envelopes with ``isoformat()`` times (``+00:00``) before the builder
    # was shared; it writes EventBridge's ``Z`` form, so the other form is checked here.
    canonical = envelope("submitted", "o", at=AT)
    offset = envelope("submitted", "o", at="2026-09-21T14:13:20+00:00")
    assert parse_envelope(offset) == parse_envelope(canonical)
