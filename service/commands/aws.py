"""The commands that call AWS: ``run``, ``board``, ``provision``, ``play``.

Each imports what it runs when it runs, so ``replay`` and ``schema`` load no AWS library.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.commands.base import Command, UsageError
from service.commands.options import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    add_duration,
    add_seed,
    add_traffic,
    port_number,
    tenant_list,
)
from service.commands.stop import until_stopped
from service.settings import Settings, setting_default

if TYPE_CHECKING:
    from service.aws.clients import AwsClients


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from service.app import run_worker  # noqa: PLC0415 - keep replay free of AWS imports

    return await run_worker(settings, burst=args.burst)


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--burst", action="store_true", help="stop once the queue is drained")


RUN = Command(
    "run",
    help="the worker: consume the queue until SIGTERM",
    add_options=_run_options,
    handler=_run,
    calls_aws=True,
    stop_is_success=True,
)


async def _board(args: argparse.Namespace, settings: Settings) -> int:
    from service.board.app import run_board  # noqa: PLC0415 - keep replay free of aiohttp

    return await until_stopped(lambda: run_board(settings, port=args.port))


def _board_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=port_number,
        help="listen on this port (default WAIT_TIMES_BOARD_PORT, "
        f"{setting_default('board_port')}; 0: any free port)",
    )


BOARD = Command(
    "board",
    help="the live wait board: a web page per tenant, from its own queue",
    description="Serves a page per tenant (estimate, p90, orders ahead, last-N average), "
    "live over server-sent events, fed by the board's own queue (created by `provision` "
    "with WAIT_TIMES_BOARD_ENABLED=true) and started from the table's current values.",
    add_options=_board_options,
    handler=_board,
    calls_aws=True,
    stop_is_success=True,
)


async def _with_clients(settings: Settings, work: Callable[[AwsClients], Awaitable[None]]) -> int:
    """Open the AWS clients, run ``work`` with them until done or stopped by a signal."""
    from service.aws.clients import open_clients  # noqa: PLC0415

    async def with_clients() -> int:
        async with AsyncExitStack() as stack:
            await work(await open_clients(settings, stack))
        return 0

    return await until_stopped(with_clients)


async def _provision(args: argparse.Namespace, settings: Settings) -> int:
    from service.aws.provision import provision  # noqa: PLC0415

    async def work(clients: AwsClients) -> None:
        await provision(settings, clients, capture_queue=args.capture_queue)

    return await _with_clients(settings, work)


def _provision_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--capture-queue",
        metavar="NAME",
        help="also route the published events (averages, estimates) to this queue",
    )


PROVISION = Command(
    "provision",
    help="create bus rule, queue, DLQ and table",
    add_options=_provision_options,
    handler=_provision,
    calls_aws=True,
    stop_advice="; run it again to finish the stack",
)


async def _play(args: argparse.Namespace, settings: Settings) -> int:
    from service.tools.player import play_generated, play_recording  # noqa: PLC0415

    recording = read_recording(args.file) if args.file else None

    async def work(clients: AwsClients) -> None:
        if recording is not None:
            await play_recording(clients.events, settings.event_bus, recording, speed=args.speed)
        else:
            await play_generated(clients.events, settings.event_bus, **play_options(args))

    return await _with_clients(settings, work)


def read_recording(path: Path) -> list[dict[str, Any]]:
    """A recording's envelopes, read before anything is sent; bad files are UsageErrors."""
    from service.tools.replay import read_events  # noqa: PLC0415

    try:
        return [e for e in read_events(path) if isinstance(e, dict)]
    except OSError as exc:
        raise UsageError(f"cannot read --file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def play_options(args: argparse.Namespace) -> dict[str, Any]:
    """``play_generated``'s keyword arguments from ``play``'s parsed options."""
    from service.tools.coffeebar import Rush  # noqa: PLC0415 - only play needs it

    # No seed: a fresh one, so a restarted player does not send the same order ids again.
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    return {
        "rush": Rush(every=args.rush_every, length=args.rush_length, factor=args.rush_factor),
        "baristas": args.baristas,
        "orders": args.orders,
        "duration": args.duration,
        "rate": args.rate,
        "speed": args.speed,
        "history": args.history,
        "seed": seed,
        "tenants": args.tenants,
    }


def _rush_conflict(args: argparse.Namespace) -> str | None:
    if args.rush_length > args.rush_every:
        return (
            f"argument --rush-length: must be at most --rush-every ({args.rush_every:g}), "
            f"not {args.rush_length:g}"
        )
    return None


def _play_options(parser: argparse.ArgumentParser) -> None:
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--file", type=Path, help="replay this recording (JSON array or JSON Lines)"
    )
    amount.add_argument(
        "--orders", type=POSITIVE_INT, help="stop after this many placed orders, once they end"
    )
    add_duration(amount)
    add_traffic(parser, speed=1.0, unpaced=True)
    parser.add_argument(
        "--history",
        type=NON_NEGATIVE,
        metavar="SECONDS",
        help="start the simulated clock this long ago (default 3600 when --speed is 0 or "
        "above 1, else 0)",
    )
    add_seed(parser, default=None)
    parser.add_argument(
        "--tenants", type=tenant_list, default="NYC,LDN,SYD", help="comma-separated tenant ids"
    )
    _rush_options(parser)
    parser.add_argument(
        "--baristas",
        type=POSITIVE_INT,
        metavar="N",
        help="baristas at every tenant's bar (default: 2 to 4 per tenant, from --seed)",
    )


def _rush_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rush-every",
        type=POSITIVE,
        default=1200.0,
        metavar="SECONDS",
        help="a rush every this many simulated seconds, the first when the player starts "
        "(default 1200)",
    )
    parser.add_argument(
        "--rush-length",
        type=NON_NEGATIVE,
        default=300.0,
        metavar="SECONDS",
        help="each rush lasts this long, at most --rush-every (default 300)",
    )
    parser.add_argument(
        "--rush-factor",
        type=AT_LEAST_ONE,
        default=5.0,
        metavar="X",
        help="arrivals in a rush, times --rate (default 5; 1: steady traffic)",
    )


PLAY = Command(
    "play",
    help="put realistic order traffic (or a recording) on the bus",
    description="Generated traffic plays until stopped (SIGTERM, Ctrl-C), or for --orders "
    "orders or --duration seconds. Its clock starts --history seconds ago, runs --speed "
    "times faster than real time until it reaches the wall clock, then in real time: no "
    "event is ever stamped later than the moment it is sent. The traffic is a simulated "
    "coffee bar per tenant: baristas serving one queue, rushes, customers who cancel when "
    "their patience runs out, a full bar turning orders away.",
    add_options=_play_options,
    handler=_play,
    conflict=_rush_conflict,
    calls_aws=True,
    stop_is_success=True,
)
