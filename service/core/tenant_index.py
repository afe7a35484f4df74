"""A tenant's state indexed for replay (``LiveTenant``), and the tenants' states and
published estimates without a store (``EstimateBook``: ``replay --estimates``, the
accuracy benchmark).

The indexed shape holds what ``service.core.tenant.TenantState`` holds and answers what
it answers, from sorted indexes kept up to date instead of walks of the whole state at
every event (docs/performance.md, section 13), and its training samples kept between
events (``TrainingSamples``). It decides nothing itself: every rule (join and compact,
open interval, open count, latest event, view time, horizon, prune, byte cap, training
orders and sample, next version, the tenants a record names) is the function of
``service.core.tenant`` or ``service.core.tenant_rules`` that ``TenantState`` calls too,
and whether a view changed is ``service.core.estimate.changed``. Pure: no I/O here.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from service.core.estimate import Estimate, Rounded, rounded_of
from service.core.estimators.base import Model, OpenOrder, QueueSnapshot, Sample
from service.core.pairing import OrderRecord
from service.core.tenant import (
    MAX_TENANT_ORDERS,
    TenantState,
    chars,
    joined,
    may_pass_byte_cap,
    own_event_times,
    tenants_named,
    training_sample,
)
from service.core.tenant_rules import (
    ended_kept,
    horizon,
    latest_of,
    next_version,
    open_count,
    open_interval,
    recent_start,
    unended_kept,
    unended_kept_from,
    unended_open_at,
    view_time,
)

if TYPE_CHECKING:
    from service.core.estimators.base import EstimateOptions


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

    def __init__(self, options: EstimateOptions, cap: int = MAX_TENANT_ORDERS) -> None:
        self.options = options
        self.cap = cap
        self.live: dict[str, LiveTenant] = {}
        self.published: dict[str, Versioned] = {}
        self.dropped = 0
        self._rounded: dict[str, Rounded | None] = {}  # each published estimate's

    def update(self, records: Iterable[OrderRecord], now: int) -> list[Versioned]:
        """Join records and return each changed tenant's new estimate."""
        by_tenant: dict[str, list[OrderRecord]] = {}
        for record in records:
            for tenant in tenants_named(record):
                by_tenant.setdefault(tenant, []).append(record)
        found_changed = []
        for tenant, named in sorted(by_tenant.items()):
            live = self.live.get(tenant)
            if live is None:
                live = self.live[tenant] = LiveTenant(tenant, self.options, self.cap)
            live.add(named)
            self.dropped += live.prune(view_time(live.latest_event(), now))
            found = live.view(now)
            if found is None:
                continue
            rounded = rounded_of(found)  # (``changed``, the last published one's kept)
            if self._rounded.get(tenant) == rounded:
                continue
            last = self.published.get(tenant)
            versioned = Versioned(found, next_version(0 if last is None else last.version))
            self.published[tenant] = versioned
            self._rounded[tenant] = rounded
            found_changed.append(versioned)
        return found_changed


