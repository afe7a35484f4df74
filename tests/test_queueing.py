"""A tenant's queue (service/core/queueing.py): open orders and the estimate, against a
brute-force reference, whatever the delivery order, duplication and pruning."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core import queueing
from service.core.orders import OrderEvent, Role
from service.core.pairing import OrderRecord
from service.core.queueing import (
    LONE_EVENT_GAP,
    MIN_TRAINING,
    EstimateBook,
    Sample,
    TenantState,
    fit,
)

pytestmark = pytest.mark.unit

MAX_WAIT = 600


def record(order_id: str, *events: OrderEvent) -> OrderRecord:
    current = OrderRecord(order_id)
    for event in events:
        current = current.merge(event)
    return current


def sub(order_id: str, at: int, tenant: str = "NYC", drink: str = "Latte") -> OrderEvent:
    return OrderEvent(Role.SUBMITTED, order_id, at, tenant, drink)


def done(order_id: str, at: int) -> OrderEvent:
    return OrderEvent(Role.COMPLETED, order_id, at)


def gone(order_id: str, at: int) -> OrderEvent:
    return OrderEvent(Role.CANCELLED, order_id, at)


def open_brute_force(events: list[OrderEvent], tenant: str, t: int) -> int:
    """Open at t, straight from the definition, over every event."""
    orders: dict[str, list[OrderEvent]] = {}
    for event in events:
        orders.setdefault(event.order_id, []).append(event)
    count = 0
    for mine in orders.values():
        subs = sorted((e.time, e.tenant, e.drink or "") for e in mine if e.role is Role.SUBMITTED)
        if not subs or subs[0][1] != tenant:
            continue
        s = subs[0][0]
        ended = any(e.time <= t for e in mine if e.role is not Role.SUBMITTED)
        if s <= t and not ended and t - s <= MAX_WAIT:
            count += 1
    return count


orders = st.lists(
    st.tuples(
        st.integers(0, 2000),  # submission
        st.sampled_from(["NYC", "LDN"]),
        st.sampled_from(["Latte", "Mocha"]),
        st.one_of(st.none(), st.integers(-50, 900)),  # completion after submission
        st.one_of(st.none(), st.integers(-50, 900)),  # cancellation after submission
        st.one_of(st.none(), st.integers(-30, 30)),  # a second submission, offset
    ),
    max_size=25,
)


def events_of(planned: list[tuple[int, str, str, int | None, int | None, int | None]]):
    events = []
    for i, (s, tenant, drink, completion, cancel, again) in enumerate(planned):
        order_id = f"o{i}"
        events.append(sub(order_id, s, tenant, drink))
        if again is not None:
            events.append(sub(order_id, s + again, "LDN" if tenant == "NYC" else "NYC", drink))
        if completion is not None:
            events.append(done(order_id, s + completion))
        if cancel is not None:
            events.append(gone(order_id, s + cancel))
    return events


@settings(max_examples=150, deadline=None)
@given(orders, st.randoms(use_true_random=False), st.integers(0, 3000), st.sampled_from([3, 150]))
def test_open_orders_are_the_definitions_whatever_the_delivery(
    planned: list, rng: random.Random, as_of: int, training: int
) -> None:
    """Events delivered in any order, some twice, in flushes of any size, pruned at every
    step at a clock that never goes back: the open count at ``as_of`` and the training
    samples are those of the set of events. With 3 training orders, pruning drops ended
    orders as in a busy bar."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queueing, "TRAINING_ORDERS", training)
        patch.setattr(queueing, "MIN_TRAINING", min(training, queueing.MIN_TRAINING))
        check_delivery(planned, rng, as_of)


