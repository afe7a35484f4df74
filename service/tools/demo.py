"""``wait-times demo``: emulator, provisioning, worker, player and the wait board in one
process, live averages and estimates (in the terminal, and on the board's web page).

The screen is ``render_table``, a pure function of the latest average per (tenant, drink)
and the latest estimate per tenant, which ``Board`` keeps from the capture queue's
envelopes by highest version, as any consumer of the bus should.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import unicodedata
from collections.abc import Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import Final

import anyio
import structlog

from service.app import run_worker
from service.aws.clients import AwsClients, open_clients
from service.aws.provision import provision
from service.board.app import run_board
from service.core.published import (
    AVERAGE_DETAIL_TYPE,
    ESTIMATE_DETAIL_TYPE,
    DrinkAverageTime,
    WaitEstimate,
)
from service.metrics import Metrics
from service.readiness import Health
from service.settings import Settings
from service.tools.emulator import Emulator
from service.tools.player import play_generated
from service.worker import Worker

log = structlog.get_logger(__name__)

CAPTURE_QUEUE = "wait-times-demo-averages"

# The table's columns (terminal cells); a row is 90 wide, so it reads in 100 columns.
TENANT_WIDTH: Final = 14
DRINK_WIDTH: Final = 22
PENDING: Final = "pending"  # published nothing yet for this cell
NO_DRINK: Final = "(no drink yet)"  # a tenant whose estimate has no drink and no average
LEGEND: Final = (
    f"{PENDING}: not published yet (a tenant's estimates start at 5 counted orders); "
    "ahead: its open orders"
)


class Board:
    """The latest average per (tenant, drink) and estimate per tenant, by highest version
    (as any consumer should keep them), from the capture queue's envelopes."""

    def __init__(self) -> None:
        self.averages: dict[tuple[str, str], DrinkAverageTime] = {}
        self.estimates: dict[str, WaitEstimate] = {}
        self.received = 0  # averages
        self.estimates_received = 0
        self.unreadable = 0  # messages neither an average nor an estimate

    def take(self, body: str | bytes) -> None:
        """One capture-queue message body, an EventBridge envelope: an average or an estimate
        is kept (unless a newer version is known), anything else only counted. Never raises:
        the names in it come from producers, the demo shows what it can."""
        try:
            envelope = json.loads(body)
            detail_type, detail = envelope["detail-type"], envelope["detail"]
            if detail_type == AVERAGE_DETAIL_TYPE:
                self.add_average(DrinkAverageTime.model_validate(detail))
                return
            if detail_type == ESTIMATE_DETAIL_TYPE:
                self.add_estimate(WaitEstimate.model_validate(detail))
                return
        except (ValueError, KeyError, TypeError):  # pydantic's ValidationError is a ValueError
            pass
        self.unreadable += 1

    def add_average(self, average: DrinkAverageTime) -> None:
        """Keep an average unless a newer version of its key is already known."""
        self.received += 1
        key = (average.eventId, average.drink)
        current = self.averages.get(key)
        if current is None or average.version > current.version:
            self.averages[key] = average

    def add_estimate(self, estimate: WaitEstimate) -> None:
        """Keep an estimate, whole, unless a newer version of its tenant's is already known."""
        self.estimates_received += 1
        current = self.estimates.get(estimate.eventId)
        if current is None or estimate.version > current.version:
            self.estimates[estimate.eventId] = estimate

    def render(self, header: str, footer: str) -> str:
        """The table between a header and a footer."""
        return render_table(self.averages, self.estimates, header, footer)


