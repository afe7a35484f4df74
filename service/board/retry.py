"""The board's one retry loop: its receives and its start-up Scan wait out what may pass."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import structlog

from service.backoff import DEPENDENCY_RETRY
from service.errors import WaitTimesError

T = TypeVar("T")
log = structlog.get_logger(__name__)


async def answered(event: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``'s answer; an AWS failure that may pass (throttling, an endpoint not up
    yet) is logged as ``event`` and tried again with the dependency backoff, any other
    stops the board."""
    failures = 0
    while True:
        try:
            return await attempt()
        except WaitTimesError as exc:
            if not exc.retriable:
                raise
            delay = DEPENDENCY_RETRY.delay(failures)
            failures += 1
            log.warning(event, error=str(exc)[:300], retry_in_s=round(delay, 2))
            await anyio.sleep(delay)
