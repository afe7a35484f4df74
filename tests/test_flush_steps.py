"""The flush's pure steps (service/flush.py): values in, named values out, no fakes."""

from __future__ import annotations

import json

import pytest

from service.core.estimate import DrinkEstimate, Estimate
from service.core.orders import OrderEvent, Role
from service.core.pairing import Anomalous, OrderRecord
from service.core.window import Window, WindowEntry, WindowKey
from service.errors import PoisonMessageError
from service.flush import join_records, sort_records, to_publish, triage
from service.ports import Message, TenantChange, WindowChange, WindowState, final_poison
from service.settings import WorkerOptions
from tests.envelopes import envelope
from tests.helpers import order_record

pytestmark = pytest.mark.unit

NOW = 1_790_000_000
KEY: WindowKey = ("NYC", "Latte")
OPTIONS = WorkerOptions()


def message(body: object, message_id: str = "m1", receive_count: int = 1) -> Message:
    text = body if isinstance(body, str) else json.dumps(body)
    return Message(message_id, f"{message_id}/r", text, receive_count)


def event(role: Role, order_id: str, at: int, drink: str = "Latte") -> OrderEvent:
    tenant, named = ("NYC", drink) if role is Role.SUBMITTED else ("", None)
    return OrderEvent(role, order_id, at, tenant, named)


def test_triage_sorts_orders_poison_ignored_and_the_same_message_twice() -> None:
    submitted = message(envelope("submitted", "o1", at=NOW - 60), "m1")
    again = message(envelope("submitted", "o1", at=NOW - 60), "m1")
    ignored = message(envelope(detail_type="Validator.NewOrder", detail={}, at=NOW), "m2")
    poison = message("not json", "m3", receive_count=2)
    future = message(envelope("completed", "o1", at=NOW + 86401), "m4")
    found = triage([submitted, again, ignored, poison, future], OPTIONS, now=NOW)
    assert [(m.message_id, e.order_id) for m, e in found.orders] == [("m1", "o1")]
    assert [m.message_id for m in found.to_delete] == ["m1", "m2"]
    assert found.ignored == 1 and found.redelivered == 1
    assert [(m.message_id, e.reason) for m, e in found.poison] == [
        ("m3", "not_json"),
        ("m4", "time_in_future"),
    ]


def test_join_records_makes_one_record_per_order_expiring_after_the_ttl() -> None:
    orders = [
        (message({}, "m1"), event(Role.SUBMITTED, "a", 100)),
        (message({}, "m2"), event(Role.COMPLETED, "a", 160)),
        (message({}, "m3"), event(Role.COMPLETED, "b", 170)),
    ]
    records = {r.order_id: r for r in join_records(orders, now=NOW, ttl_seconds=600)}
    assert records["a"].submissions == ((100, "NYC", "Latte"),)
    assert records["a"].completions == (160,) and records["b"].completions == (170,)
    assert {r.expires_at for r in records.values()} == {NOW + 600}


def test_sort_records_once_per_order_with_late_halves_redeliveries_and_anomalies() -> None:
    orders = [
        (message({}, "m1", receive_count=2), event(Role.COMPLETED, "paired", 160)),
        (message({}, "m2"), event(Role.SUBMITTED, "paired", 100)),
        (message({}, "m3"), event(Role.SUBMITTED, "open", 100)),
        (message({}, "m4"), event(Role.COMPLETED, "late", 200)),
        (message({}, "m5"), event(Role.COMPLETED, "odd", 50)),
        (message({}, "m6"), event(Role.COMPLETED, "told", 50)),
    ]
    expires = NOW + 100
    stored = {
        "paired": order_record("paired", "NYC", "Latte", 100, 160, expires_at=expires),
        "open": order_record("open", "NYC", "Latte", 100, expires_at=expires),
        "late": order_record("late", "NYC", "Latte", 100, 200, expires_at=NOW),
        "odd": order_record("odd", "NYC", "Latte", 100, 50, expires_at=expires),
        "told": order_record("told", "NYC", "Latte", 100, 50, expires_at=expires)._replace(
            anomaly_reported=True
        ),
    }
    found = sort_records(orders, stored, now=NOW, max_wait_seconds=7200)
    assert [r.order_id for r in found.by_key[KEY]] == ["paired", "odd", "told"]
    assert found.redelivered == {KEY: {"paired"}}
    assert list(found.anomalous) == ["odd"]
    assert isinstance(found.anomalous["odd"], Anomalous) and found.anomalous["odd"].wait == -50
    assert found.late_halves == 1
    assert {r.order_id for r in found.by_tenant["NYC"]} == {"paired", "open", "odd", "told"}
    assert found.redelivered_tenants == {"NYC"}


