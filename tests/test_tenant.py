"""A tenant's queue (service/core/tenant.py, its indexed shape service/core/tenant_index.py,
its rules over plain values service/core/tenant_rules.py, the hinge service/core/estimators/hinge.py): open
orders and the estimate, against a brute-force reference, whatever the delivery order,
duplication and pruning."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.aws.items import encode_tenant_orders
from service.core import tenant as tenant_rules
from service.core.estimators import hinge
from service.core.estimators.base import EstimateOptions, Sample
from service.core.estimators.hinge import MIN_TRAINING, HingeEstimator, Model
from service.core.estimators.registry import estimate_options
from service.core.orders import OrderEvent, Role
from service.core.pairing import InForce, OrderRecord
from service.core.tenant import (
    MAX_TENANT_BYTES,
    MAX_TENANT_ORDERS,
    StoredTenant,
    TenantCommit,
    TenantState,
    stored_size,
    view_of,
)
from service.core.tenant_index import EstimateBook, LiveTenant, Versioned
from service.core.tenant_rules import (
    LONE_EVENT_GAP,
    open_interval,
    recent_start,
    unended_kept,
    unended_kept_from,
    unended_open_at,
)
from service.flush import scores
from service.ports import TenantChange

pytestmark = pytest.mark.unit

MAX_WAIT = 600
OPTIONS = estimate_options(MAX_WAIT)


def training_options(training: int, min_training: int | None = None) -> EstimateOptions:
    """The options with ``training`` training orders (at most that many needed)."""
    least = min(training, MIN_TRAINING) if min_training is None else min_training
    return estimate_options(MAX_WAIT, training_orders=training, min_training=least)


def fit(samples: list[Sample]) -> Model | None:
    """The hinge's fit, by a fresh estimator (nothing cached)."""
    return HingeEstimator(MAX_WAIT).learn(samples)


def states_of(book: EstimateBook) -> dict[str, TenantState]:
    """Every tenant's state in a book, as a ``TenantState``."""
    return {tenant: live.state() for tenant, live in book.live.items()}


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
    check_delivery(planned, rng, as_of, training_options(training))


def check_delivery(planned: list, rng: random.Random, as_of: int, options: EstimateOptions) -> None:
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
        state, _ = state.add(touched).prune(clock, options)
    state, _ = state.prune(as_of, options)
    reference = TenantState("NYC").add(records.values())
    found = state.estimate(as_of, options)
    expected = reference.estimate(as_of, options)
    if found is None or expected is None:
        assert found is None or found.open_orders == 0
        assert open_brute_force(events, "NYC", as_of) == 0
        return
    assert found.open_orders == expected.open_orders == open_brute_force(events, "NYC", as_of)
    assert found == expected


@given(st.integers(-5000, 5000), st.integers(-5000, 5000), st.integers(0, 3600))
def test_the_unended_orders_open_at_t_are_those_whose_open_interval_holds_it(
    submitted: int, t: int, max_wait: int
) -> None:
    start, stop = open_interval(submitted, None, max_wait)
    low, high = unended_open_at(t, max_wait)
    assert (low <= submitted < high) == (start <= t < stop)


@given(st.lists(st.integers(0, 50), unique=True), st.integers(1, 10))
def test_the_recent_orders_are_the_latest_training_orders_completed(
    completed: list[int], training_orders: int
) -> None:
    completed.sort()
    recent = completed[recent_start(len(completed), training_orders) :]
    assert recent == sorted(completed, reverse=True)[:training_orders][::-1]


@given(st.integers(-5000, 5000), st.integers(-5000, 5000), st.integers(0, 3600))
def test_pruning_keeps_an_unended_order_submitted_from_the_bound_on(
    submitted: int, horizon: int, max_wait: int
) -> None:
    earliest = unended_kept_from(horizon, horizon, max_wait)
    assert unended_kept(submitted, earliest) == (submitted >= horizon - max_wait)


