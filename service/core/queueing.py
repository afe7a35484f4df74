"""A tenant's queue: its open orders, and the wait an order placed now can expect.

A tenant's durable state (``TenantState``) is, like a key's, a join-semilattice: the joined
record of every order whose submissions name the tenant, pruned by a rule that never
removes what the view needs. Its view, at an event time ``as_of``, is the estimate
(``estimate``): the tenant's open orders and, per drink, a predicted wait and a p90
(docs/design.md, "The wait estimate"; docs/decisions.md, "A queue-aware estimate,
measured, published, scored").

Definitions:

- an order is the tenant's when its earliest submission names the tenant;
- **open at t**: submitted at s <= t, not ended by t (no completion or cancellation at a
  time <= t), and t - s <= the maximum wait (an older order is ahead of no one);
- **counted**: completed, not cancelled, a wait in [0, maximum wait]: only counted orders
  train the estimate;
- the estimate learns from the tenant's counted orders among the latest
  ``TRAINING_ORDERS`` completed orders that name it, by (completion time, order id), each
  with the number of the tenant's orders open when it was submitted: a function of the
  set of accepted events, not of their arrival order. An order that moved to another
  tenant stays in the state as a tombstone, by the same time rules as the others.

A tenant's state is committed by the window rule (``TenantCommit``, as
``service.core.commit.WindowCommit``): proposed at version + 1 from the stored state and
the records that name the tenant, pruned, written conditionally, re-read and proposed
again when it lost. Its view is the estimate; ``changed`` compares it in whole seconds
(``Estimate.rounded``). A store writes both kinds of proposal in the same requests.

Pure: no I/O here.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from service.core.estimate import DrinkEstimate, Estimate
from service.core.pairing import OrderRecord
from service.errors import MAX_CONFLICT_ROUNDS, next_round

MAX_TENANT_ORDERS = 2000  # per tenant: past it the oldest orders leave the state (counted)
MAX_TENANT_BYTES = 300_000  # and past this many bytes of them (a DynamoDB item holds 400 KB)
TRAINING_ORDERS = 150  # the tenant's latest counted orders the estimate learns from
MIN_TRAINING = 5  # counted orders a tenant needs before it gets any estimate
MAX_SERVERS = 8  # the hinge's knee is searched in 1..MAX_SERVERS orders ahead
SHRINK = 2.0  # pseudo-orders pulling a rare drink's offset toward the tenant's
LONE_EVENT_GAP = 900  # s: a latest event further than this after the others waits for company
P90 = 0.9


class Sample(NamedTuple):
    """One counted order as the estimate learns it."""

    drink: str
    ahead: int  # the tenant's other orders open when it was submitted
    wait: int


@dataclass(frozen=True, slots=True)
class TenantState:
    """A tenant's durable state: the joined records of the orders that name it."""

    tenant: str
    orders: Mapping[str, OrderRecord] = field(default_factory=dict)

    def add(self, records: Iterable[OrderRecord]) -> TenantState:
        """Join records into the state, each compacted (``compact``); ``self`` when nothing
        changes."""
        orders: dict[str, OrderRecord] | None = None
        for incoming in records:
            known = (orders or self.orders).get(incoming.order_id)
            record = compact(incoming if known is None else known.join(compact(incoming)))
            if record != known:
                if orders is None:
                    orders = dict(self.orders)
                orders[incoming.order_id] = record
        return self if orders is None else TenantState(self.tenant, orders)

    def prune(
        self, as_of: int, max_wait_seconds: int, cap: int = MAX_TENANT_ORDERS
    ) -> tuple[TenantState, int]:
        """The state without what no view at ``as_of`` or later can need, and how many
        orders the caps dropped (the oldest first: then open counts and the learned offsets
        are approximate, docs/design.md, "The wait estimate").

        Kept, the tenant's own records and tombstones alike (a record whose earliest
        submission names another tenant: it keeps a stale copy of the order from coming
        back): every record while the tenant has fewer than ``TRAINING_ORDERS`` completed
        ones; then only what can still be open at a training order's submission or at
        ``as_of``. The horizon is the earliest completion among the latest
        ``TRAINING_ORDERS`` completed records (``_recent``), less the maximum wait: every
        order that can ever train the estimate is among those (the set only moves
        forward), so it was submitted at or after the horizon. Dropped: records that ended
        before the horizon (and completed before it, if at all), and open ones submitted
        more than the maximum wait before both the horizon and ``as_of``. At most ``cap``
        records and ``MAX_TENANT_BYTES`` of them are kept.
        """
        horizon = _horizon(self.orders.values(), max_wait_seconds)
        kept: list[OrderRecord] = []
        for record in self.orders.values():
            ended = record.ended_at
            submitted = record.submitted_at or 0
            if ended is None:
                if (
                    horizon is None
                    or submitted + max_wait_seconds >= horizon
                    or as_of - submitted <= max_wait_seconds
                ):
                    kept.append(record)
            elif (
                horizon is None
                or ended >= horizon
                or ended > as_of  # (an order ending after as_of is still open at it)
                or (record.completions and record.completions[0] >= horizon)
            ):
                kept.append(record)
        dropped = _over_caps(kept, cap)
        if dropped:
            # Ended orders first (oldest end first), then open ones (oldest submission).
            kept.sort(key=_drop_order)
            kept = kept[dropped:]
        if len(kept) == len(self.orders):
            return self, 0
        return TenantState(self.tenant, {r.order_id: r for r in kept}), dropped

    def estimate(self, as_of: int, max_wait_seconds: int) -> Estimate | None:
        """The view at ``as_of``: None when the tenant has no order at all."""
        mine = [r for r in self.orders.values() if r.tenant == self.tenant]
        if not mine:
            return None
        queue = _Queue(mine, max_wait_seconds)
        samples = training(self, queue, max_wait_seconds)
        model = fit(samples)
        ahead = queue.open_at(as_of)
        drinks = {} if model is None else model.predict_all(ahead, max_wait_seconds)
        return Estimate(self.tenant, as_of, ahead, drinks)

    def latest_event(self) -> int | None:
        """The time the tenant's estimate is for: its latest event (of the earliest
        submission, completion and cancellation each order keeps), unless that one stands
        alone more than ``LONE_EVENT_GAP`` after all the others (an event stamped ahead
        waits for company, so it can neither freeze nor empty the estimate)."""
        first = second = None  # the latest two distinct times, in one pass
        tenant = self.tenant
        for r in self.orders.values():
            if not r.submissions or r.submissions[0][1] != tenant:
                continue
            for at in (r.submissions[0][0], *r.completions[:1], *r.cancellations[:1]):
                if first is None or at > first:
                    first, second = at, first
                elif at != first and (second is None or at > second):
                    second = at
        if first is not None and second is not None and first - second > LONE_EVENT_GAP:
            return second
        return first