def test_an_order_submitted_under_two_drinks_is_sorted_to_both_keys() -> None:
    record = order_record("o", "NYC", "Latte", 100, 160, expires_at=NOW + 1).join(
        order_record("o", "NYC", "Mocha", 110)
    )
    orders = [(message({}, "m1"), event(Role.COMPLETED, "o", 160))]
    found = sort_records(orders, {"o": record}, now=NOW, max_wait_seconds=7200)
    assert set(found.by_key) == {KEY, ("NYC", "Mocha")}


def change(key: WindowKey, order_ids: list[str], changed: bool) -> WindowChange:
    entries = tuple(WindowEntry(100 + i, o, 60) for i, o in enumerate(order_ids))
    return WindowChange(key, WindowState(Window(10, entries[::-1]), 3), changed)


def test_to_publish_takes_changed_windows_and_those_holding_a_redelivered_order() -> None:
    other: WindowKey = ("NYC", "Mocha")
    empty: WindowKey = ("NYC", "Tea")
    changes = [change(KEY, ["a"], True), change(other, ["b"], False), change(empty, [], True)]
    orders = [(message({}, "m1"), event(Role.COMPLETED, "b", 160))]
    stored = {"b": order_record("b", "NYC", "Mocha", 100, 160, expires_at=NOW + 1)}
    plain = sort_records(orders, stored, now=NOW, max_wait_seconds=7200)
    assert [c.key for c in to_publish(changes, plain.by_key, plain.redelivered, retried=False)] == [
        KEY
    ]
    redelivered = sort_records(
        [(message({}, "m1", receive_count=2), orders[0][1])],
        stored,
        now=NOW,
        max_wait_seconds=7200,
    )
    assert [
        c.key
        for c in to_publish(changes, redelivered.by_key, redelivered.redelivered, retried=False)
    ] == [KEY, other]
    # Retried: an earlier attempt may have written any key holding one of these orders.
    assert [c.key for c in to_publish(changes, plain.by_key, plain.redelivered, retried=True)] == [
        KEY,
        other,
    ]


def test_to_publish_takes_estimates_by_the_same_rule_as_averages() -> None:
    """Tenants go out as keys do: changed, or named by a redelivered order (every tenant
    of the flush when the commit was tried again), never without an estimate."""

    def estimate(tenant: str) -> Estimate:
        return Estimate(tenant, NOW, 1, {"Latte": DrinkEstimate(60.0, 90.0)})

    changes = [
        TenantChange("NYC", estimate("NYC"), 2, changed=False),
        TenantChange("LDN", estimate("LDN"), 1, changed=True),
        TenantChange("SYD", None, 1, changed=True),
    ]
    flushed: dict[str, list[OrderRecord]] = {"NYC": [], "LDN": [], "SYD": []}
    assert [c.tenant for c in to_publish(changes, flushed, set(), retried=False)] == ["LDN"]
    assert [c.tenant for c in to_publish(changes, flushed, {"NYC", "SYD"}, retried=False)] == [
        "NYC",
        "LDN",
    ]
    assert [c.tenant for c in to_publish(changes, flushed, set(), retried=True)] == ["NYC", "LDN"]


def test_final_poison_is_the_receive_that_reaches_the_redrive_limit() -> None:
    error = PoisonMessageError("not_json", "x")
    poison = [(message("x", f"m{n}", receive_count=n), error) for n in (1, 2, 3)]
    assert [m.message_id for m, _ in final_poison(poison, 2)] == ["m2", "m3"]
    assert [m.message_id for m, _ in final_poison(poison, None)] == ["m1", "m2", "m3"]


def test_a_redelivered_order_republishes_a_key_it_names_even_out_of_its_window() -> None:
    """A cancelled order left its window before a crash lost the publish: when its
    cancellation comes again, the key still goes out at its current version."""
    stored = {
        "gone": order_record("gone", "NYC", "Latte", 100, 160, expires_at=NOW + 1)._replace(
            cancelled=True, cancellations=(170,)
        )
    }
    orders = [(message({}, "m1", receive_count=2), event(Role.CANCELLED, "gone", 170))]
    found = sort_records(orders, stored, now=NOW, max_wait_seconds=7200)
    unchanged = [change(KEY, ["other"], False)]
    assert [
        c.key for c in to_publish(unchanged, found.by_key, found.redelivered, retried=False)
    ] == [KEY]
