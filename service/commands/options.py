"""Option types (a refused value is one line) and the options commands share, declared once."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


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


# --- the traffic options, shared by ``play`` and ``demo`` ---------------------------------


def add_duration(target: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    """``--duration``: stop after this many real seconds (``play`` puts it in a group)."""
    target.add_argument("--duration", type=POSITIVE, help="stop after this many real seconds")


def add_traffic(parser: argparse.ArgumentParser, *, speed: float, unpaced: bool) -> None:
    """``--rate`` and ``--speed`` with this command's default speed; ``unpaced``: ``--speed 0``
    turns pacing off (``play``; the demo needs pacing)."""
    parser.add_argument(
        "--rate",
        type=POSITIVE,
        default=DEFAULT_RATE,
        help="base orders per simulated second over all tenants, outside rushes "
        f"(default {DEFAULT_RATE:g})",
    )
    parser.add_argument(
        "--speed",
        type=NON_NEGATIVE if unpaced else POSITIVE,
        default=speed,
        help="simulated seconds per real second until caught up with the wall clock "
        f"(default {speed:g}{'; 0: no pacing' if unpaced else ''})",
    )


def add_seed(parser: argparse.ArgumentParser, *, default: int | None) -> None:
    """``--seed``: reproducible traffic; no default, a random seed."""
    shown = "a random seed" if default is None else default
    parser.add_argument(
        "--seed", type=int, default=default, help=f"reproducible traffic (default: {shown})"
    )
