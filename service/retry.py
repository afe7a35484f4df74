"""The service's one error-retry loop, ``until_done``: the worker's steps, its start-up wait
for the endpoint, and the board's receives and start-up Scan all wait out what may pass
through it (docs/decisions.md, "One retry policy").

Whether to try again is the error's own answer (``WaitTimesError.retriable``, decided once
where the error is made); how long to wait is ``DEPENDENCY_RETRY``, capped exponential
backoff with full jitter. No other loop retries an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio
import structlog

from service.backoff import DEPENDENCY_RETRY
from service.errors import WaitTimesError

log = structlog.get_logger(__name__)

T = TypeVar("T")


class FlushAbandoned(Exception):
    """A stop was requested while a dependency kept failing: leave the flush unfinished."""


class RetryObserver(Protocol):
    """What the loop reports: the part of the worker's ``Observer`` (``service.ports``)
    that readiness reads."""

    def retrying(self, stage: str, error: WaitTimesError) -> None:
        """A dependency failed and ``stage`` will be tried again: not ready."""
        ...

    def dependencies_ok(self) -> None:
        """Dependencies answered again: ready."""
        ...


async def until_done(
    step: str,
    call: Callable[[], Awaitable[T]],
    observer: RetryObserver | None = None,
    *,
    stopping: Callable[[], bool] = lambda: False,
) -> T:
    """Run one step, trying again while it fails retriably: the service's one unbounded
    retry loop (an outage lasts as long as it lasts; readiness says so meanwhile, when an
    observer is given: the board has no readiness and passes none).

    A non-retriable error propagates at once; once ``stopping()``, a failure raises
    FlushAbandoned instead of waiting for the dependency. Each retry is logged as
    ``dependency_retry`` (``aws_unreachable`` when the endpoint did not answer), with
    ``step``.
    """
    attempt = 0
    while True:
        try:
            result = await call()
        except WaitTimesError as exc:
            if not exc.retriable:
                raise
            if observer is not None:
                observer.retrying(step, exc)
            if stopping():
                raise FlushAbandoned(step) from exc
            delay = DEPENDENCY_RETRY.delay(attempt)
            attempt += 1
            log.warning(
                "aws_unreachable" if getattr(exc, "unreachable", False) else "dependency_retry",
                step=step,
                error=str(exc)[:300],
                attempt=attempt,
                retry_in_s=round(delay, 2),
            )
            await anyio.sleep(delay)
        else:
            if attempt and observer is not None:
                observer.dependencies_ok()
            return result