def view_of(state: TenantState, now: int, max_wait_seconds: int) -> Estimate | None:
    """A state's view: its estimate at its latest event, never after ``now`` (None: the
    tenant holds no order of its own). Computed from the state as stored, pruned."""
    latest = state.latest_event()
    return None if latest is None else state.estimate(min(now, latest), max_wait_seconds)


def compact(record: OrderRecord) -> OrderRecord:
    """What a tenant's state keeps of a record: its earliest submission, completion and
    cancellation, and whether it was cancelled. Every view reads only these, and the
    earliest of a union is the earliest of the earliests, so compacting commutes with the
    join (the state is still a function of the set of accepted events)."""
    if (
        len(record.submissions) <= 1
        and len(record.completions) <= 1
        and len(record.cancellations) <= 1
        and record.expires_at is None
        and not record.anomaly_reported
        and record.in_force is None
    ):
        return record
    return OrderRecord(
        record.order_id,
        record.submissions[:1],
        record.completions[:1],
        record.cancelled,
        None,
        False,
        record.cancellations[:1],
    )


def stored_size(record: OrderRecord) -> int:
    """An upper bound of the bytes a compacted record takes in a tenant's item (its JSON
    row, before compression): what ``MAX_TENANT_BYTES`` counts."""
    first = record.submissions[0] if record.submissions else (0, "", "")
    return len(record.order_id.encode()) + len(first[1].encode()) + len(first[2].encode()) + 64


def _over_caps(kept: Sequence[OrderRecord], cap: int) -> int:
    """How many of the oldest records (``_drop_order``) must go to fit both caps."""
    dropped = max(0, len(kept) - cap)
    # Four bytes a character at most: when even that fits, no name needs encoding.
    bound = sum(_chars(r) for r in kept) * 4 + 64 * len(kept)
    if bound <= MAX_TENANT_BYTES:
        return dropped
    total = sum(stored_size(r) for r in kept)
    if total <= MAX_TENANT_BYTES:
        return dropped
    for index, record in enumerate(sorted(kept, key=_drop_order)):
        if total <= MAX_TENANT_BYTES:
            return max(dropped, index)
        total -= stored_size(record)
    return len(kept)


def _chars(record: OrderRecord) -> int:
    first = record.submissions[0] if record.submissions else (0, "", "")
    return len(record.order_id) + len(first[1]) + len(first[2])


def _drop_order(record: OrderRecord) -> tuple[int, int, str]:
    ended = record.ended_at
    if ended is not None:
        return (0, ended, record.order_id)
    return (1, record.submitted_at or 0, record.order_id)