def check_delivery(planned: list, rng: random.Random, as_of: int) -> None:
    events = events_of(planned)
    delivered = events + rng.sample(events, len(events) // 3)
    rng.shuffle(delivered)
    records: dict[str, OrderRecord] = {}
    state = TenantState("NYC")
    clock = 0
    while delivered:
        size = rng.randint(1, 4)
        flush, delivered = delivered[:size], delivered[size:]
        touched = []
        for event in flush:
            records[event.order_id] = (
                records.get(event.order_id) or OrderRecord(event.order_id)
            ).merge(event)
            touched.append(records[event.order_id])
        clock = min(as_of, max(clock, *(e.time for e in flush)))
        state, _ = state.add(touched).prune(clock, MAX_WAIT)
    state, _ = state.prune(as_of, MAX_WAIT)
    reference = TenantState("NYC").add(records.values())
    found = state.estimate(as_of, MAX_WAIT)
    expected = reference.estimate(as_of, MAX_WAIT)
    if found is None or expected is None:
        assert found is None or found.open_orders == 0
        assert open_brute_force(events, "NYC", as_of) == 0
        return
    assert found.open_orders == expected.open_orders == open_brute_force(events, "NYC", as_of)
    assert found == expected


def test_orders_ahead_count_cancellations_until_they_happen() -> None:
    state = TenantState("NYC").add(
        [
            record("a", sub("a", 100)),
            record("b", sub("b", 110), gone("b", 200)),
            record("c", sub("c", 120), done("c", 150)),
            record("x", sub("x", 130, tenant="LDN")),
        ]
    )
    assert [state.estimate(t, MAX_WAIT).open_orders for t in (99, 100, 149, 150, 200)] == [  # type: ignore[union-attr]
        0,
        1,
        3,
        2,
        1,
    ]
    assert state.estimate(100 + MAX_WAIT + 1, MAX_WAIT).open_orders == 0  # type: ignore[union-attr]


def queue_of(waits: list[tuple[int, int, int]], drink: str = "Latte") -> list[OrderRecord]:
    """Orders (id number, submitted, waited)."""
    return [
        record(f"o{i}", sub(f"o{i}", s, drink=drink), done(f"o{i}", s + w)) for i, s, w in waits
    ]


def test_no_estimate_before_enough_counted_orders_and_none_for_an_unknown_drink() -> None:
    few = TenantState("NYC").add(queue_of([(i, i * 100, 60) for i in range(MIN_TRAINING - 1)]))
    assert few.estimate(10_000, MAX_WAIT).drinks == {}  # type: ignore[union-attr]
    enough = TenantState("NYC").add(queue_of([(i, i * 100, 60) for i in range(MIN_TRAINING)]))
    drinks = enough.estimate(10_000, MAX_WAIT).drinks  # type: ignore[union-attr]
    assert set(drinks) == {"Latte"} and drinks["Latte"].estimate == 60.0
    assert TenantState("LDN").add(queue_of([(0, 0, 60)])).estimate(100, MAX_WAIT) is None


def test_cancelled_and_anomalous_orders_never_train_it() -> None:
    base = queue_of([(i, i * 100, 60) for i in range(MIN_TRAINING)])
    noisy = [
        record("x1", sub("x1", 50), done("x1", 5000), gone("x1", 60)),
        record("x2", sub("x2", 60), done("x2", 60 + MAX_WAIT + 1)),
        record("x3", sub("x3", 70), done("x3", 10)),
    ]
    clean = TenantState("NYC").add(base).estimate(20_000, MAX_WAIT)
    dirty = TenantState("NYC").add([*base, *noisy]).estimate(20_000, MAX_WAIT)
    assert clean is not None and dirty is not None and clean.drinks == dirty.drinks


def test_the_fit_learns_the_knee_and_the_rate_of_a_queue() -> None:
    """Two baristas, 100 s an order: past two ahead each order adds 50 s."""
    samples = [Sample("Latte", ahead, 100 + 50 * max(0, ahead - 1)) for ahead in range(12)]
    model = fit(samples)
    assert model is not None and model.knee == 2
    assert model.predict("Latte", 0) == pytest.approx(100)
    assert model.predict("Latte", 9) == pytest.approx(100 + 50 * 8)
    assert model.p90_ratio == pytest.approx(1.0)


def test_one_event_stamped_ahead_neither_freezes_nor_empties_the_estimate() -> None:
    """An accepted event an hour ahead of the others stands alone: the estimate stays for the
    tenant's other latest event, and keeps moving with them."""
    orders = queue_of([(i, i * 30, 60) for i in range(10)])
    orders += [record("open1", sub("open1", 400)), record("open2", sub("open2", 410))]
    state = TenantState("NYC").add(orders)
    assert state.latest_event() == 410 + 0 or state.latest_event() == 330
    ahead = record("ahead", sub("ahead", 410 + LONE_EVENT_GAP + 3600))
    skewed = state.add([ahead])
    assert skewed.latest_event() == state.latest_event()
    assert skewed.estimate(skewed.latest_event() or 0, MAX_WAIT).open_orders == 2  # type: ignore[union-attr]
    moved = skewed.add([record("open3", sub("open3", 420))])
    assert moved.latest_event() == 420  # not frozen: the real events still move it
    assert moved.estimate(420, MAX_WAIT).open_orders == 3  # type: ignore[union-attr]


def test_the_book_publishes_only_changes_at_rising_versions() -> None:
    book = EstimateBook(MAX_WAIT)
    first = book.update([record("a", sub("a", 100))], now=100)
    assert [(v.estimate.open_orders, v.version) for v in first] == [(1, 1)]
    assert book.update([record("a", sub("a", 100))], now=105) == []  # as_of alone: no change
    second = book.update([record("b", sub("b", 110))], now=110)
    assert [(v.estimate.open_orders, v.version, v.estimate.as_of) for v in second] == [(2, 2, 110)]
