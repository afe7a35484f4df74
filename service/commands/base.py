"""What a command is: its name, help, options and handler, registered in ``service.cli``."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.core.estimators.base import EstimateOptions
from service.core.estimators.registry import UnknownEstimatorError, estimate_options
from service.errors import SettingsError
from service.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], Awaitable[int]]


class UsageError(Exception):
    """Bad input to a command (a file it cannot read, ...): one line, exit 2."""


def tenant_options(settings: Settings) -> EstimateOptions:
    """The tenants' and their estimator's options; an unknown estimator is an invalid
    setting, refused as one before any command runs."""
    try:
        return estimate_options(settings.max_wait_seconds, settings.estimator)
    except UnknownEstimatorError as exc:
        raise SettingsError(
            f"invalid setting WAIT_TIMES_ESTIMATOR={settings.estimator!r}: {exc}"
        ) from None


def no_options(_parser: argparse.ArgumentParser) -> None:
    """A command without options of its own."""


def no_conflict(_args: argparse.Namespace) -> str | None:
    """A command whose options are never in conflict."""
    return None


@dataclass(frozen=True, slots=True)
class Command:
    """One command of ``wait-times``: what ``--help`` says of it, the options it declares,
    the handler that runs it (exit code out), and how it ends.

    ``conflict`` words what is wrong with options valid alone (None: nothing), refused as
    argparse refuses one option. ``calls_aws``: the region is checked before the handler
    runs. ``stop_is_success``: meant to run until stopped, so SIGTERM or SIGINT exits 0
    (else 128 + the signal's number, with ``stop_advice`` after the line that says so).
    ``quiet``: warnings only, readable unless JSON is asked for (the demo owns the
    terminal). ``needs_emulator``: offered only where the emulator (moto) is installed.
    """

    name: str
    help: str
    handler: Handler
    add_options: Callable[[argparse.ArgumentParser], None] = no_options
    description: str | None = None
    conflict: Callable[[argparse.Namespace], str | None] = no_conflict
    calls_aws: bool = False
    stop_is_success: bool = False
    stop_advice: str = ""
    quiet: bool = False
    needs_emulator: bool = False