def counted_wait(record: OrderRecord, max_wait_seconds: int) -> int | None:
    """The wait of a counted order, else None."""
    if record.cancelled or not record.completions or not record.submissions:
        return None
    wait = record.completions[0] - record.submissions[0][0]
    return wait if 0 <= wait <= max_wait_seconds else None


def _recent(records: Iterable[OrderRecord]) -> list[OrderRecord]:
    """The latest ``TRAINING_ORDERS`` completed records by (completion, order id), whatever
    else they are (the tenant's or a tombstone, cancelled, anomalous): the orders that
    may train the estimate. An order that stops counting (it moved away, or was cancelled
    after it completed) keeps its place, so no older order takes it: the set only moves
    forward, and pruning behind it loses nothing (docs/design.md, "The wait estimate")."""
    completed = [r for r in records if r.completions]
    completed.sort(key=lambda r: (r.completions[0], r.order_id), reverse=True)
    return completed[:TRAINING_ORDERS]


def _latest_counted(
    records: Iterable[OrderRecord], tenant: str, max_wait_seconds: int
) -> list[OrderRecord]:
    """The training orders: the tenant's counted orders among the recent ones."""
    return [
        r
        for r in _recent(records)
        if r.tenant == tenant and counted_wait(r, max_wait_seconds) is not None
    ]


def _horizon(records: Iterable[OrderRecord], max_wait_seconds: int) -> int | None:
    """Ended orders that ended before this matter to no view (None: keep them all)."""
    recent = _recent(records)
    if len(recent) < TRAINING_ORDERS:
        return None
    return recent[-1].completions[0] - max_wait_seconds


class _Queue:
    """Open counts at any time, in O(log n): an order is open on [s, min(end, s + W + 1))."""

    def __init__(self, records: Sequence[OrderRecord], max_wait_seconds: int) -> None:
        starts, ends = [], []
        for record in records:
            submitted = record.submissions[0][0]
            ended = record.ended_at
            stop = submitted + max_wait_seconds + 1
            if ended is not None and ended < stop:
                stop = max(ended, submitted)
            starts.append(submitted)
            ends.append(stop)
        starts.sort()
        ends.sort()
        self.starts, self.ends = starts, ends

    def open_at(self, t: int) -> int:
        """How many of the orders are open at ``t``."""
        return bisect_right(self.starts, t) - bisect_right(self.ends, t)


def training(state: TenantState, queue: _Queue, max_wait_seconds: int) -> list[Sample]:
    """The training orders, each with the orders ahead of it when it was submitted."""
    samples = []
    for record in _latest_counted(state.orders.values(), state.tenant, max_wait_seconds):
        submitted = record.submissions[0][0]
        wait = record.completions[0] - submitted
        # Itself is open at its own submission when its wait is positive.
        ahead = queue.open_at(submitted) - (1 if wait > 0 else 0)
        samples.append(Sample(record.submissions[0][2], max(ahead, 0), wait))
    return samples


@dataclass(frozen=True, slots=True)
class Model:
    """wait = offset[drink] + per_order * max(0, ahead - knee + 1), and a p90 ratio.

    A multi-server queue seen from outside: with fewer than ``knee`` orders ahead a new one
    starts at once and waits its own preparation; past it, each order ahead adds the time
    the bar takes to clear one. Both the knee (how many are served at once) and the rate
    are learned from the tenant's own completed orders, never configured.
    """

    offsets: Mapping[str, float]
    per_order: float
    knee: int
    p90_ratio: float

    def predict(self, drink: str, ahead: int) -> float:
        """The predicted wait of an order of ``drink`` with ``ahead`` orders open."""
        return self.offsets[drink] + self.per_order * max(0, ahead - self.knee + 1)

    def predict_all(self, ahead: int, max_wait_seconds: int) -> dict[str, DrinkEstimate]:
        """Every learned drink's estimate and p90, within [0, maximum wait]."""
        found = {}
        for drink in sorted(self.offsets):
            value = min(max(self.predict(drink, ahead), 0.0), float(max_wait_seconds))
            p90 = min(max(value * self.p90_ratio, value), float(max_wait_seconds))
            found[drink] = DrinkEstimate(float(round(value)), float(round(p90)))
        return found


def fit(samples: Sequence[Sample], *, knees: Sequence[int] = ()) -> Model | None:
    """The least-squares model over the samples (None under ``MIN_TRAINING``): for each
    knee, drink offsets and one rate by within-drink regression; the knee with the least
    squared error wins (ties: the smaller)."""
    if len(samples) < MIN_TRAINING:
        return None
    key = (tuple(samples), tuple(knees))
    model = _FITTED.get(key)
    if model is None:
        model = _fit(samples, knees or range(1, MAX_SERVERS + 1))
        if len(_FITTED) >= FITTED_MODELS:
            _FITTED.clear()
        _FITTED[key] = model
    return model