class LiveTenant:
    """A tenant's state as ``EstimateBook`` keeps it: the records of ``TenantState``, in a
    dict changed in place, and sorted indexes of what its rules read, so that an event
    costs a few bisections instead of walks of the whole state:

    - ``times``: the earliest submission, completion and cancellation of each of the
      tenant's own records (``own_event_times``, for ``latest_event``);
    - ``starts``, ``stops``: its own records' open intervals (``open_interval``), and
      ``waiting`` and ``waiting_orders``: the unended own records' (submission, id) and,
      in the same order, each as an ``OpenOrder`` (a snapshot's open orders are a slice);
    - ``completed``: every record's (earliest completion, order id), the latest
      ``training_orders`` of which (``recent_start``) are ``TenantState``'s recent ones
      (the training orders, the horizon), held by its ``TrainingSamples``;
    - ``ended`` and ``unended``: (end, id) and (submission, id), the two kinds of record
      ``TenantState.prune`` drops, oldest first;
    - ``chars``: the names' lengths, for the byte cap's first bound.

    The training samples are kept between events (``TrainingSamples``). Past a cap,
    ``TenantState.prune`` prunes and the indexes are built again. Tests hold it all to
    ``TenantState`` and ``view_of``, caps included.
    """

    def __init__(self, tenant: str, options: EstimateOptions, cap: int = MAX_TENANT_ORDERS) -> None:
        self.tenant = tenant
        self.options = options
        self.max_wait_seconds = options.max_wait_seconds
        self.training_orders = options.training_orders
        self.cap = cap
        self._reset()

    def _reset(self) -> None:
        self.orders: dict[str, OrderRecord] = {}
        self.times: list[int] = []
        self.starts: list[int] = []
        self.stops: list[int] = []
        self.waiting: list[tuple[int, str]] = []
        self.waiting_orders: list[OpenOrder] = []
        self.samples = TrainingSamples(self.tenant, self.options)
        self.completed = self.samples.completed
        self.ended: list[tuple[int, str]] = []
        self.unended: list[tuple[int, str]] = []
        self.chars = 0

    def state(self) -> TenantState:
        """The state as a ``TenantState`` (a copy)."""
        return TenantState(self.tenant, dict(self.orders))

    def add(self, records: Iterable[OrderRecord]) -> None:
        """``TenantState.add``."""
        orders = self.orders
        for incoming in records:
            known = orders.get(incoming.order_id)
            record = joined(known, incoming)
            if record == known:
                continue
            before = None
            if known is not None:
                before = self._interval(known)
                self._index(known, remove=True)
            orders[incoming.order_id] = record
            self._index(record)
            after = self._interval(record)
            moved = self.samples.moved
            if before is not None and after is not None and before[0] == after[0]:
                moved(min(before[1], after[1]), max(before[1], after[1]))
            else:
                for interval in (before, after):
                    if interval is not None:
                        moved(*interval)

    def _interval(self, record: OrderRecord) -> tuple[int, int] | None:
        """An own record's ``open_interval`` (None: another tenant's record)."""
        first = record.submissions[0]
        if first[1] != self.tenant:
            return None
        return open_interval(first[0], record.ended_at, self.max_wait_seconds)

    def _index(self, record: OrderRecord, *, remove: bool = False) -> None:
        order_id = record.order_id
        first = record.submissions[0]
        submitted = first[0]
        completion = record.completions[0] if record.completions else None
        ended = record.ended_at
        self.chars += -chars(record) if remove else chars(record)
        if completion is not None:
            self.samples.completed_change((completion, order_id), remove)
        if ended is None:
            _change(self.unended, (submitted, order_id), remove)
        else:
            _change(self.ended, (ended, order_id), remove)
        interval = self._interval(record)
        if interval is None:
            return
        for at in own_event_times(record, self.tenant):
            _change(self.times, at, remove)
        _change(self.starts, interval[0], remove)
        _change(self.stops, interval[1], remove)
        if ended is None:
            key = (submitted, order_id)
            at = bisect_left(self.waiting, key)
            if remove:
                del self.waiting[at], self.waiting_orders[at]
            else:
                self.waiting.insert(at, key)
                self.waiting_orders.insert(at, OpenOrder(order_id, submitted, first[2]))

    def latest_event(self) -> int | None:
        """``TenantState.latest_event``: ``latest_of`` the latest two distinct times."""
        times = self.times
        if not times:
            return None
        first = times[-1]
        below = bisect_left(times, first)
        return latest_of(first, times[below - 1] if below else None)

    def prune(self, as_of: int) -> int:
        """``TenantState.prune``: drop what no view at ``as_of`` or later needs; how many
        orders the caps dropped."""
        completed = self.completed
        victims: list[OrderRecord] = []
        training = self.training_orders
        count = len(completed)
        oldest = completed[recent_start(count, training)][0] if count >= training else 0
        bound = horizon(count, oldest, training, self.max_wait_seconds)
        if bound is not None:
            orders = self.orders
            earliest = unended_kept_from(bound, as_of, self.max_wait_seconds)
            for submitted, order_id in self.unended:
                if unended_kept(submitted, earliest):
                    break
                victims.append(orders[order_id])
            for ended, order_id in self.ended:
                if ended >= bound:  # (kept, and so is every later one)
                    break
                record = orders[order_id]
                first_completion = record.completions[0] if record.completions else None
                if not ended_kept(ended, first_completion, bound, as_of):
                    victims.append(record)
        kept = len(self.orders) - len(victims)
        left = self.chars - sum(chars(r) for r in victims)
        if kept > self.cap or may_pass_byte_cap(left, kept):
            return self._prune_to_caps(as_of)
        for record in victims:
            interval = self._interval(record)
            self._index(record, remove=True)
            del self.orders[record.order_id]
            if interval is not None:
                self.samples.moved(*interval)
        return 0

    def _prune_to_caps(self, as_of: int) -> int:
        state, dropped = self.state().prune(as_of, self.options, self.cap)
        self._reset()
        self.add(state.orders.values())
        return dropped

    def view(self, now: int) -> Estimate | None:
        """``view_of``: the estimate at the tenant's latest event, never after ``now``."""
        latest = self.latest_event()
        if latest is None:
            return None
        as_of = view_time(latest, now)
        model = self.samples.model(self.orders, self._open_at)
        snapshot = QueueSnapshot(as_of, _open_orders(self, as_of))
        drinks = {} if model is None else model.predict(snapshot)
        return Estimate(self.tenant, as_of, len(snapshot.open_orders), drinks)

    def _open_at(self, t: int) -> int:
        return open_count(self.starts, self.stops, t)


