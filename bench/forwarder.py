"""A do-nothing forwarder: the CPU baseline of ``bench throughput``.

Run: ``python -m bench.forwarder`` with the worker's environment (``WAIT_TIMES_*``, the
endpoints). It drains the worker's queue as ``wait-times run --burst`` does, with the
same clients and the same SQS adapter (``SqsQueue``: receives of ten, one
DeleteMessageBatch each), and answers each receive with one PutEvents of its messages'
details (a source no rule routes, so nothing comes back). No pairing, no DynamoDB, no
estimate: what any consumer that answers on the bus pays in CPU for the same messages,
so the worker's own share is the difference. It logs the worker's ``worker_started`` and
``worker_stopped`` events (role ``forwarder``), so the bench times both alike.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import anyio
import structlog

from service.aws.clients import open_clients
from service.aws.queue import SqsQueue
from service.logs import configure_logging
from service.settings import Settings

log = structlog.get_logger(__name__)
SOURCE = "bench.forwarder"
DETAIL_TYPE = "Bench.Forwarded"


def entries(bus: str, bodies: list[str]) -> list[Any]:
    """One PutEvents entry a message: its envelope's detail, forwarded as it is."""
    return [
        {
            "EventBusName": bus,
            "Source": SOURCE,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(json.loads(body).get("detail", {})),
        }
        for body in bodies
    ]


async def forward(settings: Settings) -> int:
    """Drain the queue, forwarding every message; how many were forwarded."""
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        url = (await clients.sqs.get_queue_url(QueueName=settings.queue_name))["QueueUrl"]
        queue = SqsQueue(
            clients.sqs,
            url,
            visibility_timeout=settings.visibility_timeout_seconds,
            wait_seconds=1,
        )
        log.info("worker_started", role="forwarder")
        forwarded = 0
        while True:
            messages = await queue.receive()
            if not messages:
                if await queue.is_drained():
                    break
                continue
            await clients.events.put_events(
                Entries=entries(settings.event_bus, [m.body for m in messages])
            )
            await queue.delete(messages)
            forwarded += len(messages)
        log.info("worker_stopped", role="forwarder", forwarded=forwarded)
        return forwarded


def main() -> int:
    settings = Settings()
    configure_logging("json", settings.log_level)
    anyio.run(forward, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