# The last models fitted, by their samples: a tenant's estimate is asked for at every
# event, and its training orders change only when one completes (a pure function's
# cache: the same samples always give the same model).
FITTED_MODELS = 256
_FITTED: dict[tuple[tuple[Sample, ...], tuple[int, ...]], Model] = {}


def _fit(samples: Sequence[Sample], knees: Iterable[int]) -> Model:
    """Every knee's fit, the least squared error winning (the first of equals), and the
    p90 ratio of the winner.

    A knee's regression needs only sums over each drink's samples: of x, x², x·w and w
    (x = max(0, ahead - knee + 1)), all integers. They are the drink's totals less those
    of its samples at most knee - 1 ahead (whose x is 0), which are kept per orders-ahead
    value below the largest knee: a knee costs a few integer sums a drink, not a pass over
    every sample. The centred sums (n·Σxw - Σx·Σw, ...) are exact integers too, so the
    errors compared between knees carry no cancellation; knees that see the same x (past
    every sample's orders ahead) give the same sums and tie exactly. A test holds the
    model to the first-written fit, which walked every sample for every knee.
    """
    ordered = sorted(set(knees))
    if not ordered:
        raise ValueError("no knee to fit")
    stats, low, most_ahead = _sums(samples, ordered[-1])
    count = len(samples)
    best: tuple[float, dict[str, float], float, int] | None = None
    flat = False  # a knee past every sample's orders ahead was fitted: its x are all 0
    below = {drink: [0, 0, 0, 0, 0] for drink in stats}  # the sums over a <= knee - 1
    passed = -1  # the orders-ahead values up to this one are in ``below``
    for knee in ordered:
        shift = knee - 1
        for a in range(passed + 1, shift + 1):
            _take_below(below, low, a)
        passed = max(passed, shift)
        if knee > most_ahead:
            if flat:
                continue
            flat = True
        found = _fit_knee(stats, below, shift, count)
        if best is None or found[0] < best[0]:
            best = (*found, knee)
    if best is None:  # (a knee is always fitted: the first is)
        raise ValueError("no knee to fit")
    _, offsets, per_order, knee = best
    shift = knee - 1
    ratios = [
        wait
        / (p if (p := offsets[drink] + per_order * (a - shift if a > shift else 0)) > 1 else 1.0)
        for drink, a, wait in samples
    ]
    return Model(offsets, per_order, knee, _quantile(ratios, P90))


def _sums(
    samples: Sequence[Sample], limit: int
) -> tuple[dict[str, list[int]], dict[str, dict[int, list[int]]], int]:
    """Each drink's n, Σa, Σa², Σw, Σa·w (a: orders ahead), per a below ``limit`` its
    samples' n and Σw, and the most orders any sample had ahead."""
    stats: dict[str, list[int]] = {}
    low: dict[str, dict[int, list[int]]] = {}
    most = 0
    for drink, ahead, wait in samples:
        if ahead > most:  # noqa: PLR1730 - per sample: cheaper than a call to max
            most = ahead
        total = stats.get(drink)
        if total is None:
            total = stats[drink] = [0, 0, 0, 0, 0]
            low[drink] = {}
        total[0] += 1
        total[1] += ahead
        total[2] += ahead * ahead
        total[3] += wait
        total[4] += ahead * wait
        if ahead < limit:
            bucket = low[drink].get(ahead)
            if bucket is None:
                low[drink][ahead] = [1, wait]
            else:
                bucket[0] += 1
                bucket[1] += wait
    return stats, low, most


def _take_below(
    below: Mapping[str, list[int]], low: Mapping[str, Mapping[int, list[int]]], a: int
) -> None:
    """Add the samples ``a`` ahead to each drink's sums of those a knee's x is 0 for."""
    for drink, buckets in low.items():
        bucket = buckets.get(a)
        if bucket is not None:
            gone = below[drink]
            n, w = bucket
            gone[0] += n
            gone[1] += n * a
            gone[2] += n * a * a
            gone[3] += w
            gone[4] += a * w