def render_table(
    averages: Mapping[tuple[str, str], DrinkAverageTime],
    estimates: Mapping[str, WaitEstimate],
    header: str,
    footer: str,
) -> str:
    """A plain-text table: per (tenant, drink) the average beside the estimate, its p90 and
    the tenant's open orders; ``PENDING`` where one of them has not been published yet.

    Names are shown as a terminal can show them safely: control characters replaced, long
    names cut with an ellipsis, padded by their width in terminal cells.
    """
    lines = [
        header,
        "",
        _row("tenant", "drink", "avg wait", "samples", "version", "estimate", "p90", "ahead"),
    ]
    keys = set(averages)
    for tenant, known in estimates.items():
        keys.update((tenant, drink) for drink in known.drinks)
    # A tenant known only by its open orders (no drink yet) still gets its line.
    tenants = {tenant for tenant, _ in keys}
    rows: list[tuple[str, str | None]] = [
        *keys,
        *((t, None) for t in estimates if t not in tenants),
    ]
    for tenant, drink in sorted(rows, key=lambda row: (row[0], row[1] or "")):
        average = None if drink is None else averages.get((tenant, drink))
        estimate = estimates.get(tenant)
        wait = None if estimate is None or drink is None else estimate.drinks.get(drink)
        lines.append(
            _row(
                _name(tenant),
                NO_DRINK if drink is None else _name(drink),
                PENDING if average is None else _minutes(average.duration, decimals=True),
                "-" if average is None else str(average.samples),
                "-" if average is None else str(average.version),
                PENDING if wait is None else _minutes(wait.estimate),
                "-" if wait is None else _minutes(wait.p90),
                "-" if estimate is None else str(estimate.openOrders),
            )
        )
    if rows:
        lines.append(LEGEND)
    else:
        lines.append("(waiting for the first orders...)")
    lines += ["", footer]
    return "\n".join(lines)


def _row(
    tenant: str,
    drink: str,
    wait: str,
    samples: str,
    version: str,
    estimate: str,
    p90: str,
    ahead: str,
) -> str:
    return (
        f"{fit(tenant, TENANT_WIDTH)} {fit(drink, DRINK_WIDTH)} {wait:>10} {samples:>7} "
        f"{version:>7} {estimate:>9} {p90:>9} {ahead:>5}"
    )


def _name(name: str) -> str:
    """A tenant or drink as shown: the 2021 shape's empty tenant as ``""``."""
    return name or '""'


def _minutes(seconds: float, *, decimals: bool = False) -> str:
    """``6m 52s`` (an estimate: whole seconds), ``0m 24.0s`` (an average)."""
    if decimals:
        return f"{int(seconds) // 60}m {seconds % 60:04.1f}s"
    whole = round(seconds)
    return f"{whole // 60}m {whole % 60:02d}s"


def cell_width(text: str) -> int:
    """How many terminal cells ``text`` takes (wide East Asian characters two, combining
    marks none): enough for names, without a terminal database."""
    return sum(_char_width(ch) for ch in text)


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def printable(text: str) -> str:
    """``text`` with nothing that could move the cursor or reorder the line: whitespace
    controls become spaces, format characters (bidi overrides, zero-width ones) go, other
    control, surrogate, private-use and unassigned characters become U+FFFD."""
    shown = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch.isspace():
            shown.append(" ")
        elif category == "Cf":
            continue
        elif category[0] == "C":
            shown.append("\ufffd")
        else:
            shown.append(ch)
    return "".join(shown)


def fit(text: str, width: int) -> str:
    """``text`` made printable and left-aligned in exactly ``width`` terminal cells, cut
    with an ellipsis when it is wider."""
    text = printable(text)
    if cell_width(text) > width:
        kept, used = [], 0
        for ch in text:
            w = _char_width(ch)
            if used + w > width - 1:
                break
            kept.append(ch)
            used += w
        text = "".join(kept) + "\u2026"
    return text + " " * (width - cell_width(text))


