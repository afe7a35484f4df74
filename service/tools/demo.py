"""``wait-times demo``: emulator, provisioning, worker and player in one process, live averages."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio
import structlog

from service.app import run_worker
from service.aws.clients import AwsClients, open_clients
from service.aws.provision import provision
from service.metrics import Health, Metrics
from service.settings import Settings
from service.tools.emulator import Emulator
from service.tools.player import play_generated
from service.worker import Worker

log = structlog.get_logger(__name__)

CAPTURE_QUEUE = "wait-times-demo-averages"


class Board:
    """The latest average per key, by highest version (as any consumer should keep them)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.received = 0

    def add(self, detail: dict[str, Any]) -> None:
        """Keep an average unless a newer version of its key is already known."""
        self.received += 1
        key = (detail["eventId"], detail["drink"])
        current = self.rows.get(key)
        if current is None or detail["version"] > current["version"]:
            self.rows[key] = detail

    def render(self, header: str, footer: str) -> str:
        """A plain-text table."""
        lines = [
            header,
            "",
            f"{'tenant':<8}{'drink':<16}{'avg wait':>10}{'samples':>9}{'version':>9}",
        ]
        for (tenant, drink), row in sorted(self.rows.items()):
            duration = row["duration"]
            shown = "-" if duration is None else f"{int(duration) // 60}m {duration % 60:04.1f}s"
            lines.append(f"{tenant:<8}{drink:<16}{shown:>10}{row['samples']:>9}{row['version']:>9}")
        if not self.rows:
            lines.append("(waiting for the first completed orders...)")
        lines += ["", footer]
        return "\n".join(lines)


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

    def count_played(self, events: int) -> None:
        """The player's progress callback."""
        self.played += events

    async def read_averages(self) -> None:
        """Take the averages the worker put on the bus from the capture queue."""
        sqs = self.clients.sqs
        while True:
            response = await sqs.receive_message(
                QueueUrl=self.capture_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages", [])
            for message in messages:
                self.board.add(json.loads(message["Body"])["detail"])
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
            f"wait-times demo: emulator {self.emulator_url}, metrics "
            f"http://localhost:{self.health.port}/metrics, traffic x{self.speed:g} real time"
        )
        processed = int(self.metrics.value("wait_times_messages_processed_total"))
        elapsed = int(anyio.current_time() - self.started)
        ending = "Ctrl-C to stop" if self.duration is None else f"stops after {self.duration:g}s"
        footer = (
            f"events played: {self.played}   order events processed: {processed}   "
            f"averages received: {self.board.received}   elapsed: {elapsed}s\n{ending}"
        )
        return self.board.render(header, footer)

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
        settings = settings.model_copy(
            update={"endpoint_url": emulator.url, "receive_wait_seconds": 1}
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
                group.start_soon(demo.read_averages)
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
                "final averages (highest version per tenant and drink):", ""
            )
            sys.stdout.write(summary + f"events played: {demo.played}\n")
    return 0


async def _stop_after(demo: Demo, player: anyio.CancelScope, worker: Worker) -> None:
    await demo.wait_for_stop()
    player.cancel()
    worker.stop()