def _fit_knee(
    stats: Mapping[str, list[int]], below: Mapping[str, list[int]], shift: int, count: int
) -> tuple[float, dict[str, float], float]:
    """One knee's squared error (less the part every knee shares), offsets and rate, from
    each drink's integer sums (``_fit``)."""
    moments = {}
    covariance = variance = 0.0
    for drink, (n, sum_a, sum_a2, sum_w, sum_aw) in stats.items():
        low_n, low_a, low_a2, low_w, low_aw = below[drink]
        past = n - low_n  # the samples with x > 0, where x = a - shift
        sum_x = (sum_a - low_a) - shift * past
        sum_x2 = (sum_a2 - low_a2) - 2 * shift * (sum_a - low_a) + shift * shift * past
        sum_xw = (sum_aw - low_aw) - shift * (sum_w - low_w)
        sxx = n * sum_x2 - sum_x * sum_x  # n times the centred sums, exact
        sxw = n * sum_xw - sum_x * sum_w
        moments[drink] = (n, sum_x / n, sum_w / n, sxx, sxw)
        covariance += sxw / n
        variance += sxx / n
    per_order = max(covariance / variance, 0.0) if variance > 0 else 0.0
    raw = {d: mean_w - per_order * mean_x for d, (_, mean_x, mean_w, _, _) in moments.items()}
    pooled = sum(raw[d] * m[0] for d, m in moments.items()) / count
    offsets = {}
    error = 0.0  # Σ (w - offset - rate·x)² less Σ (w - mean w)², which no knee changes
    for drink, (n, mean_x, mean_w, sxx, sxw) in moments.items():
        offset = (raw[drink] * n + pooled * SHRINK) / (n + SHRINK)
        offsets[drink] = offset
        gap = mean_w - offset - per_order * mean_x
        error += (per_order * per_order * sxx - 2 * per_order * sxw) / n + n * gap * gap
    return error, offsets, per_order


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Versioned(NamedTuple):
    """An estimate and the version it was published at."""

    estimate: Estimate
    version: int


class EstimateBook:
    """Tenant states in memory and each tenant's last published estimate: the estimate's
    rules without a store (``replay --estimates``, the accuracy benchmark).

    ``update`` joins records into every tenant their submissions name and returns the
    estimates that changed (``Estimate.rounded``; ``as_of`` moving alone is no change),
    each at the tenant's next version. The time an estimate is for is the tenant's latest
    event (``TenantState.latest_event``), never later than ``now``.

    Each tenant is a ``LiveTenant``: the same state as ``TenantState.add`` then ``prune``
    would hold, and the same view as ``view_of``, from indexes kept up to date instead of
    walks of the whole state at every event (docs/performance.md, section 13).
    """

    def __init__(self, max_wait_seconds: int, cap: int = MAX_TENANT_ORDERS) -> None:
        self.max_wait_seconds = max_wait_seconds
        self.cap = cap
        self.live: dict[str, LiveTenant] = {}
        self.published: dict[str, Versioned] = {}
        self.dropped = 0
        self._rounded: dict[str, tuple[object, ...]] = {}  # each published estimate's

    @property
    def states(self) -> dict[str, TenantState]:
        """Every tenant's state, as a ``TenantState``."""
        return {tenant: live.state() for tenant, live in self.live.items()}

    def update(self, records: Iterable[OrderRecord], now: int) -> list[Versioned]:
        """Join records and return each changed tenant's new estimate."""
        by_tenant: dict[str, list[OrderRecord]] = {}
        for record in records:
            for tenant in {tenant for _, tenant, _ in record.submissions}:
                by_tenant.setdefault(tenant, []).append(record)
        changed = []
        for tenant, named in sorted(by_tenant.items()):
            live = self.live.get(tenant)
            if live is None:
                live = self.live[tenant] = LiveTenant(tenant, self.max_wait_seconds, self.cap)
            live.add(named)
            latest = live.latest_event()
            self.dropped += live.prune(now if latest is None else min(now, latest))
            found = live.view(now)
            if found is None:
                continue
            last = self.published.get(tenant)
            rounded = found.rounded()
            if last is not None and self._rounded[tenant] == rounded:
                continue
            versioned = Versioned(found, 1 if last is None else last.version + 1)
            self.published[tenant] = versioned
            self._rounded[tenant] = rounded
            changed.append(versioned)
        return changed