def test_orders_ahead_count_cancellations_until_they_happen() -> None:
    state = TenantState("NYC").add(
        [
            record("a", sub("a", 100)),
            record("b", sub("b", 110), gone("b", 200)),
            record("c", sub("c", 120), done("c", 150)),
            record("x", sub("x", 130, tenant="LDN")),
        ]
    )
    assert [state.estimate(t, OPTIONS).open_orders for t in (99, 100, 149, 150, 200)] == [  # type: ignore[union-attr]
        0,
        1,
        3,
        2,
        1,
    ]
    assert state.estimate(100 + MAX_WAIT + 1, OPTIONS).open_orders == 0  # type: ignore[union-attr]


def queue_of(waits: list[tuple[int, int, int]], drink: str = "Latte") -> list[OrderRecord]:
    """Orders (id number, submitted, waited)."""
    return [
        record(f"o{i}", sub(f"o{i}", s, drink=drink), done(f"o{i}", s + w)) for i, s, w in waits
    ]


def test_no_estimate_before_enough_counted_orders_and_none_for_an_unknown_drink() -> None:
    few = TenantState("NYC").add(queue_of([(i, i * 100, 60) for i in range(MIN_TRAINING - 1)]))
    assert few.estimate(10_000, OPTIONS).drinks == {}  # type: ignore[union-attr]
    enough = TenantState("NYC").add(queue_of([(i, i * 100, 60) for i in range(MIN_TRAINING)]))
    drinks = enough.estimate(10_000, OPTIONS).drinks  # type: ignore[union-attr]
    assert set(drinks) == {"Latte"} and drinks["Latte"].estimate == 60.0
    assert TenantState("LDN").add(queue_of([(0, 0, 60)])).estimate(100, OPTIONS) is None


def test_cancelled_and_anomalous_orders_never_train_it() -> None:
    base = queue_of([(i, i * 100, 60) for i in range(MIN_TRAINING)])
    noisy = [
        record("x1", sub("x1", 50), done("x1", 5000), gone("x1", 60)),
        record("x2", sub("x2", 60), done("x2", 60 + MAX_WAIT + 1)),
        record("x3", sub("x3", 70), done("x3", 10)),
    ]
    clean = TenantState("NYC").add(base).estimate(20_000, OPTIONS)
    dirty = TenantState("NYC").add([*base, *noisy]).estimate(20_000, OPTIONS)
    assert clean is not None and dirty is not None and clean.drinks == dirty.drinks


def test_the_fit_learns_the_knee_and_the_rate_of_a_queue() -> None:
    """Two baristas, 100 s an order: past two ahead each order adds 50 s."""
    samples = [Sample("Latte", ahead, 100 + 50 * max(0, ahead - 1)) for ahead in range(12)]
    model = fit(samples)
    assert model is not None and model.knee == 2
    assert model.wait("Latte", 0) == pytest.approx(100)
    assert model.wait("Latte", 9) == pytest.approx(100 + 50 * 8)
    assert model.p90_ratio == pytest.approx(1.0)


