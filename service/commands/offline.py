"""The commands that call no AWS: ``replay`` (both modes) and ``schema``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.commands.base import Command, UsageError, tenant_options
from service.settings import Settings

if TYPE_CHECKING:
    from service.tools.replay import ReplayResult


def replay_options(settings: Settings) -> dict[str, Any]:
    """The settings both replay modes read, as their keyword arguments."""
    return {
        "max_wait_seconds": settings.max_wait_seconds,
        "ttl_seconds": settings.pending_ttl_seconds,
        "max_clock_skew_seconds": settings.max_clock_skew_seconds,
        "source": settings.source,
        "completion": settings.completion_event,
    }


async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    return replay_files(args.files, settings, estimates=args.estimates)


def replay_files(files: Sequence[Path], settings: Settings, *, estimates: bool = False) -> int:
    """``replay``: the final windows as JSON on stdout (``--estimates``: every estimate, as
    JSON Lines), the summary line on stderr."""
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
            result = replay(events, window_size=settings.window_size, **replay_options(settings))
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
    _summarize(result)
    return 0


def _summarize(result: ReplayResult) -> None:
    unprocessable = ", ".join(f"{reason}: {n}" for reason, n in sorted(result.poison.items()))
    print(
        f"replayed {result.events} events: {result.ignored} ignored, "
        f"{sum(result.poison.values())} unprocessable"
        f"{f' ({unprocessable})' if unprocessable else ''}, {result.anomalies} anomalies, "
        f"{result.late_halves} halves after their order expired",
        file=sys.stderr,
    )


def _write_estimates(events: Iterable[Any], settings: Settings, result: ReplayResult) -> None:
    """``replay --estimates``: each WaitEstimate detail as one JSON line on stdout."""
    from service.core.published import estimate_json  # noqa: PLC0415
    from service.tools.replay import estimate_changes  # noqa: PLC0415

    out = sys.stdout.buffer
    sys.stdout.flush()
    for found in estimate_changes(
        events, result=result, estimates=tenant_options(settings), **replay_options(settings)
    ):
        out.write(estimate_json(found.estimate, found.version) + b"\n")
    out.flush()


def _replay_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--estimates",
        action="store_true",
        help="instead: the estimate's backtest, every WaitEstimate detail, as JSON Lines",
    )


REPLAY = Command(
    "replay",
    help="offline: final windows of recorded events (--estimates: the estimate's backtest)",
    add_options=_replay_options,
    handler=_replay,
)


async def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from service.tools.catalog.generator import write_catalog  # noqa: PLC0415

    for path in write_catalog(args.out, settings):
        print(path)
    return 0


def _schema_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("docs/events"), help="output folder")


SCHEMA = Command(
    "schema",
    help="write JSON Schemas and the AsyncAPI document of the events",
    add_options=_schema_options,
    handler=_schema,
)
