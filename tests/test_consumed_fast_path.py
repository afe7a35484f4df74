"""The pydantic-free fast path never accepts what the models refuse, and agrees when it accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.consumed import _fast_path, _validated, role_of
from service.core.orders import Role
from service.errors import PoisonMessageError
from tests.envelopes import envelope as make_envelope
from tests.helpers import DATA


def _consumed_recordings() -> list[dict[str, Any]]:
    found = []
    for path in sorted(DATA.rglob("*.json")):
        data = json.loads(path.read_text())
        for envelope in data if isinstance(data, list) else [data]:
            if role_of(envelope["detail-type"]) is not None:
                found.append(envelope)
    return found


RECORDED = _consumed_recordings()

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.text(max_size=5),
    st.sampled_from(["", " x", "x ", "2022-10-14T12:52:21Z", "2022-10-14 12:52:21Z", "x" * 200]),
    # Twenty characters, a T and a Z where the canonical form has them: fromisoformat
    # reads a week date, RFC 3339 (and so the models) does not.
    st.sampled_from(["2022-W41-5T12:52:21Z", "2022-10-14T12:5221+Z", "12345", "1665751941"]),
    st.floats(allow_nan=False),
    st.just({}),
    st.just([]),
)

pytestmark = pytest.mark.unit


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    envelope = json.loads(json.dumps(draw(st.sampled_from(RECORDED))))
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(["envelope", "detail", "drinkOrder"]))
        holder = envelope
        if target != "envelope" and isinstance(envelope.get("detail"), dict):
            holder = envelope["detail"]
            if target == "drinkOrder" and isinstance(holder.get("drinkOrder"), dict):
                holder = holder["drinkOrder"]
        key = draw(
            st.sampled_from(
                [
                    "time",
                    "source",
                    "id",
                    "account",
                    "detail",
                    "orderId",
                    "drink",
                    "drinkOrder",
                    "eventId",
                    "state",
                ]
            )
        )
        if draw(st.booleans()):
            holder.pop(key, None)
        else:
            holder[key] = draw(odd_values)
    return envelope


@settings(max_examples=1500, deadline=None)
@given(mutated())
def test_fast_path_is_a_subset_of_the_models(envelope: dict[str, Any]) -> None:
    role = role_of(envelope["detail-type"])
    assert role is not None
    fast = _fast_path(envelope, role)
    if fast is None:
        return
    try:
        slow = _validated(envelope, role)
    except PoisonMessageError as exc:  # pragma: no cover - a failure is the finding
        raise AssertionError(f"fast path accepted what the models refuse: {exc}") from None
    assert fast == slow


def test_every_recording_takes_the_fast_path() -> None:
    for envelope in RECORDED:
        role = role_of(envelope["detail-type"])
        assert role is not None
        assert _fast_path(envelope, role) == _validated(envelope, role)


@pytest.mark.parametrize(
    ("tenant", "drink", "fast"),
    [
        ("NYC", "Latte", True),
        ("  NYC ", "Latte", True),  # the tenant is stripped (eventId is read as it is)
        ("N" * 128, "Latte", True),
        ("N" * 129, "Latte", False),  # an over-long tenant: poison, the models name it
        (" " + "N" * 128 + " ", "Latte", True),  # over-long only before it is stripped
        ("Zürich", "Latte", True),
        ("Zu\u0308rich", "Latte", True),  # decomposed: normalized to NFC
        ("NYC", "Caffè", True),
        ("NYC", "Caffe\u0300", False),  # a decomposed drink is not canonical
        ("NYC", " Latte", False),
        ("NYC", "Latte\u00a0", False),  # a non-ASCII blank
        ("NYC", "L" * 128, True),
        ("NYC", "L" * 129, False),
    ],
)
def test_the_inline_name_checks_agree_with_the_models(tenant: str, drink: str, fast: bool) -> None:
    """The fast path decides an ASCII tenant and drink inline, without normalize_name or
    tenant_of: it takes the shapes it took before, and what it accepts the models accept
    as the same event."""
    body = make_envelope("submitted", "order-1", at=1_790_000_000, tenant=tenant, drink=drink)
    found = _fast_path(body, Role.SUBMITTED)
    assert (found is not None) == fast
    if found is not None:
        assert found == _validated(body, Role.SUBMITTED)


@pytest.mark.parametrize(
    "time",
    ["2022-W41-5T12:52:21Z", "2022-10-14 12:52:21Z", "2022-10-14T12:52:21+00:00", 12345, "12345"],
)
def test_only_the_canonical_time_takes_the_fast_path(time: object) -> None:
    """A week date has the canonical form's length, T and Z, and fromisoformat reads it:
    the fast path must not, since RFC 3339 and so the models refuse it."""
    envelope = make_envelope("submitted", "o", at="2022-10-14T12:52:21Z", tenant="NYC")
    assert _fast_path(envelope, Role.SUBMITTED) is not None
    envelope["time"] = time
    assert _fast_path(envelope, Role.SUBMITTED) is None