class Demo:
    """The demo's parts around one running worker: the player, the board, the screen."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        capture_url: str,
        *,
        emulator_url: str,
        duration: float | None,
        speed: float,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.capture_url = capture_url
        self.emulator_url = emulator_url
        self.duration = duration
        self.speed = speed
        self.board = Board()
        self.played = 0
        self.metrics = Metrics(settings.max_metric_series)
        self.health = Health(self.metrics)
        self.started = anyio.current_time()
        self.board_url = ""  # the web board's, once it listens

    def count_played(self, events: int) -> None:
        """The player's progress callback."""
        self.played += events

    async def read_published(self) -> None:
        """Take the averages and estimates the worker put on the bus from the capture queue."""
        sqs = self.clients.sqs
        while True:
            response = await sqs.receive_message(
                QueueUrl=self.capture_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages", [])
            for message in messages:
                self.board.take(message["Body"])
            if messages:
                await sqs.delete_message_batch(
                    QueueUrl=self.capture_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )

    def frame(self) -> str:
        """What the screen shows now."""
        header = (
            f"wait-times demo: traffic x{self.speed:g} real time\n"
            f"emulator {self.emulator_url}   metrics http://localhost:{self.health.port}/metrics\n"
            f"board {self.board_url or '(starting)'}"
        )
        processed = int(self.metrics.value("wait_times_messages_processed_total"))
        elapsed = int(anyio.current_time() - self.started)
        ending = "Ctrl-C to stop" if self.duration is None else f"stops after {self.duration:g}s"
        board = self.board
        unreadable = f"   unreadable: {board.unreadable}" if board.unreadable else ""
        footer = (
            f"events played: {self.played}   order events processed: {processed}   "
            f"elapsed: {elapsed}s\n"
            f"averages received: {board.received}   estimates received: "
            f"{board.estimates_received}{unreadable}\n{ending}"
        )
        return board.render(header, footer)

    async def show(self) -> None:
        """Redraw the board every second in a terminal, every 5 s into a file or pipe."""
        interactive = sys.stdout.isatty()
        while True:
            text = self.frame()
            sys.stdout.write(("\x1b[H\x1b[2J" + text + "\n") if interactive else text + "\n\n")
            sys.stdout.flush()
            await anyio.sleep(1 if interactive else 5)

    async def wait_for_stop(self) -> None:
        """Until Ctrl-C or SIGTERM, or ``duration``."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            with anyio.move_on_after(math.inf if self.duration is None else self.duration):
                async for _ in signals:
                    break
        sys.stdout.write("\nstopping: draining the worker...\n")


async def run_demo(
    settings: Settings, *, duration: float | None, rate: float, speed: float, seed: int
) -> int:
    """Run everything until Ctrl-C (or ``duration``), then shut down cleanly."""
    # The emulator accepts any credentials; a newcomer's machine may have none at all.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    with Emulator() as emulator:
        # The board's own queue too, and its page on this machine only.
        settings = settings.model_copy(
            update={
                "endpoint_url": emulator.url,
                "receive_wait_seconds": 1,
                "board_enabled": True,
                "board_host": "127.0.0.1",
            }
        )
        async with AsyncExitStack() as stack:
            clients = await open_clients(settings, stack)
            provisioned = await provision(settings, clients, capture_queue=CAPTURE_QUEUE)
            demo = Demo(
                settings,
                clients,
                str(provisioned.capture_queue_url),
                emulator_url=emulator.url,
                duration=duration,
                speed=speed,
            )
            async with anyio.create_task_group() as group:
                worker: Worker = await group.start(
                    partial(run_worker, settings, install_signals=False, health=demo.health)
                )
                port = await group.start(run_board, settings)
                demo.board_url = f"http://127.0.0.1:{port}/"
                group.start_soon(demo.read_published)
                group.start_soon(demo.show)
                with anyio.CancelScope() as player:
                    group.start_soon(_stop_after, demo, player, worker)
                    await play_generated(
                        clients.events,
                        settings.event_bus,
                        orders=None,
                        duration=None,
                        rate=rate,
                        speed=speed,
                        seed=seed,
                        progress=demo.count_played,
                    )
                # The worker returns once drained; then the display tasks are cancelled.
                await worker.finished.wait()
                group.cancel_scope.cancel()
            summary = demo.board.render(
                "final averages and estimates (the highest version of each):", ""
            )
            sys.stdout.write(summary + f"events played: {demo.played}\n")
    return 0


async def _stop_after(demo: Demo, player: anyio.CancelScope, worker: Worker) -> None:
    await demo.wait_for_stop()
    player.cancel()
    worker.stop()