def reference_fits(samples: list[Sample]) -> list[tuple[Model, float]]:
    """The fit as first written, knee by knee: each knee's whole model, p90 included,
    and its squared error, from a walk of every sample."""

    def one_knee(knee: int) -> tuple[Model, float]:
        by_drink: dict[str, list[tuple[float, float]]] = {}
        for sample in samples:
            by_drink.setdefault(sample.drink, []).append(
                (float(max(0, sample.ahead - knee + 1)), float(sample.wait))
            )
        means = {
            d: (sum(x for x, _ in xs) / len(xs), sum(w for _, w in xs) / len(xs))
            for d, xs in by_drink.items()
        }
        covariance = variance = 0.0
        for drink, xs in by_drink.items():
            mean_x, mean_w = means[drink]
            for x, w in xs:
                covariance += (x - mean_x) * (w - mean_w)
                variance += (x - mean_x) ** 2
        per_order = max(covariance / variance, 0.0) if variance > 0 else 0.0
        raw = {d: means[d][1] - per_order * means[d][0] for d in by_drink}
        pooled = sum(raw[d] * len(xs) for d, xs in by_drink.items()) / len(samples)
        offsets = {
            d: (raw[d] * len(xs) + pooled * hinge.SHRINK) / (len(xs) + hinge.SHRINK)
            for d, xs in by_drink.items()
        }
        error = 0.0
        ratios = []
        for drink, xs in by_drink.items():
            for x, w in xs:
                predicted = offsets[drink] + per_order * x
                error += (w - predicted) ** 2
                ratios.append(w / max(predicted, 1.0))
        ordered = sorted(ratios)
        p90 = ordered[min(len(ordered) - 1, int(hinge.P90 * len(ordered)))]
        return Model(offsets, per_order, knee, p90, MAX_WAIT), error

    return [one_knee(k) for k in range(1, hinge.MAX_SERVERS + 1)]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.builds(
            Sample,
            st.sampled_from(["Latte", "Mocha", "Tea", "Flat white"]),
            st.integers(min_value=0, max_value=12),
            st.integers(min_value=0, max_value=MAX_WAIT),
        ),
        min_size=MIN_TRAINING,
        max_size=60,
    )
)
def test_the_fit_is_the_first_written_fit_from_integer_sums(samples: list[Sample]) -> None:
    """The fit from each drink's integer sums picks a knee of least error as the walk of
    every sample did (the smaller of equals; another only where the two errors agree to
    a billionth), and gives that knee's model: its offsets, rate and p90 to a billionth."""
    model = fit(samples)
    fits = reference_fits(samples)
    least = min(error for _, error in fits)
    first = next(k for k, (_, error) in enumerate(fits, 1) if error == least)
    assert model is not None
    if model.knee != first:
        assert fits[model.knee - 1][1] == pytest.approx(least, rel=1e-9, abs=1e-6)
    expected = fits[model.knee - 1][0]
    assert model.offsets == pytest.approx(expected.offsets, rel=1e-9, abs=1e-9)
    assert model.per_order == pytest.approx(expected.per_order, rel=1e-9, abs=1e-9)
    assert model.p90_ratio == pytest.approx(expected.p90_ratio, rel=1e-9, abs=1e-9)


def test_of_knees_that_fit_equally_well_the_smallest_wins() -> None:
    """Waits that do not depend on the orders ahead: every knee's rate is 0 and every
    knee's error the same, exactly; the first knee wins."""
    samples = [
        Sample(drink, ahead, wait)
        for drink, wait in (("Latte", 100), ("Tea", 40))
        for ahead in range(12)
    ]
    model = fit(samples)
    assert model is not None and model.knee == 1 and model.per_order == 0.0


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
    assert skewed.estimate(skewed.latest_event() or 0, OPTIONS).open_orders == 2  # type: ignore[union-attr]
    moved = skewed.add([record("open3", sub("open3", 420))])
    assert moved.latest_event() == 420  # not frozen: the real events still move it
    assert moved.estimate(420, OPTIONS).open_orders == 3  # type: ignore[union-attr]


def test_the_book_publishes_only_changes_at_rising_versions() -> None:
    book = EstimateBook(OPTIONS)
    first = book.update([record("a", sub("a", 100))], now=100)
    assert [(v.estimate.open_orders, v.version) for v in first] == [(1, 1)]
    assert book.update([record("a", sub("a", 100))], now=105) == []  # as_of alone: no change
    second = book.update([record("b", sub("b", 110))], now=110)
    assert [(v.estimate.open_orders, v.version, v.estimate.as_of) for v in second] == [(2, 2, 110)]


# -- the tenants' commit: found in review (two workers, stale caches) ------------------------


def stored(state: TenantState, version: int) -> StoredTenant:
    return StoredTenant.of(state, version, now=10**10, options=OPTIONS)