class LiveTenant:
    """A tenant's state as ``EstimateBook`` keeps it: the records of ``TenantState``, in a
    dict changed in place, and sorted indexes of what its rules read, so that an event
    costs a few bisections instead of walks of the whole state:

    - ``times``: the earliest submission, completion and cancellation of each of the
      tenant's own records (``latest_event``);
    - ``starts``, ``stops``: its own records' open intervals (``_Queue``);
    - ``completed``: every record's (earliest completion, order id), the last
      ``TRAINING_ORDERS`` of which are ``_recent`` (the training orders, the horizon);
    - ``ended`` and ``unended``: (end, id) and (submission, id), the two kinds of record
      ``TenantState.prune`` drops, oldest first;
    - ``chars``: the names' lengths, for the byte cap's first bound.

    The training samples are kept between events: a completion newer than all adds one in
    front, those past the latest ``TRAINING_ORDERS`` leave from the back; anything else
    changing the latest completions, or an open interval over a training submission,
    makes them again. Past a cap, ``TenantState.prune`` prunes and the indexes are built
    again. Tests hold it all to ``TenantState`` and ``view_of``, caps included.
    """

    def __init__(self, tenant: str, max_wait_seconds: int, cap: int = MAX_TENANT_ORDERS) -> None:
        self.tenant = tenant
        self.max_wait_seconds = max_wait_seconds
        self.cap = cap
        self._reset()

    def _reset(self) -> None:
        self.orders: dict[str, OrderRecord] = {}
        self.times: list[int] = []
        self.starts: list[int] = []
        self.stops: list[int] = []
        self.completed: list[tuple[int, str]] = []
        self.ended: list[tuple[int, str]] = []
        self.unended: list[tuple[int, str]] = []
        self.chars = 0
        self._stale = True  # the samples must be made again from ``completed``
        self._newer: list[tuple[int, str]] = []  # completions since, each newer than all
        self._samples: list[Sample] = []
        self._keys: list[tuple[int, str]] = []  # each sample's (completion, order id)
        self._submitted: list[int] = []  # each sample's submission
        self._span = (0, -1)  # the earliest and the latest of those
        self._model: Model | None = None
        self._drinks: dict[int, dict[str, DrinkEstimate]] = {}  # the model's, by ahead

    def state(self) -> TenantState:
        """The state as a ``TenantState`` (a copy)."""
        return TenantState(self.tenant, dict(self.orders))

    def add(self, records: Iterable[OrderRecord]) -> None:
        """``TenantState.add``."""
        orders = self.orders
        for incoming in records:
            known = orders.get(incoming.order_id)
            record = compact(incoming if known is None else known.join(compact(incoming)))
            if record == known:
                continue
            before = None
            if known is not None:
                before = self._interval(known)
                self._index(known, remove=True)
            orders[incoming.order_id] = record
            self._index(record)
            after = self._interval(record)
            if before is not None and after is not None and before[0] == after[0]:
                self._moved(min(before[1], after[1]), max(before[1], after[1]))
            else:
                for interval in (before, after):
                    if interval is not None:
                        self._moved(*interval)

    def _interval(self, record: OrderRecord) -> tuple[int, int] | None:
        """An own record's open interval [submission, stop) (``_Queue``)."""
        first = record.submissions[0]
        if first[1] != self.tenant:
            return None
        submitted = first[0]
        stop = submitted + self.max_wait_seconds + 1
        ended = record.ended_at
        if ended is not None and ended < stop:
            stop = max(ended, submitted)
        return submitted, stop

    def _moved(self, start: int, stop: int) -> None:
        """The open counts changed on [start, stop): so did the samples submitted in it."""
        if start < stop and start <= self._span[1] and stop > self._span[0]:
            self._stale = True

    def _index(self, record: OrderRecord, *, remove: bool = False) -> None:
        order_id = record.order_id
        first = record.submissions[0]
        submitted = first[0]
        completion = record.completions[0] if record.completions else None
        ended = record.ended_at
        self.chars += -_chars(record) if remove else _chars(record)
        if completion is not None:
            self._recent_change((completion, order_id), remove)
        if ended is None:
            _change(self.unended, (submitted, order_id), remove)
        else:
            _change(self.ended, (ended, order_id), remove)
        interval = self._interval(record)
        if interval is None:
            return
        _change(self.times, submitted, remove)
        if completion is not None:
            _change(self.times, completion, remove)
        if record.cancellations:
            _change(self.times, record.cancellations[0], remove)
        _change(self.starts, interval[0], remove)
        _change(self.stops, interval[1], remove)

    def _recent_change(self, key: tuple[int, str], remove: bool) -> None:
        """A (completion, id) enters or leaves ``completed``: below the latest
        ``TRAINING_ORDERS`` it changes no sample; newer than all it adds one in front;
        anything else makes them again."""
        completed = self.completed
        if remove:
            if len(completed) <= TRAINING_ORDERS or key >= completed[-TRAINING_ORDERS]:
                self._stale = True
            del completed[bisect_left(completed, key)]
        elif not completed or key > completed[-1]:
            completed.append(key)
            self._newer.append(key)
        else:
            insort(completed, key)
            if len(completed) <= TRAINING_ORDERS or key >= completed[-TRAINING_ORDERS]:
                self._stale = True

    def latest_event(self) -> int | None:
        """``TenantState.latest_event``."""
        times = self.times
        if not times:
            return None
        first = times[-1]
        below = bisect_left(times, first)
        if below and first - times[below - 1] > LONE_EVENT_GAP:
            return times[below - 1]
        return first

    def prune(self, as_of: int) -> int:
        """``TenantState.prune``: drop what no view at ``as_of`` or later needs; how many
        orders the caps dropped."""
        completed = self.completed
        victims: list[OrderRecord] = []
        if len(completed) >= TRAINING_ORDERS:
            horizon = completed[-TRAINING_ORDERS][0] - self.max_wait_seconds
            orders = self.orders
            bound = min(horizon, as_of) - self.max_wait_seconds
            for submitted, order_id in self.unended:
                if submitted >= bound:
                    break
                victims.append(orders[order_id])
            for ended, order_id in self.ended:
                if ended >= horizon:
                    break
                if ended <= as_of:
                    record = orders[order_id]
                    if not (record.completions and record.completions[0] >= horizon):
                        victims.append(record)
        kept = len(self.orders) - len(victims)
        chars = self.chars - sum(_chars(r) for r in victims)
        if kept > self.cap or chars * 4 + 64 * kept > MAX_TENANT_BYTES:
            return self._prune_to_caps(as_of)
        for record in victims:
            interval = self._interval(record)
            self._index(record, remove=True)
            del self.orders[record.order_id]
            if interval is not None:
                self._moved(*interval)
        return 0

    def _prune_to_caps(self, as_of: int) -> int:
        state, dropped = self.state().prune(as_of, self.max_wait_seconds, self.cap)
        self._reset()
        self.add(state.orders.values())
        return dropped

    def view(self, now: int) -> Estimate | None:
        """``view_of``: the estimate at the tenant's latest event, never after ``now``."""
        latest = self.latest_event()
        if latest is None:
            return None
        as_of = min(now, latest)
        if self._stale or self._newer:
            self._train()
        ahead = self._open_at(as_of)
        drinks = self._drinks.get(ahead)
        if drinks is None:
            model = self._model
            drinks = {} if model is None else model.predict_all(ahead, self.max_wait_seconds)
            self._drinks[ahead] = drinks
        return Estimate(self.tenant, as_of, ahead, drinks)

    def _open_at(self, t: int) -> int:
        return bisect_right(self.starts, t) - bisect_right(self.stops, t)

    def _trim(self) -> None:
        """Take off the back the samples no longer among the latest completed orders (an
        order pruned from below them may have held one: a wait of 0 has an empty open
        interval, so nothing else notices it)."""
        if len(self.completed) >= TRAINING_ORDERS:
            oldest = self.completed[-TRAINING_ORDERS]
            while self._keys and self._keys[-1] < oldest:
                self._keys.pop()
                self._samples.pop()
                self._submitted.pop()

    def _train(self) -> None:
        """``training`` and ``fit``: the samples made again, or the newer completions'
        put in front and the ones no longer among the latest taken off the back."""
        if self._stale:
            keys = self.completed[-TRAINING_ORDERS:]
            self._samples, self._keys, self._submitted = [], [], []
        else:
            keys = self._newer
            if len(self.completed) >= TRAINING_ORDERS:
                # Only those still among the latest (one pruned since has no record).
                keys = keys[bisect_left(keys, self.completed[-TRAINING_ORDERS]) :]
        samples: list[Sample] = []
        sample_keys: list[tuple[int, str]] = []
        submissions: list[int] = []
        orders = self.orders
        tenant = self.tenant
        max_wait = self.max_wait_seconds
        for key in reversed(keys):
            record = orders[key[1]]
            first = record.submissions[0]
            if first[1] != tenant or record.cancelled:
                continue
            submitted = first[0]
            wait = record.completions[0] - submitted
            if not 0 <= wait <= max_wait:
                continue
            ahead = self._open_at(submitted) - (1 if wait > 0 else 0)
            samples.append(Sample(first[2], ahead if ahead > 0 else 0, wait))
            sample_keys.append(key)
            submissions.append(submitted)
        self._samples[:0] = samples
        self._keys[:0] = sample_keys
        self._submitted[:0] = submissions
        self._trim()
        self._stale = False
        self._newer = []
        held = self._submitted
        self._span = (min(held), max(held)) if held else (0, -1)
        model = fit(self._samples)
        if model != self._model:
            self._drinks = {}
        self._model = model


