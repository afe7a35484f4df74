"""The estimators by name (``ESTIMATORS``, selected by ``WAIT_TIMES_ESTIMATOR``), and the
one place options are made with their estimator (``estimate_options``). A new estimator
is its module and one line here. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from service.core.estimators.base import TRAINING_ORDERS, EstimateOptions, Estimator
from service.core.estimators.hinge import MIN_TRAINING, HingeEstimator

# name -> factory(maximum wait, *, min_training): one line an estimator.
ESTIMATORS: dict[str, Callable[..., Estimator]] = {
    "hinge": HingeEstimator,  # a queue served by a learned number of baristas
    "linear": partial(HingeEstimator, knees=(1,)),  # every order ahead adds the same time
}
DEFAULT_ESTIMATOR = "hinge"


class UnknownEstimatorError(ValueError):
    """An estimator name the registry does not hold."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown estimator {name!r}: choose one of {', '.join(sorted(ESTIMATORS))}"
        )


def estimate_options(
    max_wait_seconds: int,
    estimator: str = DEFAULT_ESTIMATOR,
    *,
    training_orders: int = TRAINING_ORDERS,
    min_training: int = MIN_TRAINING,
) -> EstimateOptions:
    """The options, with the named estimator made for them (its caches for the process).
    Raises ``UnknownEstimatorError`` for a name ``ESTIMATORS`` does not hold."""
    factory = ESTIMATORS.get(estimator)
    if factory is None:
        raise UnknownEstimatorError(estimator)
    return EstimateOptions(
        max_wait_seconds,
        factory(max_wait_seconds, min_training=min_training),
        estimator,
        training_orders,
    )
