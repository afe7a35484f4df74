"""A tenant's estimate as a value: what the tenant state (``service.core.tenant``) says
at an event time, and what the worker publishes and reports. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

# What a change is judged on: open orders, and each drink's values in whole seconds.
Rounded = tuple[int, tuple[tuple[str, int, int], ...]]


class DrinkEstimate(NamedTuple):
    """A drink's predicted wait and its p90, in seconds."""

    estimate: float
    p90: float


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a tenant's state says at ``as_of``: open orders and an estimate per drink."""

    tenant: str
    as_of: int
    open_orders: int
    drinks: Mapping[str, DrinkEstimate] = field(default_factory=dict)

    def rounded(self) -> Rounded:
        """What a change is judged on: open orders and every value in whole seconds."""
        return self.open_orders, tuple(
            (drink, round(e.estimate), round(e.p90)) for drink, e in sorted(self.drinks.items())
        )


def rounded_of(view: Estimate | None) -> Rounded | None:
    """What a view's change is judged on (``Estimate.rounded``; None: no view). A caller
    comparing one view with many keeps its value instead of computing it again."""
    return None if view is None else view.rounded()


def changed(before: Estimate | None, after: Estimate | None) -> bool:
    """Whether a view changed, as published: in whole seconds (``rounded_of``), or from
    none to some or back; ``as_of`` moving alone is no change."""
    return rounded_of(before) != rounded_of(after)
