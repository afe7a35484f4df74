"""``wait-times demo``: emulator, provisioning, worker and player in one process, live averages."""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import AsyncExitStack
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from service.app import run_worker
from service.aws.clients import open_clients
from service.aws.provision import provision
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
            board = Board()
            played = 0
            started = anyio.current_time()
            interactive = sys.stdout.isatty()
            worker_done = anyio.Event()

            async def worker_task(*, task_status: TaskStatus[Worker]) -> None:
                try:
                    await run_worker(settings, install_signals=False, task_status=task_status)
                finally:
                    worker_done.set()

            async with anyio.create_task_group() as group:
                worker: Worker = await group.start(worker_task)

                def count(events: int) -> None:
                    nonlocal played
                    played += events

                async def player() -> None:
                    await play_generated(
                        clients.events,
                        settings.event_bus,
                        orders=None,
                        duration=None,
                        rate=rate,
                        speed=speed,
                        seed=seed,
                        progress=count,
                    )

                capture_url = str(provisioned.capture_queue_url)

                async def reader() -> None:
                    while True:
                        response = await clients.sqs.receive_message(
                            QueueUrl=capture_url,
                            MaxNumberOfMessages=10,
                            WaitTimeSeconds=1,
                        )
                        messages = response.get("Messages", [])
                        for message in messages:
                            board.add(json.loads(message["Body"])["detail"])
                        if messages:
                            await clients.sqs.delete_message_batch(
                                QueueUrl=capture_url,
                                Entries=[
                                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                    for i, m in enumerate(messages)
                                ],
                            )

                async def screen() -> None:
                    header = (
                        f"wait-times demo: emulator {emulator.url}, metrics "
                        f"http://localhost:{worker.health.port}/metrics, "
                        f"traffic x{speed:g} real time"
                    )
                    while True:
                        elapsed = anyio.current_time() - started
                        processed = int(worker.metrics.messages_processed._value.get())
                        footer = (
                            f"events played: {played}   order events processed: {processed}   "
                            f"averages received: {board.received}   elapsed: {int(elapsed)}s\n"
                            + (
                                "Ctrl-C to stop"
                                if duration is None
                                else f"stops after {duration:g}s"
                            )
                        )
                        text = board.render(header, footer)
                        if interactive:
                            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
                        else:
                            sys.stdout.write(text + "\n\n")
                        sys.stdout.flush()
                        await anyio.sleep(1 if interactive else 5)

                async def stopper() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        if duration is None:
                            async for _ in signals:
                                break
                        else:
                            with anyio.move_on_after(duration):
                                async for _ in signals:
                                    break
                    sys.stdout.write("\nstopping: draining the worker...\n")
                    player_scope.cancel()
                    worker.stop()

                with anyio.CancelScope() as player_scope:
                    group.start_soon(stopper)
                    group.start_soon(reader)
                    group.start_soon(screen)
                    await player()
                # The worker returns once drained; then the display tasks are cancelled.
                await worker_done.wait()
                group.cancel_scope.cancel()
            summary = board.render("final averages (highest version per tenant and drink):", "")
            sys.stdout.write(summary + f"events played: {played}\n")
    return 0