class TrainingSamples:
    """A ``LiveTenant``'s training samples, kept between events. It holds ``completed``,
    every record's (earliest completion, order id) sorted: a completion newer than all
    adds a sample in front, those no longer among the latest ``training_orders``
    (``recent_start``) leave from the back; anything else changing the latest completions,
    or an open interval over a sample's submission (``moved``), makes them again."""

    def __init__(self, tenant: str, options: EstimateOptions) -> None:
        self.tenant = tenant
        self.options = options
        self.max_wait_seconds = options.max_wait_seconds
        self.training_orders = options.training_orders
        self.completed: list[tuple[int, str]] = []
        self._stale = True  # the samples must be made again from ``completed``
        self._newer: list[tuple[int, str]] = []  # completions since, each newer than all
        self._samples: list[Sample] = []
        self._keys: list[tuple[int, str]] = []  # each sample's (completion, order id)
        self._submitted: list[int] = []  # each sample's submission
        self._span = (0, -1)  # the earliest and the latest of those
        self._model: Model | None = None

    def completed_change(self, key: tuple[int, str], remove: bool) -> None:
        """A (completion, id) enters or leaves ``completed``: below the recent ones it
        changes no sample; newer than all it adds one in front; anything else makes them
        again."""
        completed = self.completed
        if remove:
            if key >= completed[recent_start(len(completed), self.training_orders)]:
                self._stale = True
            del completed[bisect_left(completed, key)]
        elif not completed or key > completed[-1]:
            completed.append(key)
            self._newer.append(key)
        else:
            insort(completed, key)
            if key >= completed[recent_start(len(completed), self.training_orders)]:
                self._stale = True

    def moved(self, start: int, stop: int) -> None:
        """The open counts changed on [start, stop): so did the samples submitted in it."""
        if start < stop and start <= self._span[1] and stop > self._span[0]:
            self._stale = True

    def model(self, orders: dict[str, OrderRecord], open_at: Callable[[int], int]) -> Model | None:
        """The estimator's model of the samples, learnt again when they changed."""
        if self._stale or self._newer:
            self._train(orders, open_at)
        return self._model

    def _trim(self, first: int) -> None:
        """Take off the back the samples no longer among the recent orders, which start at
        ``first`` in ``completed`` (an order pruned from below them may have held one: a
        wait of 0 has an empty open interval, so nothing else notices it)."""
        if len(self.completed) >= self.training_orders:
            oldest = self.completed[first]
            while self._keys and self._keys[-1] < oldest:
                self._keys.pop()
                self._samples.pop()
                self._submitted.pop()

    def _train(self, orders: dict[str, OrderRecord], open_at: Callable[[int], int]) -> None:
        """``training`` and the estimator's ``learn``: the samples made again, or the newer
        completions' put in front and the ones no longer among the recent taken off the
        back."""
        completed = self.completed
        first = recent_start(len(completed), self.training_orders)
        if self._stale:
            keys = completed[first:]
            self._samples, self._keys, self._submitted = [], [], []
        else:
            keys = self._newer
            if len(completed) >= self.training_orders:
                # Only those still among the recent (one pruned since has no record).
                keys = keys[bisect_left(keys, completed[first]) :]
        samples: list[Sample] = []
        sample_keys: list[tuple[int, str]] = []
        submissions: list[int] = []
        tenant = self.tenant
        max_wait = self.max_wait_seconds
        for key in reversed(keys):
            record = orders[key[1]]
            sample = training_sample(record, tenant, max_wait, open_at)
            if sample is not None:
                samples.append(sample)
                sample_keys.append(key)
                submissions.append(record.submissions[0][0])
        self._samples[:0] = samples
        self._keys[:0] = sample_keys
        self._submitted[:0] = submissions
        self._trim(first)
        self._stale = False
        self._newer = []
        held = self._submitted
        self._span = (min(held), max(held)) if held else (0, -1)
        self._model = self.options.estimator.learn(self._samples)


def _open_orders(live: LiveTenant, t: int) -> tuple[OpenOrder, ...]:
    """A ``LiveTenant``'s open orders at ``t``, as ``TenantState`` finds them, from its
    indexes: the unended own ones submitted in the maximum wait up to ``t`` (a slice), and
    the few ended after ``t`` whose open interval holds it."""
    waiting = live.waiting
    first, stop = unended_open_at(t, live.max_wait_seconds)
    low = bisect_left(waiting, (first,))
    high = bisect_left(waiting, (stop,))
    ended = live.ended
    later = []
    for _, order_id in ended[bisect_left(ended, (t + 1,)) :]:
        record = live.orders[order_id]
        interval = live._interval(record)
        if interval is not None and interval[0] <= t < interval[1]:
            later.append(OpenOrder(order_id, interval[0], record.submissions[0][2]))
    if not later:
        return tuple(live.waiting_orders[low:high])
    found = live.waiting_orders[low:high] + later
    found.sort(key=lambda o: (o.submitted_at, o.order_id))
    return tuple(found)


def _change(index: list[Any], value: Any, remove: bool) -> None:
    if remove:
        del index[bisect_left(index, value)]
    else:
        insort(index, value)
