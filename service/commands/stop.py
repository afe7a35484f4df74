"""SIGTERM and SIGINT stop every command, as PID 1 in a container or not."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from types import FrameType

import anyio

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived; a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way up mistakes it for a failure."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_on_stop_signals() -> None:
    """Until a command listens for SIGTERM/SIGINT itself, either one raises StopRequested.

    Python leaves SIGTERM at its default, which a container's PID 1 ignores: without this
    handler ``docker stop`` would wait its grace period and kill the process.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise StopRequested(signum)


async def until_stopped(work: Callable[[], Awaitable[int]]) -> int:
    """Run ``work``; SIGTERM or SIGINT cancels it at once and raises StopRequested."""
    stopped_by: list[int] = []
    try:
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    async for signum in signals:
                        stopped_by.append(signum)
                        group.cancel_scope.cancel()
                        return

                group.start_soon(watch)
                code = await work()
                group.cancel_scope.cancel()
    finally:
        raise_on_stop_signals()  # asyncio put the defaults back; PID 1 ignores SIGTERM's
    if stopped_by:
        raise StopRequested(stopped_by[0])
    return code
