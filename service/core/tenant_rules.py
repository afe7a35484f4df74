"""A tenant's rules over plain values (times, counts), each written once: the tenant
state (``service.core.tenant.TenantState``, what the worker stores) and its indexed
shape (``service.core.tenant_index.LiveTenant``, what ``replay --estimates`` keeps) both
call them, so a rule changes in one place. The rules that read a whole record are in
``service.core.tenant``. Pure: no I/O here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

LONE_EVENT_GAP = 900  # s: a latest event further than this after the others waits for company


def open_interval(submitted: int, ended: int | None, max_wait_seconds: int) -> tuple[int, int]:
    """An order's open interval [submission, stop): until it ended, or for the maximum
    wait (an older order is ahead of no one)."""
    stop = submitted + max_wait_seconds + 1
    if ended is not None and ended < stop:
        stop = max(ended, submitted)
    return submitted, stop


def unended_open_at(t: int, max_wait_seconds: int) -> tuple[int, int]:
    """The submissions [low, high) of the unended orders open at ``t``: an unended order's
    ``open_interval`` [s, s + maximum wait + 1) holds ``t`` exactly when low <= s < high."""
    return t - max_wait_seconds, t + 1


def open_count(starts: Sequence[int], stops: Sequence[int], t: int) -> int:
    """How many of the intervals (their sorted starts and stops) are open at ``t``."""
    return bisect_right(starts, t) - bisect_right(stops, t)


def latest_of(first: int | None, second: int | None) -> int | None:
    """The latest event, from the latest two distinct event times: the latest, unless it
    stands alone more than ``LONE_EVENT_GAP`` after the other (an event stamped ahead
    waits for company, so it can neither freeze nor empty the estimate)."""
    if first is not None and second is not None and first - second > LONE_EVENT_GAP:
        return second
    return first


def view_time(latest: int | None, now: int) -> int:
    """The time a view is for: the tenant's latest event, never after ``now``."""
    return now if latest is None else min(now, latest)


def recent_start(completed: int, training_orders: int) -> int:
    """Where the recent orders (those that may train the estimate) start among
    ``completed`` completed ones sorted by (completion, order id), oldest first: the latest
    ``training_orders`` of them."""
    return max(0, completed - training_orders)


def horizon(
    completed: int, oldest_recent: int, training_orders: int, max_wait_seconds: int
) -> int | None:
    """Ended orders that ended before this matter to no view (None: keep them all), from
    how many records completed and the earliest completion among the latest
    ``training_orders`` of them: every order that can ever train the estimate is among
    those, so it was submitted at or after it."""
    if completed < training_orders:
        return None
    return oldest_recent - max_wait_seconds


def unended_kept_from(horizon: int, as_of: int, max_wait_seconds: int) -> int:
    """The earliest submission of an unended record that pruning keeps: one submitted
    earlier than the maximum wait before both the horizon and ``as_of`` is open at no
    training order's submission and at no view from ``as_of`` on."""
    return min(horizon, as_of) - max_wait_seconds


def unended_kept(submitted: int, earliest: int) -> bool:
    """Whether pruning keeps an unended record submitted at ``submitted``, ``earliest``
    being ``unended_kept_from``'s bound."""
    return submitted >= earliest


def ended_kept(ended: int, first_completion: int | None, horizon: int, as_of: int) -> bool:
    """Whether pruning keeps an ended record: it ended at or after the horizon, or after
    ``as_of`` (then it is still open at it), or it completed at or after the horizon."""
    return (
        ended >= horizon
        or ended > as_of
        or (first_completion is not None and first_completion >= horizon)
    )


def next_version(version: int) -> int:
    """The version a changed tenant is written or published at (0: never was)."""
    return version + 1