def _change(index: list[Any], value: Any, remove: bool) -> None:
    if remove:
        del index[bisect_left(index, value)]
    else:
        insort(index, value)


# -- the tenants' commit: the one window rule (service.core.commit), for tenants --------


def _changed(before: Estimate | None, after: Estimate | None) -> bool:
    if before is None or after is None:
        return before is not after
    return before.rounded() != after.rounded()


@dataclass(frozen=True, slots=True)
class StoredTenant:
    """A tenant's state as last written, its view (the estimate), its version."""

    state: TenantState
    view: Estimate | None
    version: int

    @classmethod
    def empty(cls, tenant: str) -> StoredTenant:
        """A tenant never written: no order, no estimate, version 0."""
        return cls(TenantState(tenant), None, 0)

    @classmethod
    def of(
        cls, state: TenantState, version: int, *, now: int, max_wait_seconds: int
    ) -> StoredTenant:
        """A stored state with its view at the tenant's latest event (never after ``now``)."""
        return cls(state, view_of(state, now, max_wait_seconds), version)


@dataclass(frozen=True, slots=True)
class TenantCommitted:
    """Where a tenant ended after a commit. ``changed``: its estimate changed in whole
    seconds; ``counted``: the orders this commit was the first to hold completed, with a
    wait that counts (each order is by exactly one landed write, which scores it)."""

    tenant: str
    stored: StoredTenant
    changed: bool
    counted: tuple[str, ...]