def commit_once(
    records: dict[str, list[OrderRecord]],
    states: dict[str, StoredTenant],
    *,
    reread: dict[str, StoredTenant] | None = None,
) -> TenantCommit:
    """One commit's rounds, as a store drives them: the first round lost to ``reread``."""
    commit = TenantCommit(records, states, now=10**10, options=OPTIONS)
    first = True
    while proposals := commit.proposals():
        if first and reread:
            commit.lost(reread)
        else:
            commit.landed(proposals)
        first = False
    return commit


def test_an_order_that_moved_away_stays_away_behind_a_stale_partial_record() -> None:
    """x: open at LDN (120), then its earlier submission names NYC (110). Worker B sees the
    whole record and leaves a tombstone at LDN; worker A, on a record read before that
    submission was applied and a cache from before B, must not bring x back to LDN."""
    partial = record("x", sub("x", 120, "LDN"), done("x", 200))
    whole = record("x", sub("x", 110, "NYC"), sub("x", 120, "LDN"), done("x", 200))
    v1 = stored(TenantState("LDN").add([record("x", sub("x", 120, "LDN"))]), 1)
    b = commit_once({"LDN": [whole]}, {"LDN": v1})
    v2 = b.result()[0].stored
    assert v2.view is None and b.result()[0].counted == ()  # LDN holds no order of its own
    a = commit_once({"LDN": [partial]}, {"LDN": v1}, reread={"LDN": v2})
    after = a.result()[0]
    assert after.counted == ()  # x is NYC's: never counted at LDN
    assert after.stored.view is None or after.stored.view.open_orders == 0


def test_a_change_is_judged_against_what_the_winner_of_a_race_published() -> None:
    """3 open, B writes 4 open (and publishes it); A, from the 3, cancels one and loses
    the race: after re-reading B's 4, its 3 is a change and must go out."""
    three = TenantState("NYC").add([record(f"o{i}", sub(f"o{i}", 100 + i)) for i in range(3)])
    v1 = stored(three, 1)
    v2 = stored(three.add([record("o3", sub("o3", 110))]), 2)
    assert v2.view is not None and v2.view.open_orders == 4
    a = commit_once(
        {"NYC": [record("o0", sub("o0", 100), gone("o0", 120))]}, {"NYC": v1}, reread={"NYC": v2}
    )
    result = a.result()[0]
    assert result.stored.view is not None and result.stored.view.open_orders == 3
    assert result.changed


def test_a_tenant_state_stays_under_its_byte_cap_whatever_its_names() -> None:
    long_id = "é" * 128
    records = [
        record(f"{long_id}{i}", sub(f"{long_id}{i}", 1000 + i, drink="☕" * 128))
        for i in range(2000)
    ]
    state, dropped = TenantState("NYC").add(records).prune(3000, OPTIONS)
    assert dropped > 0
    assert sum(stored_size(r) for r in state.orders.values()) <= MAX_TENANT_BYTES
    assert len(encode_tenant_orders(state.orders)) < 400_000


@pytest.mark.parametrize(
    "stopper",
    [
        pytest.param(gone("d", 7100), id="cancelled-after-it-completed"),
        pytest.param(sub("d", 6850, tenant="LDN"), id="moved-to-another-tenant"),
    ],
)
def test_an_order_that_stops_training_leaves_the_same_estimate_in_any_delivery_order(
    stopper: OrderEvent,
) -> None:
    """Four counted orders, each completed more than the maximum wait after the last, three
    training orders: pruned after d completes, a is gone. d then stops counting: the
    training orders must be the same whether that event came before the pruning or after
    (d keeps its place among the recent completed orders, so a is never needed again)."""
    history = {
        name: [sub(name, at - wait), done(name, at)]
        for name, at, wait in (
            ("a", 1000, 300),
            ("b", 3000, 100),
            ("c", 5000, 120),
            ("d", 7000, 140),
        )
    }
    options = training_options(3, 2)
    late = TenantState("NYC").add(record(n, *e) for n, e in history.items())
    late, _ = late.prune(7000, options)
    assert "a" not in late.orders  # pruned: behind the horizon
    late, _ = late.add([record("d", *history["d"], stopper)]).prune(7100, options)
    early = TenantState("NYC").add(
        record(n, *e, *([stopper] if n == "d" else [])) for n, e in history.items()
    )
    early, _ = early.prune(7100, options)
    assert "d" in late.orders and "d" in early.orders  # (a tombstone when it moved)
    assert late.estimate(7100, options) == early.estimate(7100, options)
    found = late.estimate(7100, options)
    assert found is not None and found.drinks["Latte"].estimate == 110.0  # b and c


