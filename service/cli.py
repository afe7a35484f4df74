"""The ``wait-times`` command line: run, board, provision, play, replay, schema, demo.

Every refusal is one line on stderr and an exit code of its own (the README's table):
a bad option, input file or setting 2, a missing queue or table 3, no credentials 4,
credentials AWS rejected 5, a permission AWS denied 6, AWS failing a one-shot command 7.
SIGTERM and SIGINT stop every command, as PID 1 in a container or not: ``run``, ``play``
``board`` and ``demo`` exit 0 on such a requested stop; the others exit 128 + the signal's number
(130, 143), since they did not finish.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from importlib import metadata, util
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import structlog

from service.core.estimators.base import EstimateOptions
from service.core.estimators.registry import UnknownEstimatorError, estimate_options
from service.errors import (
    EXIT_CODES,
    EXIT_OK,
    EXIT_USAGE,
    ConfigurationError,
    DependencyError,
    SettingsError,
    WaitTimesError,
    find_error,
)
from service.logs import configure_logging
from service.settings import Settings, check_region, load_settings

if TYPE_CHECKING:
    from service.tools.replay import ReplayResult

log = structlog.get_logger(__name__)

# A requested stop is success for the commands meant to run until stopped.
STOP_IS_SUCCESS = frozenset({"run", "board", "play", "demo"})
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived; a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way up mistakes it for a failure."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class UsageError(Exception):
    """Bad input to a command (a file it cannot read, ...): one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse, refusing on one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: message`` on one line and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's), or "unknown" from a bare tree."""
    try:
        return metadata.version("wait-times")
    except metadata.PackageNotFoundError:
        return "unknown"


def emulator_available() -> bool:
    """Whether the ``emulator`` extra (moto) is installed: the production image has none."""
    try:
        return util.find_spec("moto") is not None
    except (ImportError, ValueError):
        return False