class TenantCommit:
    """One flush's records joined into their tenants' stored states, round by round; a
    store drives it exactly as it drives ``WindowCommit``."""

    def __init__(
        self,
        records: Mapping[str, Sequence[OrderRecord]],
        stored: Mapping[str, StoredTenant],
        *,
        now: int,
        max_wait_seconds: int,
        cap: int = MAX_TENANT_ORDERS,
        max_rounds: int = MAX_CONFLICT_ROUNDS,
    ) -> None:
        self.records = records
        self.states = {tenant: stored[tenant] for tenant in records}
        self.before = {tenant: state.view for tenant, state in self.states.items()}
        self.now = now
        self.max_wait_seconds = max_wait_seconds
        self.cap = cap
        self.max_rounds = max_rounds
        self.rounds = 0
        self.dropped = 0  # orders the cap dropped, in the writes that landed
        self._counted: dict[str, list[str]] = {}
        self._proposed: dict[str, tuple[StoredTenant, int]] = {}
        self._fresh: set[str] = set()  # tenants whose state this commit wrote or re-read

    def proposals(self) -> dict[str, StoredTenant]:
        """The next state of every tenant the records still change, each at its version
        + 1; empty when done. Raises a retriable DependencyError past ``max_rounds``."""
        proposed: dict[str, tuple[StoredTenant, int]] = {}
        for tenant, tenant_records in self.records.items():
            current = self.states[tenant]
            state = current.state.add(tenant_records)
            if state is current.state:
                continue
            latest = state.latest_event()
            as_of = self.now if latest is None else min(self.now, latest)
            state, dropped = state.prune(as_of, self.max_wait_seconds, self.cap)
            # Pruning may leave the orders as they were (an order the caps drop again, or
            # one too old to hold). Against a state this commit wrote or read again, that
            # is no change; against a cached one it is still written, since the cache may
            # be stale and only the conditional write finds out.
            if state.orders == current.state.orders and tenant in self._fresh:
                continue
            stored = StoredTenant.of(
                state, current.version + 1, now=self.now, max_wait_seconds=self.max_wait_seconds
            )
            proposed[tenant] = (stored, dropped)
        if proposed:
            self.rounds = next_round(self.rounds, self.max_rounds)
        self._proposed = proposed
        return {tenant: stored for tenant, (stored, _) in proposed.items()}

    def landed(self, tenants: Iterable[str]) -> None:
        """These tenants' proposals were written: they are the stored states now."""
        for tenant in tenants:
            stored, dropped = self._proposed[tenant]
            self._counted.setdefault(tenant, []).extend(
                _newly_counted(self.states[tenant].state, stored.state, self.max_wait_seconds)
            )
            self.dropped += dropped
            self.states[tenant] = stored
            self._fresh.add(tenant)

    def lost(self, reread: Mapping[str, StoredTenant]) -> None:
        """These tenants' writes lost a race: their stored states as read again. What
        another writer wrote is what it published: the baseline of ``changed`` now."""
        self.states.update(reread)
        self._fresh.update(reread)
        for tenant, stored in reread.items():
            self.before[tenant] = stored.view

    def result(self) -> list[TenantCommitted]:
        """Every tenant of the flush, where it ended, and whether its estimate changed."""
        return [
            TenantCommitted(
                tenant,
                stored,
                _changed(self.before[tenant], stored.view),
                tuple(self._counted.get(tenant, ())),
            )
            for tenant, stored in self.states.items()
        ]


def _newly_counted(before: TenantState, after: TenantState, max_wait_seconds: int) -> list[str]:
    """The tenant's own orders that ``after`` holds completed and ``before`` did not (as its
    own), and whose wait counts. A record's completions only grow, so each order is seen
    completed first by one landed write, whatever happens to it later (an earlier
    submission or completion, a cancellation): it is scored once."""

    def completed(record: OrderRecord | None) -> bool:
        return record is not None and record.tenant == after.tenant and bool(record.completions)

    return sorted(
        order_id
        for order_id, record in after.orders.items()
        if completed(record)
        and not completed(before.orders.get(order_id))
        and counted_wait(record, max_wait_seconds) is not None
    )