def test_an_order_is_counted_to_score_once_even_when_its_wait_stops_and_starts_counting() -> None:
    """Completed (counted), then an earlier submission makes its wait too long, then an
    earlier completion makes it valid again: only the first commit counts it."""
    counted: list[tuple[str, ...]] = []
    seen: list[OrderEvent] = []
    state = stored(TenantState("NYC"), 0)
    for events in (
        [sub("x", 100), done("x", 200)],
        [sub("x", -2000)],  # a wait of 2200 s: over the maximum
        [done("x", -1900)],  # and back to 100 s
    ):
        seen = [*seen, *events]
        commit = commit_once({"NYC": [record("x", *seen)]}, {"NYC": state})
        (after,) = commit.result()
        counted.append(after.counted)
        state = after.stored
    assert counted == [("x",), (), ()]


def test_a_moved_order_is_counted_at_its_new_tenant_and_scored_at_the_one_it_was_told() -> None:
    """x was told LDN's estimate and completed there (scored at LDN); its earlier
    submission then names NYC: NYC counts it once, and the score says it moved."""
    told = record("x", sub("x", 120, "LDN"), done("x", 300))._replace(
        in_force=InForce(150.0, 200.0, "LDN")
    )
    ldn = commit_once({"LDN": [told]}, {"LDN": stored(TenantState("LDN"), 0)}).result()[0]
    assert ldn.counted == ("x",)
    moved = record("x", sub("x", 110, "NYC"), sub("x", 120, "LDN"), done("x", 300))._replace(
        in_force=told.in_force
    )
    nyc = commit_once({"NYC": [moved]}, {"NYC": stored(TenantState("NYC"), 0)}).result()[0]
    again = commit_once({"LDN": [moved]}, {"LDN": ldn.stored}).result()[0]
    assert (nyc.counted, again.counted) == (("x",), ())
    changes = [
        TenantChange("LDN", ldn.stored.view, 1, True, ldn.counted),
        TenantChange("NYC", nyc.stored.view, 1, True, nyc.counted),
    ]
    found = scores(changes[:1], {"x": told}, set(), MAX_WAIT) + scores(
        changes[1:], {"x": moved}, set(), MAX_WAIT
    )
    assert [(s.tenant, s.reason or s.error) for s in found] == [
        ("LDN", 30.0),
        ("NYC", "moved"),
    ]


class ReferenceBook:
    """``EstimateBook`` as first written, on the worker's own path: ``TenantState.add``,
    ``prune`` and ``view_of``, walking each tenant's whole state at every update."""

    def __init__(self, options: EstimateOptions, cap: int) -> None:
        self.options = options
        self.cap = cap
        self.states: dict[str, TenantState] = {}
        self.published: dict[str, Versioned] = {}
        self.dropped = 0

    def update(self, records: list[OrderRecord], now: int) -> list[Versioned]:
        by_tenant: dict[str, list[OrderRecord]] = {}
        for r in records:
            for tenant in {tenant for _, tenant, _ in r.submissions}:
                by_tenant.setdefault(tenant, []).append(r)
        changed = []
        for tenant, named in sorted(by_tenant.items()):
            state = (self.states.get(tenant) or TenantState(tenant)).add(named)
            latest = state.latest_event()
            as_of = now if latest is None else min(now, latest)
            state, dropped = state.prune(as_of, self.options, self.cap)
            self.dropped += dropped
            self.states[tenant] = state
            found = view_of(state, now, self.options)
            if found is None:
                continue
            last = self.published.get(tenant)
            if last is not None and last.estimate.rounded() == found.rounded():
                continue
            versioned = Versioned(found, 1 if last is None else last.version + 1)
            self.published[tenant] = versioned
            changed.append(versioned)
        return changed


