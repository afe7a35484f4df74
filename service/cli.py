"""The ``wait-times`` command line: run, provision, play, replay, demo."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import structlog

from service.errors import ConfigurationError
from service.logs import configure_logging
from service.settings import Settings, load_settings

log = structlog.get_logger(__name__)

EXIT_USAGE = 2
EXIT_MISSING_RESOURCE = 3


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's), or "unknown" from a bare tree."""
    try:
        return metadata.version("wait-times")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (settings come from the environment, not from flags)."""
    parser = argparse.ArgumentParser(
        prog="wait-times",
        description="Average wait per tenant and drink for Serverlesspresso. "
        "Settings: WAIT_TIMES_* and the standard AWS environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the worker: consume the queue until SIGTERM")
    run.add_argument("--burst", action="store_true", help="stop once the queue is drained")

    provision = commands.add_parser("provision", help="create bus rule, queue, DLQ and table")
    provision.add_argument(
        "--capture-queue", metavar="NAME", help="also route DrinkAverageTime events to this queue"
    )

    play = commands.add_parser(
        "play", help="put realistic order traffic (or a recording) on the bus"
    )
    play.add_argument("--file", type=Path, help="replay this recording (JSON array or JSON Lines)")
    play.add_argument("--orders", type=int, help="number of orders to generate")
    play.add_argument("--duration", type=float, help="stop after this many real seconds")
    play.add_argument("--rate", type=float, default=0.5, help="orders per simulated second")
    play.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second (0: no pacing)"
    )
    play.add_argument("--seed", type=int, default=1)
    play.add_argument("--tenants", default="NYC,LDN,SYD", help="comma-separated tenant ids")

    replay = commands.add_parser("replay", help="offline: final windows of recorded events")
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE")

    schema = commands.add_parser(
        "schema", help="write JSON Schemas and the AsyncAPI document of the events"
    )
    schema.add_argument("--out", type=Path, default=Path("docs/events"), help="output folder")

    demo = commands.add_parser("demo", help="everything on an embedded emulator, live averages")
    demo.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    demo.add_argument("--rate", type=float, default=0.25, help="orders per simulated second")
    demo.add_argument("--speed", type=float, default=20.0, help="simulated seconds per real second")
    demo.add_argument("--seed", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
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
    except (ConfigurationError, ExceptionGroup) as exc:
        problem = _configuration_error(exc)
        if problem is None:
            raise
        print(f"wait-times: {problem}", file=sys.stderr)
        return EXIT_MISSING_RESOURCE
    except KeyboardInterrupt:
        return 130
    return code


def _configuration_error(exc: BaseException) -> ConfigurationError | None:
    """The ConfigurationError inside ``exc`` (task groups wrap what they raise), if any."""
    if isinstance(exc, ConfigurationError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _configuration_error(inner)
            if found is not None:
                return found
    return None


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "run":
        from service.app import run_worker  # noqa: PLC0415 - keep replay free of AWS imports

        return await run_worker(settings, burst=args.burst)
    if args.command == "replay":
        return _replay(args.files, settings)
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
    from service.aws.clients import open_clients  # noqa: PLC0415

    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        if args.command == "provision":
            from service.aws.provision import provision  # noqa: PLC0415

            await provision(settings, clients, capture_queue=args.capture_queue)
            return 0
        return await _play(args, settings, clients.events)


async def _play(args: argparse.Namespace, settings: Settings, events: Any) -> int:
    from service.tools.player import play_generated, play_recording  # noqa: PLC0415
    from service.tools.replay import read_events  # noqa: PLC0415

    if args.file is not None:
        envelopes = [e for e in read_events(args.file) if isinstance(e, dict)]
        await play_recording(events, settings.event_bus, envelopes, speed=args.speed)
        return 0
    if args.orders is None and args.duration is None:
        print("wait-times play: give --orders, --duration or --file", file=sys.stderr)
        return EXIT_USAGE
    tenants = [t.strip() for t in args.tenants.split(",") if t.strip()]
    await play_generated(
        events,
        settings.event_bus,
        orders=args.orders,
        duration=args.duration,
        rate=args.rate,
        speed=args.speed,
        seed=args.seed,
        tenants=tenants,
    )
    return 0


def _replay(files: Sequence[Path], settings: Settings) -> int:
    from itertools import chain  # noqa: PLC0415

    from service.tools.replay import read_events, replay  # noqa: PLC0415

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"wait-times replay: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = replay(
            chain.from_iterable(read_events(f) for f in files),
            window_size=settings.window_size,
            max_wait_seconds=settings.max_wait_seconds,
            ttl_seconds=settings.pending_ttl_seconds,
            max_clock_skew_seconds=settings.max_clock_skew_seconds,
            source=settings.source,
            completion=settings.completion_event,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"wait-times replay: not JSON or JSON Lines: {exc}", file=sys.stderr)
        return EXIT_USAGE
    json.dump(result.as_rows(), sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    print(
        f"replayed {result.events} events: {result.ignored} ignored, "
        f"{sum(result.poison.values())} unprocessable {result.poison or ''}, "
        f"{result.anomalies} anomalies, {result.late_halves} halves after their order expired",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
