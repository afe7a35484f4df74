"""Today's wait model, ``hinge``: a multi-server queue seen from outside (``Model``),
fitted by least squares over a tenant's training samples (docs/decisions.md, "A
queue-aware estimate, measured, published, scored"). Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from service.core.estimate import DrinkEstimate
from service.core.estimators.base import QueueSnapshot, Sample

MAX_SERVERS = 8  # the hinge's knee is searched in 1..MAX_SERVERS orders ahead
MIN_TRAINING = 5  # counted orders a tenant needs before it gets any estimate
SHRINK = 2.0  # pseudo-orders pulling a rare drink's offset toward the tenant's
P90 = 0.9
# The last models an estimator fitted, by their samples: a tenant's estimate is asked
# for at every event, and its training orders change only when one completes (a pure
# function's cache: the same samples always give the same model).
FITTED_MODELS = 256


@dataclass(frozen=True, slots=True)
class Model:
    """wait = offset[drink] + per_order * max(0, ahead - knee + 1), and a p90 ratio.

    A multi-server queue seen from outside: with fewer than ``knee`` orders ahead a new one
    starts at once and waits its own preparation; past it, each order ahead adds the time
    the bar takes to clear one. Both the knee (how many are served at once) and the rate
    are learned from the tenant's own completed orders, never configured. Its predictions
    are kept by orders ahead (the only thing of a queue it reads), on the instance.
    """

    offsets: Mapping[str, float]
    per_order: float
    knee: int
    p90_ratio: float
    max_wait_seconds: int
    _by_ahead: dict[int, dict[str, DrinkEstimate]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def predict(self, queue: QueueSnapshot) -> dict[str, DrinkEstimate]:
        """``predict_all`` for an order with the snapshot's open orders ahead of it."""
        ahead = len(queue.open_orders)
        found = self._by_ahead.get(ahead)
        if found is None:
            found = self._by_ahead[ahead] = self.predict_all(ahead)
        return found

    def wait(self, drink: str, ahead: int) -> float:
        """The predicted wait of an order of ``drink`` with ``ahead`` orders open."""
        return self.offsets[drink] + self.per_order * max(0, ahead - self.knee + 1)

    def predict_all(self, ahead: int) -> dict[str, DrinkEstimate]:
        """Every learned drink's estimate and p90, within [0, maximum wait]."""
        found = {}
        ceiling = float(self.max_wait_seconds)
        for drink in sorted(self.offsets):
            value = min(max(self.wait(drink, ahead), 0.0), ceiling)
            p90 = min(max(value * self.p90_ratio, value), ceiling)
            found[drink] = DrinkEstimate(float(round(value)), float(round(p90)))
        return found


class HingeEstimator:
    """The least-squares hinge (``Model``), its knee searched in ``knees`` (``linear``, in
    the registry, is the one knee 1: every order ahead adds the same time); no estimate
    under ``min_training`` samples. The models it fitted are kept by their samples, at most
    ``FITTED_MODELS`` of them (emptied when full)."""

    def __init__(
        self,
        max_wait_seconds: int,
        *,
        min_training: int = MIN_TRAINING,
        knees: Sequence[int] = range(1, MAX_SERVERS + 1),
    ) -> None:
        self.max_wait_seconds = max_wait_seconds
        self.min_training = min_training
        self.knees = knees
        self._fitted: dict[tuple[Sample, ...], Model] = {}

    def learn(self, samples: Sequence[Sample]) -> Model | None:
        """The least-squares model over the samples (None under ``min_training``): for
        each knee, drink offsets and one rate by within-drink regression; the knee with the
        least squared error wins (ties: the smaller)."""
        if len(samples) < self.min_training:
            return None
        key = tuple(samples)
        model = self._fitted.get(key)
        if model is None:
            model = fit(samples, self.knees, self.max_wait_seconds)
            if len(self._fitted) >= FITTED_MODELS:
                self._fitted.clear()
            self._fitted[key] = model
        return model


def fit(samples: Sequence[Sample], knees: Iterable[int], max_wait_seconds: int) -> Model:
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
    return Model(offsets, per_order, knee, _quantile(ratios, P90), max_wait_seconds)


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