many_orders = st.lists(
    st.tuples(
        st.integers(0, 1500),  # submission: orders overlap, so many are ahead of others
        st.sampled_from(["NYC", "NYC", "LDN"]),
        st.sampled_from(["Latte", "Mocha", "Tea"]),
        st.one_of(st.none(), st.integers(-20, 700), st.integers(0, 60), st.just(0)),  # done
        st.one_of(st.none(), st.none(), st.integers(-20, 700)),  # cancellation
        st.one_of(st.none(), st.none(), st.none(), st.integers(-30, 30)),  # resubmission
    ),
    min_size=8,
    max_size=60,
)


@settings(max_examples=500, deadline=None)
@given(
    many_orders,
    st.randoms(use_true_random=False),
    st.sampled_from([1, 3, 6, 150]),
    st.sampled_from([5, 2000]),
    st.sampled_from([700, MAX_TENANT_BYTES]),
    st.booleans(),
)
def test_the_book_is_the_workers_tenant_state_at_every_update(
    planned: list,
    rng: random.Random,
    training: int,
    cap: int,
    max_bytes: int,
    in_time_order: bool,
) -> None:
    """``EstimateBook``'s indexed tenants publish what ``TenantState`` (the worker's path)
    publishes, update by update: the same estimates at the same versions, the same
    states and the same orders dropped, for events in time order (as replay feeds them) or
    in any order, some twice, with pruning at 1, 3 or 6 training orders as in a busy bar,
    and past the order and byte caps."""
    events = events_of(planned)
    delivered = events + rng.sample(events, len(events) // 4)
    if in_time_order:
        delivered.sort(key=lambda e: (e.time, e.order_id, e.role.value))
    else:
        rng.shuffle(delivered)
    options = training_options(training)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tenant_rules, "MAX_TENANT_BYTES", max_bytes)
        book, reference = EstimateBook(options, cap), ReferenceBook(options, cap)
        records: dict[str, OrderRecord] = {}
        now = 0
        while delivered:
            size = 1 if in_time_order else rng.randint(1, 8)
            flush, delivered = delivered[:size], delivered[size:]
            touched = {}
            for event in flush:
                joined = (records.get(event.order_id) or OrderRecord(event.order_id)).merge(event)
                records[event.order_id] = touched[event.order_id] = joined
            now = max(now, *(e.time for e in flush)) + rng.choice([0, 0, 0, 400])
            assert book.update(list(touched.values()), now) == reference.update(
                list(touched.values()), now
            )
            assert states_of(book) == reference.states
            assert book.dropped == reference.dropped


