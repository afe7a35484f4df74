import json

import anyio

from service.app import run_worker
from service.player import play_generated
from tests.conftest import Aws


async def test_peek(aws: Aws) -> None:
    await play_generated(
        aws.clients.events,
        aws.settings.event_bus,
        orders=30,
        duration=None,
        rate=5,
        speed=0,
        seed=1,
    )
    with anyio.fail_after(120):
        await run_worker(aws.settings, burst=True, install_signals=False)
    bodies = await aws.drain_queue(aws.resources.capture_queue_url)
    print(len(bodies))
    print(json.dumps(bodies[0]))
    print(sorted({b["detail"]["duration"] is None for b in bodies}))
