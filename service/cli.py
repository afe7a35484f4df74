"""The ``wait-times`` command line: run, board, provision, play, replay, schema, demo.

Every refusal is one line on stderr and an exit code of its own (the README's table):
a bad option, input file or setting 2, a missing queue or table 3, no credentials 4,
credentials AWS rejected 5, a permission AWS denied 6, AWS failing a one-shot command 7.
SIGTERM and SIGINT stop every command, as PID 1 in a container or not: ``run``, ``play``
``board`` and ``demo`` exit 0 on such a requested stop; the others exit 128 + the signal's number
(130, 143), since they did not finish.

This module is the entry point and the registry: ``COMMANDS`` holds each command with its
help, options and handler (``service.commands``); the parser is built from it and a parsed
command runs its own handler, so adding a command is one ``Command`` and one line here.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from importlib import metadata, util
from typing import NoReturn

import anyio
import structlog

from service.commands import aws, offline
from service.commands.base import Command, UsageError, tenant_options
from service.commands.options import add_duration, add_seed, add_traffic
from service.commands.stop import STOP_SIGNALS, StopRequested, raise_on_stop_signals
from service.errors import (
    EXIT_CODES,
    EXIT_OK,
    EXIT_USAGE,
    ConfigurationError,
    DependencyError,
    WaitTimesError,
    find_error,
)
from service.logs import configure_logging
from service.settings import Settings, check_region, load_settings

log = structlog.get_logger(__name__)


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


# The demo's handler stays here: the demo wires everything (worker, board, player), so it
# is the highest module but this one, and a module of its own between them would stand one
# floor above the layout's limit (tests/test_layout.py).
async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from service.tools.demo import run_demo  # noqa: PLC0415

    return await run_demo(
        settings, duration=args.duration, rate=args.rate, speed=args.speed, seed=args.seed
    )


def _demo_options(parser: argparse.ArgumentParser) -> None:
    add_duration(parser)
    add_traffic(parser, speed=20.0, unpaced=False)
    add_seed(parser, default=1)


DEMO = Command(
    "demo",
    help="everything on an embedded emulator, live averages and estimates",
    add_options=_demo_options,
    handler=_demo,
    stop_is_success=True,
    quiet=True,
    needs_emulator=True,  # the image installs no emulator, so it offers no demo
)

COMMANDS: tuple[Command, ...] = (
    aws.RUN,
    aws.BOARD,
    aws.PROVISION,
    aws.PLAY,
    offline.REPLAY,
    offline.SCHEMA,
    DEMO,
)
_BY_NAME = {command.name: command for command in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (settings come from the environment, not from flags)."""
    parser = Parser(
        prog="wait-times",
        description="Average wait per tenant and drink for Serverlesspresso. "
        "Settings: WAIT_TIMES_* and the standard AWS environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if command.needs_emulator and not emulator_available():
            continue
        options = commands.add_parser(
            command.name, help=command.help, description=command.description
        )
        command.add_options(options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    raise_on_stop_signals()
    command: Command | None = None
    try:
        args = build_parser().parse_args(argv)
        command = _BY_NAME[args.command]
        return _main(command, args)
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
    return _BY_NAME[args.command].conflict(args)


def _main(command: Command, args: argparse.Namespace) -> int:
    conflict = command.conflict(args)
    if conflict is not None:  # worded and returned as argparse refuses a single option
        print(
            f"wait-times {command.name}: {conflict} (see wait-times {command.name} --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        settings = load_settings()
        tenant_options(settings)
    except ConfigurationError as exc:
        print(f"wait-times: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command.quiet:
        configure_logging(
            "console" if settings.log_format == "auto" else settings.log_format, "warning"
        )
    else:
        configure_logging(settings.log_format, settings.log_level)
    try:
        code: int = anyio.run(_run, command, args, settings)
    except Exception as exc:  # what an operator can act on is one line; bugs re-raise
        usage = find_error(exc, UsageError)
        if usage is not None:
            print(f"wait-times {command.name}: {_one_line(usage)}", file=sys.stderr)
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


async def _run(command: Command, args: argparse.Namespace, settings: Settings) -> int:
    if command.calls_aws:
        check_region(settings)
    return await command.handler(args, settings)


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


def _stopped(command: Command | None, signum: int) -> int:
    """The exit code of a command stopped by a signal, with a line if it did not finish."""
    name = signal.Signals(signum).name
    if command is not None and command.stop_is_success:
        log.info("stopped", command=command.name, signal=name)
        return EXIT_OK
    advice = command.stop_advice if command is not None else ""
    prefix = f"wait-times {command.name}" if command is not None else "wait-times"
    print(f"{prefix}: stopped by {name} before it finished{advice}", file=sys.stderr)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
