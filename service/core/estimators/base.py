"""The seam between a tenant's queue and the model that estimates its waits. Pure.

An estimator learns from a tenant's training samples (``Sample``: one counted order, its
drink, the orders ahead of it and its wait) and returns what it learned (a ``Model``, or
None when the samples are too few); a model predicts, from a snapshot of the tenant's
queue (``QueueSnapshot``: its open orders at an event time, each with its submission time
and drink), an estimate and a p90 per drink. The tenant state (``service.core.tenant``)
and its indexed shape (``service.core.tenant_index``) make both and never look inside a
model; the options they read are one value (``EstimateOptions``), made with its estimator
by the registry of estimators by name (``service.core.estimators.registry``).

``QueueSnapshot`` and ``OpenOrder`` are values made to grow: what a tenant's state comes
to know of its open orders (when one started being made, and by whom) is added to
``OpenOrder`` as fields with defaults, and a model that does not read them is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from service.core.estimate import DrinkEstimate

TRAINING_ORDERS = 150  # the tenant's latest counted orders the estimate learns from


class Sample(NamedTuple):
    """One counted order as the estimate learns it."""

    drink: str
    ahead: int  # the tenant's other orders open when it was submitted
    wait: int


class OpenOrder(NamedTuple):
    """One of a tenant's orders open at a snapshot's time (a named tuple: replay makes
    one for every open order it indexes, and a tuple is the cheapest frozen value)."""

    order_id: str
    submitted_at: int
    drink: str


class QueueSnapshot(NamedTuple):
    """A tenant's queue at ``as_of``: its open orders, by (submission, order id)."""

    as_of: int
    open_orders: tuple[OpenOrder, ...] = ()


class Model(Protocol):
    """What an estimator learned from one tenant's samples."""

    def predict(self, queue: QueueSnapshot) -> Mapping[str, DrinkEstimate]:
        """Every learned drink's estimate and p90 for an order placed into ``queue``,
        within [0, maximum wait]. The same snapshot always gives the same values."""
        ...


class Estimator(Protocol):
    """A wait model: learns from samples, returns a ``Model`` (None: too few samples).

    ``learn`` is a pure function of the samples: an estimator may cache what it learned
    (on the instance, never in its module), since a tenant's estimate is asked for at
    every event and its samples change only when one of its orders completes.
    """

    def learn(self, samples: Sequence[Sample]) -> Model | None:
        """The model of these samples, None when they are too few to learn from."""
        ...


@dataclass(frozen=True, slots=True)
class EstimateOptions:
    """What a tenant's state and its estimator read of the configuration, as one value,
    made once (``service.core.estimators.registry.estimate_options``, from ``Settings``
    in the wiring) and passed down whole.

    ``max_wait_seconds``: an order open longer is ahead of no one, and a longer wait never
    trains (``Settings.max_wait_seconds``); ``estimator``: the model, an instance whose
    caches serve every tenant of the process; ``name``: its name in the registry
    (``Settings.estimator``); ``training_orders``: how many of the latest completed orders
    may train it, which also bounds what pruning keeps.
    """

    max_wait_seconds: int
    estimator: Estimator = field(compare=False, repr=False)
    name: str
    training_orders: int = TRAINING_ORDERS
