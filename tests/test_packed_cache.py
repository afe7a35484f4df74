"""The store's packed caches: ``PackedLru`` forgets as an ``Lru`` does and hands back what
was put, and a window's or a tenant's stored state survives being packed, whatever it
holds (service/lru.py, service/aws/items.py, service/aws/store.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.aws.store import (
    HOT_TENANTS,
    HOT_WINDOWS,
    pack_key,
    pack_tenant,
    unpack_key,
    unpack_tenant,
)
from service.core.commit import StoredKey, WindowCommit
from service.core.estimators.registry import estimate_options
from service.core.orders import OrderEvent, Role
from service.core.pairing import OrderRecord
from service.core.tenant import StoredTenant, TenantCommit, TenantState
from service.lru import Lru, PackedLru
from tests.helpers import order_record

pytestmark = pytest.mark.unit

MAX_WAIT = 600

operations = st.lists(
    st.tuples(st.sampled_from(["put", "get", "discard"]), st.integers(0, 12)), max_size=80
)


@settings(max_examples=200, deadline=None)
@given(operations, st.integers(1, 8), st.integers(1, 10))
def test_a_packed_lru_keeps_and_forgets_what_an_lru_does(
    ops: list[tuple[str, int]], capacity: int, hot: int
) -> None:
    """Same answers, same drops, same order as an ``Lru``; at most ``hot`` unpacked."""
    model: Lru[int, tuple[int, int]] = Lru(capacity)
    packed: PackedLru[int, tuple[int, int], str] = PackedLru(
        capacity, hot, lambda value: f"{value[0]}:{value[1]}", unpack
    )
    for step, (op, key) in enumerate(ops):
        if op == "put":
            assert packed.put(key, (key, step)) == model.put(key, (key, step))
        elif op == "get":
            assert packed.get(key) == model.get(key)
        else:
            packed.discard(key)
            model.discard(key)
        assert list(packed) == list(model)
        assert len(packed) == len(model) and all(k in packed for k in model)
        assert len(packed) - packed.packed <= min(hot, capacity)


def unpack(key: int, text: str) -> tuple[int, int]:
    """The test's unpacking: the packed text names its key."""
    owner, step = (int(n) for n in text.split(":"))
    assert owner == key
    return owner, step


def test_a_packed_lru_refuses_no_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PackedLru(0, 1, str, lambda _, text: text)
    with pytest.raises(ValueError, match="at least one"):
        PackedLru(1, 0, str, lambda _, text: text)


def test_the_store_keeps_its_hot_entries_unpacked() -> None:
    assert HOT_WINDOWS >= 100 and HOT_TENANTS >= 100  # a full flush's keys stay hot


# An order: submission (time, tenant, drink), completion / cancellation offsets, a second
# submission elsewhere: every shape a key's or a tenant's state can hold.
orders = st.lists(
    st.tuples(
        st.integers(0, 2000),
        st.sampled_from(["NYC", "LDN", 'Zürich "\n"\u2028']),
        st.sampled_from(["Latte", "Mocha"]),
        st.one_of(st.none(), st.integers(-50, 900)),
        st.one_of(st.none(), st.integers(-50, 900)),
        st.one_of(st.none(), st.integers(-30, 30)),
    ),
    max_size=30,
)


def records_of(planned: list[tuple[int, str, str, int | None, int | None, int | None]]):
    """Each planned order's record, with its expiry and an anomaly mark on some."""
    found = []
    for i, (s, tenant, drink, completion, cancel, again) in enumerate(planned):
        order_id = f"o{i}-\u00e9"
        events = [OrderEvent(Role.SUBMITTED, order_id, s, tenant, drink)]
        if again is not None:
            events.append(OrderEvent(Role.SUBMITTED, order_id, s + again, "LDN", drink))
        if completion is not None:
            events.append(OrderEvent(Role.COMPLETED, order_id, s + completion))
        if cancel is not None:
            events.append(OrderEvent(Role.CANCELLED, order_id, s + cancel))
        record = OrderRecord(order_id)
        for event in events:
            record = record.merge(event, expires_at=s + 1500)
        found.append(record._replace(anomaly_reported=i % 3 == 0))
    return found


@settings(max_examples=150, deadline=None)
@given(orders, st.integers(0, 4000), st.sampled_from([1, 3, 10]))
def test_a_window_comes_back_from_its_packed_form_as_it_was(
    planned: list, now: int, size: int
) -> None:
    records = records_of(planned)
    for key in {k for r in records if r.completions for k in r.keys}:
        named = [r for r in records if key in r.keys and r.completions]
        commit = WindowCommit(
            {key: named}, {key: StoredKey.empty(key, size)}, now=now, max_wait_seconds=MAX_WAIT
        )
        commit.landed(commit.proposals())
        (committed,) = commit.result()
        assert unpack_key(key, pack_key(committed.stored)) == committed.stored


@settings(max_examples=150, deadline=None)
@given(orders, st.integers(0, 4000))
def test_a_tenant_state_comes_back_from_its_packed_form_as_it_was(planned: list, now: int) -> None:
    records = records_of(planned)
    for tenant in {t for r in records for _, t, _ in r.submissions}:
        named = [r for r in records if tenant in {t for _, t, _ in r.submissions}]
        commit = TenantCommit(
            {tenant: named},
            {tenant: StoredTenant.empty(tenant)},
            now=now,
            options=estimate_options(MAX_WAIT),
        )
        commit.landed(commit.proposals())
        (committed,) = commit.result()
        assert unpack_tenant(tenant, pack_tenant(committed.stored)) == committed.stored


def test_a_tenant_estimate_comes_back_from_its_packed_form_with_every_drink() -> None:
    """A trained tenant: its view, per drink, survives packing exactly."""
    records = []
    for i in range(40):
        drink = ("Latte", "Mocha", "Espresso")[i % 3]
        record = order_record(f"o{i}", "NYC", drink, 1000 + 30 * i, 1000 + 30 * i + 60 + 7 * i)
        records.append(record)
    stored = StoredTenant.of(
        TenantState("NYC").add(records), 3, now=5000, options=estimate_options(MAX_WAIT)
    )
    assert stored.view is not None and len(stored.view.drinks) == 3
    assert unpack_tenant("NYC", pack_tenant(stored)) == stored