def _number(
    kind: Callable[[str], float], *, minimum: float, inclusive: bool, what: str
) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` at or above (or above) ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, not {text!r}")
        return value

    return parse


POSITIVE_INT = _number(int, minimum=1, inclusive=True, what="a whole number")
NON_NEGATIVE_INT = _number(int, minimum=0, inclusive=True, what="a whole number")
POSITIVE = _number(float, minimum=0, inclusive=False, what="a number")
NON_NEGATIVE = _number(float, minimum=0, inclusive=True, what="a number")
AT_LEAST_ONE = _number(float, minimum=1, inclusive=True, what="a number")
# Base orders per simulated second over all tenants: a bar of 2 baristas is about 70 % busy
# outside rushes, so rushes build queues that drain before the next one.
DEFAULT_RATE = 0.05


def port_number(text: str) -> int:
    """``--port``: a TCP port, 0 (any free one) to 65535."""
    port = int(NON_NEGATIVE_INT(text))
    if port > 65535:
        raise argparse.ArgumentTypeError(f"must be a port, 0 to 65535, not {text!r}")
    return port


def tenant_list(text: str) -> list[str]:
    """``--tenants``: comma-separated, blanks dropped, at least one left."""
    tenants = [t.strip() for t in text.split(",") if t.strip()]
    if not tenants:
        raise argparse.ArgumentTypeError(f"no tenant in {text!r}: give e.g. NYC,LDN")
    return tenants


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (settings come from the environment, not from flags)."""
    parser = Parser(
        prog="wait-times",
        description="Average wait per tenant and drink for Serverlesspresso. "
        "Settings: WAIT_TIMES_* and the standard AWS environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the worker: consume the queue until SIGTERM")
    run.add_argument("--burst", action="store_true", help="stop once the queue is drained")

    board = commands.add_parser(
        "board",
        help="the live wait board: a web page per tenant, from its own queue",
        description="Serves a page per tenant (estimate, p90, orders ahead, last-N average), "
        "live over server-sent events, fed by the board's own queue (created by `provision` "
        "with WAIT_TIMES_BOARD_ENABLED=true) and started from the table's current values.",
    )
    board.add_argument(
        "--port",
        type=port_number,
        help="listen on this port (default WAIT_TIMES_BOARD_PORT, 8080; 0: any free port)",
    )

    provision = commands.add_parser("provision", help="create bus rule, queue, DLQ and table")
    provision.add_argument(
        "--capture-queue",
        metavar="NAME",
        help="also route the published events (averages, estimates) to this queue",
    )

    play = commands.add_parser(
        "play",
        help="put realistic order traffic (or a recording) on the bus",
        description="Generated traffic plays until stopped (SIGTERM, Ctrl-C), or for --orders "
        "orders or --duration seconds. Its clock starts --history seconds ago, runs --speed "
        "times faster than real time until it reaches the wall clock, then in real time: no "
        "event is ever stamped later than the moment it is sent. The traffic is a simulated "
        "coffee bar per tenant: baristas serving one queue, rushes, customers who cancel when "
        "their patience runs out, a full bar turning orders away.",
    )
    amount = play.add_mutually_exclusive_group()
    amount.add_argument(
        "--file", type=Path, help="replay this recording (JSON array or JSON Lines)"
    )
    amount.add_argument(
        "--orders", type=POSITIVE_INT, help="stop after this many placed orders, once they end"
    )
    amount.add_argument("--duration", type=POSITIVE, help="stop after this many real seconds")
    play.add_argument(
        "--rate",
        type=POSITIVE,
        default=DEFAULT_RATE,
        help="base orders per simulated second over all tenants, outside rushes "
        f"(default {DEFAULT_RATE:g})",
    )
    play.add_argument(
        "--speed",
        type=NON_NEGATIVE,
        default=1.0,
        help="simulated seconds per real second until caught up with the wall clock (0: no pacing)",
    )
    play.add_argument(
        "--history",
        type=NON_NEGATIVE,
        metavar="SECONDS",
        help="start the simulated clock this long ago (default 3600 when --speed is 0 or "
        "above 1, else 0)",
    )
    play.add_argument("--seed", type=int, help="reproducible traffic (default: a random seed)")
    play.add_argument(
        "--tenants", type=tenant_list, default="NYC,LDN,SYD", help="comma-separated tenant ids"
    )
    play.add_argument(
        "--rush-every",
        type=POSITIVE,
        default=1200.0,
        metavar="SECONDS",
        help="a rush every this many simulated seconds, the first when the player starts "
        "(default 1200)",
    )
    play.add_argument(
        "--rush-length",
        type=NON_NEGATIVE,
        default=300.0,
        metavar="SECONDS",
        help="each rush lasts this long, at most --rush-every (default 300)",
    )
    play.add_argument(
        "--rush-factor",
        type=AT_LEAST_ONE,
        default=5.0,
        metavar="X",
        help="arrivals in a rush, times --rate (default 5; 1: steady traffic)",
    )
    play.add_argument(
        "--baristas",
        type=POSITIVE_INT,
        metavar="N",
        help="baristas at every tenant's bar (default: 2 to 4 per tenant, from --seed)",
    )

    replay = commands.add_parser(
        "replay",
        help="offline: final windows of recorded events (--estimates: the estimate's backtest)",
    )
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE")
    replay.add_argument(
        "--estimates",
        action="store_true",
        help="instead: the estimate's backtest, every WaitEstimate detail, as JSON Lines",
    )

    schema = commands.add_parser(
        "schema", help="write JSON Schemas and the AsyncAPI document of the events"
    )
    schema.add_argument("--out", type=Path, default=Path("docs/events"), help="output folder")

    if emulator_available():  # the image installs no emulator, so it offers no demo
        demo = commands.add_parser(
            "demo", help="everything on an embedded emulator, live averages and estimates"
        )
        demo.add_argument(
            "--duration", type=POSITIVE, help="stop by itself after this many seconds"
        )
        demo.add_argument(
            "--rate",
            type=POSITIVE,
            default=DEFAULT_RATE,
            help="base orders per simulated second over all tenants",
        )
        demo.add_argument(
            "--speed", type=POSITIVE, default=20.0, help="simulated seconds per real second"
        )
        demo.add_argument("--seed", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    _raise_on_stop_signals()
    command = ""
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        return _main(args)
    except BaseException as exc:
        stop = find_error(exc, StopRequested)
        if stop is None:
            raise
        return _stopped(command, stop.signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def conflicting_options(args: argparse.Namespace) -> str | None:
    """What is wrong with options that are each valid alone, or None."""
    if args.command == "play" and args.rush_length > args.rush_every:
        return (
            f"argument --rush-length: must be at most --rush-every ({args.rush_every:g}), "
            f"not {args.rush_length:g}"
        )
    return None


def tenant_options(settings: Settings) -> EstimateOptions:
    """The tenants' and their estimator's options; an unknown estimator is an invalid
    setting, refused as one before any command runs."""
    try:
        return estimate_options(settings.max_wait_seconds, settings.estimator)
    except UnknownEstimatorError as exc:
        raise SettingsError(
            f"invalid setting WAIT_TIMES_ESTIMATOR={settings.estimator!r}: {exc}"
        ) from None


def _main(args: argparse.Namespace) -> int:
    conflict = conflicting_options(args)
    if conflict is not None:  # worded and returned as argparse refuses a single option
        print(
            f"wait-times {args.command}: {conflict} (see wait-times {args.command} --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        settings = load_settings()
        tenant_options(settings)
    except ConfigurationError as exc:
        print(f"wait-times: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "demo":
        configure_logging(
            "console" if settings.log_format == "auto" else settings.log_format, "warning"
        )
    else:
        configure_logging(settings.log_format, settings.log_level)
    try:
        code: int = anyio.run(_dispatch, args, settings)
    except Exception as exc:  # what an operator can act on is one line; bugs re-raise
        usage = find_error(exc, UsageError)
        if usage is not None:
            print(f"wait-times {args.command}: {_one_line(usage)}", file=sys.stderr)
            return EXIT_USAGE
        error = _operator_error(exc)
        if error is None:
            raise
        said = _one_line(error)
        if isinstance(error, DependencyError):
            said = f"AWS call failed: {said}"
        print(f"wait-times: {said}", file=sys.stderr)
        return exit_code(error)
    return code


def exit_code(error: WaitTimesError) -> int:
    """The documented exit code of an error that stops a command."""
    return next((code for kind, code in EXIT_CODES if isinstance(error, kind)), 1)


def _operator_error(exc: BaseException) -> WaitTimesError | None:
    """The service's error inside ``exc`` (task groups wrap what they raise); a botocore
    error raised outside an adapter (client creation, provisioning) is translated."""
    found = find_error(exc, WaitTimesError)
    if found is not None or "botocore" not in sys.modules:
        return found  # replay and schema never load botocore, and need no translation
    from service.aws.errors import translate_raised  # noqa: PLC0415

    return translate_raised(exc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _raise_on_stop_signals() -> None:
    """Until a command listens for SIGTERM/SIGINT itself, either one raises StopRequested.

    Python leaves SIGTERM at its default, which a container's PID 1 ignores: without this
    handler ``docker stop`` would wait its grace period and kill the process.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise StopRequested(signum)


def _stopped(command: str, signum: int) -> int:
    """The exit code of a command stopped by a signal, with a line if it did not finish."""
    name = signal.Signals(signum).name
    if command in STOP_IS_SUCCESS:
        log.info("stopped", command=command, signal=name)
        return EXIT_OK
    advice = "; run it again to finish the stack" if command == "provision" else ""
    prefix = f"wait-times {command}" if command else "wait-times"
    print(f"{prefix}: stopped by {name} before it finished{advice}", file=sys.stderr)
    return 128 + signum


async def _until_stopped(work: Callable[[], Awaitable[int]]) -> int:
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
        _raise_on_stop_signals()  # asyncio put the defaults back; PID 1 ignores SIGTERM's
    if stopped_by:
        raise StopRequested(stopped_by[0])
    return code


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "replay":
        return _replay(args.files, settings, estimates=args.estimates)
    if args.command == "schema":
        from service.tools.catalog.generator import write_catalog  # noqa: PLC0415

        for path in write_catalog(args.out, settings):
            print(path)
        return 0
    if args.command == "demo":
        from service.tools.demo import run_demo  # noqa: PLC0415

        return await run_demo(
            settings, duration=args.duration, rate=args.rate, speed=args.speed, seed=args.seed
        )
    check_region(settings)
    if args.command == "board":
        from service.board.app import run_board  # noqa: PLC0415 - keep replay free of aiohttp

        return await _until_stopped(lambda: run_board(settings, port=args.port))
    if args.command == "run":
        from service.app import run_worker  # noqa: PLC0415 - keep replay free of AWS imports

        return await run_worker(settings, burst=args.burst)
    recording = _read_recording(args.file) if args.command == "play" and args.file else None
    return await _until_stopped(lambda: _aws_command(args, settings, recording))


async def _aws_command(
    args: argparse.Namespace, settings: Settings, recording: list[dict[str, Any]] | None
) -> int:
    from service.aws.clients import open_clients  # noqa: PLC0415

    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        if args.command == "provision":
            from service.aws.provision import provision  # noqa: PLC0415

            await provision(settings, clients, capture_queue=args.capture_queue)
            return 0
        return await _play(args, settings, clients.events, recording)


def _read_recording(path: Path) -> list[dict[str, Any]]:
    """A recording's envelopes, read before anything is sent; bad files are UsageErrors."""
    from service.tools.replay import read_events  # noqa: PLC0415

    try:
        return [e for e in read_events(path) if isinstance(e, dict)]
    except OSError as exc:
        raise UsageError(f"cannot read --file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def _play(
    args: argparse.Namespace,
    settings: Settings,
    events: Any,
    recording: list[dict[str, Any]] | None,
) -> int:
    from service.tools.player import play_generated, play_recording  # noqa: PLC0415

    if recording is not None:
        await play_recording(events, settings.event_bus, recording, speed=args.speed)
        return 0
    await play_generated(events, settings.event_bus, **play_options(args))
    return 0


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


def _replay(files: Sequence[Path], settings: Settings, *, estimates: bool = False) -> int:
    from itertools import chain  # noqa: PLC0415

    from service.tools.replay import ReplayResult, read_events, replay  # noqa: PLC0415

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    events = chain.from_iterable(read_events(f) for f in files)
    try:
        if estimates:
            result = ReplayResult({})
            _write_estimates(events, settings, result)
        else:
            result = replay(
                events,
                window_size=settings.window_size,
                max_wait_seconds=settings.max_wait_seconds,
                ttl_seconds=settings.pending_ttl_seconds,
                max_clock_skew_seconds=settings.max_clock_skew_seconds,
                source=settings.source,
                completion=settings.completion_event,
            )
            json.dump(result.as_rows(), sys.stdout, ensure_ascii=False, indent=2)
            sys.stdout.write("\n")
    except BrokenPipeError:
        # The reader went away (``| head``): not an error of the files. Quiet, as a pipe is.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    unprocessable = ", ".join(f"{reason}: {n}" for reason, n in sorted(result.poison.items()))
    print(
        f"replayed {result.events} events: {result.ignored} ignored, "
        f"{sum(result.poison.values())} unprocessable"
        f"{f' ({unprocessable})' if unprocessable else ''}, {result.anomalies} anomalies, "
        f"{result.late_halves} halves after their order expired",
        file=sys.stderr,
    )
    return 0


def _write_estimates(events: Iterable[Any], settings: Settings, result: ReplayResult) -> None:
    """``replay --estimates``: each WaitEstimate detail as one JSON line on stdout."""
    from service.core.events import estimate_json  # noqa: PLC0415
    from service.tools.replay import estimate_changes  # noqa: PLC0415

    out = sys.stdout.buffer
    sys.stdout.flush()
    for found in estimate_changes(
        events,
        max_wait_seconds=settings.max_wait_seconds,
        ttl_seconds=settings.pending_ttl_seconds,
        max_clock_skew_seconds=settings.max_clock_skew_seconds,
        source=settings.source,
        completion=settings.completion_event,
        result=result,
        estimates=tenant_options(settings),
    ):
        out.write(estimate_json(found.estimate, found.version) + b"\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
