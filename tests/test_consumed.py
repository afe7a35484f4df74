"""Event models against the real recordings and against hostile input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.consumed import consumed_event_pattern, parse_body, parse_envelope, role_of
from service.core.estimate import DrinkEstimate, Estimate
from service.core.orders import Role
from service.core.published import estimate_detail, estimate_json
from service.errors import PoisonMessageError
from tests import envelopes
from tests.helpers import DATA

pytestmark = pytest.mark.unit

RECORDINGS = sorted(DATA.rglob("*.json"))


def _envelopes(path: Path) -> list[dict[str, object]]:
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else [data]


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_every_recording_parses_or_is_ignored(path: Path) -> None:
    for envelope in _envelopes(path):
        event = parse_envelope(envelope)
        expected = role_of(str(envelope["detail-type"]))
        assert (event is None) == (expected is None)
        if event is not None:
            assert event.role is expected
            assert event.order_id


def test_roles_of_detail_types() -> None:
    assert role_of("OrderManager.WaitingCompletion") is Role.SUBMITTED
    assert role_of("OrderManager.OrderNYC-COMPLETED") is Role.COMPLETED
    assert role_of("OrderManager.OrderCompleted") is Role.COMPLETED
    assert role_of("OrderManager.OrderABC123-CANCELLED") is Role.CANCELLED
    assert role_of("OrderManager.OrderCancelled") is Role.CANCELLED
    assert role_of("OrderProcessor.OrderTimeOut") is Role.CANCELLED
    for ignored in (
        "OrderProcessor.orderFinished",
        "OrderProcessor.WaitingCompletion",
        "Validator.NewOrder",
        "OrderManager.OrderStarted",
        "OrderManager.DrinkAverageTime",
    ):
        assert role_of(ignored) is None


def test_tenant_rules_for_the_three_shapes() -> None:
    samples = DATA / "samples"
    current = parse_envelope(
        _envelopes(DATA / "event-player/OrderManager.WaitingCompletion__events-json-index6.json")[0]
    )
    shape_2022 = parse_envelope(
        _envelopes(samples / "OrderManager.WaitingCompletion__6-publisher-service.json")[0]
    )
    shape_2021 = parse_envelope(
        _envelopes(samples / "OrderManager.WaitingCompletion__7-metrics-service.json")[0]
    )
    assert current is not None and (current.tenant, current.drink) == ("NYC", "Flat White")
    assert shape_2022 is not None and (shape_2022.tenant, shape_2022.drink) == (
        "ABC123",
        "Americano",
    )
    assert shape_2021 is not None and (shape_2021.tenant, shape_2021.drink) == ("", "Cafe Mocha")


def test_envelope_time_is_used_and_account_is_optional() -> None:
    pair = sorted((DATA / "event-player/order-7ea64372-lifecycle").glob("*.json"))
    submitted, completed = (parse_envelope(_envelopes(p)[0]) for p in pair[:2])
    assert submitted is not None and completed is not None
    assert completed.time - submitted.time == 21
    envelope = _envelopes(pair[0])[0]
    del envelope["account"]
    assert parse_envelope(envelope) == submitted


def _submission(**detail_overrides: object) -> dict[str, object]:
    built = envelopes.envelope("submitted", "o-1", at="2026-11-26T18:00:00Z", drink="Caffe Latte")
    built["detail"].update(detail_overrides)
    return built


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not_json"),
        (b'{"detail-type": "OrderManager.WaitingCompletion", ', "not_json"),
        (b"[1, 2]", "not_an_envelope"),
        (b"42", "not_an_envelope"),
        (b'{"source": "x"}', "not_an_envelope"),
        (json.dumps({**_submission(), "detail": None}).encode(), "invalid_detail"),
        (
            json.dumps({k: v for k, v in _submission().items() if k != "detail"}).encode(),
            "missing_detail",
        ),
        (json.dumps({**_submission(), "detail": "text"}).encode(), "invalid_detail"),
        (json.dumps(_submission(orderId=None)).encode(), "invalid_order_id"),
        (json.dumps(_submission(orderId="")).encode(), "invalid_order_id"),
        (json.dumps(_submission(orderId=42)).encode(), "invalid_order_id"),
        (json.dumps(_submission(orderId="x" * 10_000)).encode(), "invalid_order_id"),
        (json.dumps(_submission(drinkOrder={})).encode(), "missing_drink"),
        (json.dumps({**_submission(), "time": "yesterday"}).encode(), "invalid_time"),
        # RFC 3339 strings only: pydantic's lax datetime would read these as epoch seconds.
        (json.dumps({**_submission(), "time": 12345}).encode(), "invalid_time"),
        (json.dumps({**_submission(), "time": 1665751941.5}).encode(), "invalid_time"),
        (json.dumps({**_submission(), "time": "12345"}).encode(), "invalid_time"),
        (json.dumps({**_submission(), "time": "1.5e3"}).encode(), "invalid_time"),
        (json.dumps({**_submission(), "time": True}).encode(), "invalid_time"),
        (json.dumps({**_submission(), "time": "2022-W41-5T12:52:21Z"}).encode(), "invalid_time"),
        (json.dumps({**_submission(), "time": "2022-10-14T12:52:21"}).encode(), "invalid_time"),
        (json.dumps({**_submission(), "time": "2022-10-14T12:52Z"}).encode(), "invalid_time"),
        (
            json.dumps({**_submission(), "time": "2022-10-14T12:52:21+0000"}).encode(),
            "invalid_time",
        ),
        (json.dumps({**_submission(), "time": "2999-01-01T00:00:00Z"}).encode(), "time_in_future"),
        (b" " * 300_000, "oversized"),
    ],
)
def test_poison_messages_have_a_reason(body: bytes, reason: str) -> None:
    missing_id = json.loads(json.dumps(_submission()))
    del missing_id["detail"]["orderId"]
    with pytest.raises(PoisonMessageError) as caught:
        parse_body(body, not_after=2_000_000_000)
    assert caught.value.reason == reason


def test_missing_order_id_is_poison() -> None:
    envelope = _submission()
    del envelope["detail"]["orderId"]  # type: ignore[attr-defined]
    with pytest.raises(PoisonMessageError) as caught:
        parse_envelope(envelope)
    assert caught.value.reason == "missing_order_id"


def test_non_ascii_names_are_kept() -> None:
    event = parse_envelope(_submission(eventId="Zürich☕", drinkOrder={"drink": "Café crème"}))
    assert event is not None and (event.tenant, event.drink) == ("Zürich☕", "Café crème")


def test_other_sources_are_ignored() -> None:
    envelope = {**_submission(), "source": "someone.else"}
    assert parse_envelope(envelope, source="awsserverlessda.serverlesspresso") is None


def test_rule_pattern_lists_exactly_the_consumed_types() -> None:
    pattern = consumed_event_pattern("awsserverlessda.serverlesspresso")
    plain = [p for p in pattern["detail-type"] if isinstance(p, str)]
    assert all(role_of(p) is not None for p in plain)


def test_the_recordings_are_present() -> None:
    # conftest refuses to start without them; without them most tests here would prove nothing.
    assert len(RECORDINGS) >= 20, f"expected the recordings under {DATA}"


def test_the_completion_event_option_swaps_which_event_ends_a_wait() -> None:
    finished, completed = "OrderProcessor.orderFinished", "OrderManager.OrderNYC-COMPLETED"
    assert role_of(finished) is None and role_of(completed) is Role.COMPLETED
    assert role_of(finished, "order-finished") is Role.COMPLETED
    assert role_of(completed, "order-finished") is None  # not two completion events
    for cancel in ("OrderManager.OrderNYC-CANCELLED", "OrderProcessor.OrderTimeOut"):
        assert role_of(cancel, "order-finished") is Role.CANCELLED  # still excludes
    recorded = json.loads(
        (DATA / "event-player/order-7ea64372-lifecycle")
        .joinpath("03_OrderProcessor.orderFinished__events-json-index68.json")
        .read_text()
    )
    event = parse_envelope(recorded, completion="order-finished")
    assert event is not None and event.role is Role.COMPLETED
    assert parse_envelope(recorded) is None
    pattern = consumed_event_pattern("s", "order-finished")["detail-type"]
    assert finished in pattern and not any("COMPLETED" in str(entry) for entry in pattern)


def test_names_are_one_key_whichever_way_they_are_written() -> None:
    def submission(tenant_fields: dict[str, object], drink: str) -> bytes:
        detail = {"orderId": "o", "drinkOrder": {"drink": drink}, **tenant_fields}
        return json.dumps(
            envelopes.envelope("submitted", detail=detail, at="2026-01-01T00:00:00Z", source="s")
        ).encode()

    composed = parse_body(submission({"eventId": " NYC "}, "Caff\u00e8"))
    decomposed = parse_body(submission({"state": " NYC -CREATED"}, "Caffe\u0300 "))
    assert composed is not None and decomposed is not None
    assert (composed.tenant, composed.drink) == (decomposed.tenant, decomposed.drink)
    assert composed.drink == "Caff\u00e8"
    with pytest.raises(PoisonMessageError) as long_tenant:
        parse_body(submission({"eventId": "T" * 129}, "Latte"))
    assert long_tenant.value.reason == "invalid_tenant"
    with pytest.raises(PoisonMessageError) as long_drink:
        parse_body(submission({"eventId": "NYC"}, "L" * 129))
    assert long_drink.value.reason == "invalid_drink"


@settings(max_examples=300, deadline=None)
@given(
    tenant=st.text(max_size=12),
    as_of=st.integers(min_value=0, max_value=4_102_444_800),  # to 2100-01-01
    open_orders=st.integers(min_value=0, max_value=10**6),
    drinks=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.tuples(
            st.integers(min_value=0, max_value=10**5), st.integers(min_value=0, max_value=10**5)
        ),
        max_size=6,
    ),
    version=st.integers(min_value=1, max_value=2**53),
)
def test_the_estimates_json_is_the_models_byte_for_byte(
    tenant: str,
    as_of: int,
    open_orders: int,
    drinks: dict[str, tuple[int, int]],
    version: int,
) -> None:
    """``replay --estimates`` prints ``estimate_json``: the bytes the published model dumps
    (names with quotes, controls and non-ASCII; the model's sorted drinks; whole floats)."""
    estimate = Estimate(
        tenant,
        as_of,
        open_orders,
        {d: DrinkEstimate(float(e), float(p)) for d, (e, p) in drinks.items()},
    )
    expected = estimate_detail(estimate, version).model_dump_json().encode()
    assert estimate_json(estimate, version) == expected
    assert estimate_json(estimate, version) == expected  # and from its cache of stamps
