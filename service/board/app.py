"""Wiring of ``wait-times board``: the board's queue, the table's current values, the web
server and the feed, in one task group until stopped."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from service.aws.clients import open_clients
from service.aws.queue import SqsQueue, resolve_queue
from service.board.feed import Board, consume
from service.board.seed import current_values
from service.board.server import build_app
from service.board.state import BoardState, served_tenants
from service.board.streams import Streams
from service.endpoints import SHUTDOWN_SECONDS
from service.errors import EXIT_OK, MissingResourceError
from service.settings import Settings

log = structlog.get_logger(__name__)


def build_board(settings: Settings) -> Board:
    """An empty board as the settings shape it."""
    state = BoardState(settings.board_max_keys, served_tenants(settings.board_tenants))
    return Board(state, Streams(settings.board_max_streams))


async def run_board(
    settings: Settings,
    *,
    port: int | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> int:
    """Serve the board until cancelled; ``task_status`` gets the port it listens on."""
    board = build_board(settings)
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        try:
            found = await resolve_queue(clients.sqs, settings.board_queue_name)
        except MissingResourceError as exc:
            raise MissingResourceError(
                f"the board's queue {settings.board_queue_name!r} is missing ({exc}); run "
                "`wait-times provision` with WAIT_TIMES_BOARD_ENABLED=true"
            ) from None
        board.take_values(
            await current_values(
                clients.dynamodb, settings.table_name, window_size=settings.window_size
            ),
            messages=False,
        )
        queue = SqsQueue(
            clients.sqs,
            found.url,
            visibility_timeout=settings.visibility_timeout_seconds,
            wait_seconds=settings.receive_wait_seconds,
        )
        runner = web.AppRunner(
            build_app(
                board.state,
                board.streams,
                board.registry,
                keepalive_seconds=settings.board_keepalive_seconds,
            ),
            access_log=None,
            shutdown_timeout=SHUTDOWN_SECONDS,
            # A browser that leaves cancels its stream's handler, which frees its slot at
            # once instead of at the next keep-alive write.
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, settings.board_host, settings.board_port if port is None else port
            )
            await site.start()
            bound = int(runner.addresses[0][1])
            log.info(
                "board_started",
                url=f"http://{_shown_host(settings.board_host)}:{bound}/",
                port=bound,
                queue=settings.board_queue_name,
                tenants=len(board.state.tenants()),
            )
            task_status.started(bound)
            await consume(queue, board, found.max_receive_count)
        finally:
            board.streams.close_all()
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
    return EXIT_OK


def _shown_host(host: str) -> str:
    return "localhost" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