def test_the_books_pruning_drops_what_the_states_drops_at_every_boundary() -> None:
    """Open orders submitted on either side of the horizon's bound, orders completed or
    cancelled on either side of the view's time and of the horizon, orders cancelled
    before the horizon and completed on either side of it: at every view time around
    them, ``LiveTenant.prune`` keeps what ``TenantState.prune`` keeps."""
    recent = [record(f"r{i}", sub(f"r{i}", 1990 + i), done(f"r{i}", 2000 + i)) for i in range(3)]
    around = [record(f"open{s}", sub(f"open{s}", s)) for s in range(795, 806)]
    around += [
        record(f"end{e}", sub(f"end{e}", e - 10), done(f"end{e}", e)) for e in range(995, 1006)
    ]
    around += [
        record(f"late{e}", sub(f"late{e}", e - 10), done(f"late{e}", e)) for e in (1399, 1400)
    ]
    around.append(record("back", sub("back", 990), gone("back", 1000), done("back", 1450)))
    around += [
        record(f"gone{x}", sub(f"gone{x}", x - 10), gone(f"gone{x}", x)) for x in (1399, 1400)
    ]
    around += [
        record(f"edge{c}", sub(f"edge{c}", 1380), gone(f"edge{c}", 1390), done(f"edge{c}", c))
        for c in (1399, 1400)
    ]
    options = estimate_options(MAX_WAIT, training_orders=3)
    kept: set[int] = set()
    for as_of in [*range(990, 1011), *range(1395, 1411)]:
        live = LiveTenant("NYC", options)
        live.add([*recent, *around])
        assert live.prune(as_of) == 0
        state, dropped = TenantState("NYC").add([*recent, *around]).prune(as_of, options)
        assert dropped == 0
        assert live.state() == state, as_of
        kept.add(len(live.orders))
    assert len(kept) > 5  # (each boundary moved what was kept)


@pytest.mark.parametrize(
    "late",
    [
        pytest.param([done("x", 100)], id="a completion-ending-an-order-ahead-of-the-training"),
        pytest.param([sub("y", 120)], id="a submission-ahead-of-the-training"),
    ],
)
def test_a_late_event_ahead_of_the_training_orders_changes_their_samples(
    late: list[OrderEvent],
) -> None:
    """An event delivered late that changes how many orders were open when the training
    orders were submitted, without touching the latest completions: the book's samples
    are made again, as the state's are."""
    events = [sub("x", 0), sub("o", 5), done("o", 90)]
    for i in range(5):  # each waits longer with each order ahead
        events += [sub(f"t{i}", 150 + 10 * i), done(f"t{i}", 400 + 37 * i)]
    events += [sub(f"q{i}", 540 + i) for i in range(6)]  # a queue now, to predict for
    events.sort(key=lambda e: e.time)
    options = estimate_options(MAX_WAIT, training_orders=5)
    book, reference = EstimateBook(options), ReferenceBook(options, MAX_TENANT_ORDERS)
    records: dict[str, OrderRecord] = {}
    learned = []
    for event in [*events, *late]:
        joined = (records.get(event.order_id) or OrderRecord(event.order_id)).merge(event)
        records[event.order_id] = joined
        assert book.update([joined], 560) == reference.update([joined], 560)
        state = reference.states["NYC"]
        mine = [r for r in state.orders.values() if r.tenant == "NYC"]
        learned.append(tenant_rules.training(state, tenant_rules._Queue(mine, MAX_WAIT), options))
    assert learned[-1] != learned[-2]  # (the late event changed the samples)


@pytest.mark.parametrize(
    "updates",
    [
        pytest.param(
            [
                [record("a", sub("a", 0), done("a", 0))],
                [record("b", sub("b", 1000), done("b", 1100))],
            ],
            id="a-zero-wait-sample-pruned-from-below-the-latest",
        ),
        pytest.param(
            [
                [record("x", sub("x", 0))],
                [
                    record("a", sub("a", 100), done("a", 110)),
                    record("b", sub("b", 1000), done("b", 1010)),
                ],
            ],
            id="a-newer-completion-pruned-before-its-sample-was-made",
        ),
    ],
)
def test_a_pruned_completion_leaves_no_sample_behind(updates: list[list[OrderRecord]]) -> None:
    """With one training order: an order pruned from below the latest completions, whose
    sample the book held (a wait of 0: no interval of its own to notice it by) or was
    about to make (two completions in one update, the older pruned at once), leaves the
    book as it leaves the state (found by review, each failed before its fix)."""
    options = training_options(1, 1)
    book, reference = EstimateBook(options), ReferenceBook(options, 2000)
    now = 0
    for records in updates:
        now = max([now, *(t for r in records for t in (*r.submissions[0][:1], *r.completions))])
        assert book.update(records, now) == reference.update(records, now)
        assert states_of(book) == reference.states
