"""Events on the bus → rule → queue → worker ↔ table, averages back on the bus (real HTTP)."""

from __future__ import annotations

import json

import anyio
import pytest
from structlog.testing import capture_logs

from service.app import run_worker
from service.aws.provision import provision
from service.aws.queue import SqsQueue
from service.core.consumed import consumed_event_pattern
from service.metrics import Metrics
from service.ports import Message
from service.tools.player import play_recording
from service.tools.replay import read_events
from tests.envelopes import envelope
from tests.helpers import (
    RECORDING,
    Aws,
    as_envelopes,
    burst,
    expected_rows,
    generated,
    latest_by_key,
    put_planned,
    wait_until,
)

pytestmark = pytest.mark.integration


async def test_averages_come_back_on_the_bus_with_rising_versions(aws: Aws) -> None:
    base = 1_790_000_000
    envelopes = []
    for index, wait in enumerate([30, 60, 90]):
        order = f"order-{index}"
        at = base + index * 200
        source = aws.settings.source
        envelopes.append(envelope("submitted", order, at=at, source=source))
        envelopes.append(envelope("completed", order, at=at + wait, source=source))
    versions: list[int] = []
    durations: list[float] = []
    for pair_start in range(0, len(envelopes), 2):
        await play_recording(
            aws.clients.events,
            aws.settings.event_bus,
            envelopes[pair_start : pair_start + 2],
            speed=0,
        )
        await burst(aws.settings)
        published = await aws.published()
        assert len(published) == 1, published
        versions.append(published[0]["version"])
        durations.append(published[0]["duration"])
        assert published[0]["eventId"] == "NYC"
        assert published[0]["drink"] == "Latte"
        assert published[0]["window"] == 10
    assert durations == [30.0, 45.0, 60.0]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert await aws.stored_rows() == [
        {"eventId": "NYC", "drink": "Latte", "duration": 60.0, "samples": 3}
    ]


async def test_recorded_session_through_the_bus_matches_replay(aws: Aws) -> None:
    envelopes = list(read_events(RECORDING))
    await play_recording(aws.clients.events, aws.settings.event_bus, envelopes, speed=0)
    metrics = Metrics()
    await burst(aws.settings, metrics)
    expected = expected_rows(envelopes, aws.settings)
    assert expected, "the recording pairs some orders"
    assert await aws.stored_rows() == expected
    assert latest_by_key(await aws.published()) == expected
    # The rule only lets consumed detail-types through: 29 submissions, 16 completions,
    # 2 cancels. Delivery is at least once (moto's concurrent receives can even hand one
    # message to two receivers), so more than 47 receives is allowed, ignored ones are not.
    assert metrics.messages_received._value.get() >= 47
    assert metrics.messages_ignored._value.get() == 0
    assert metrics.messages_deleted._value.get() >= 47


async def test_generated_traffic_matches_replay_and_ignores_other_events(aws: Aws) -> None:
    events = generated(orders=120, seed=7)
    await put_planned(aws, events)
    await burst(aws.settings)
    expected = expected_rows(as_envelopes(events, aws.settings.source), aws.settings)
    assert len(expected) > 5
    assert await aws.stored_rows() == expected
    assert latest_by_key(await aws.published()) == expected


async def test_a_hard_killed_worker_and_a_new_one_give_the_same_windows(aws: Aws) -> None:
    settings = aws.settings.model_copy(update={"visibility_timeout_seconds": 5})
    events = generated(orders=150, seed=11)
    await put_planned(aws, events)
    metrics = Metrics()
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: run_worker(settings, install_signals=False, metrics=metrics))
        await wait_until(
            lambda: metrics.messages_processed._value.get() >= 60, 60, "60 processed messages"
        )
        group.cancel_scope.cancel()  # a crash: no drain, the flush in flight abandoned
    await burst(settings)
    expected = expected_rows(as_envelopes(events, settings.source), settings)
    assert await aws.stored_rows() == expected
    assert latest_by_key(await aws.published()) == expected


async def test_two_workers_on_one_queue_give_the_same_windows_as_one(aws: Aws) -> None:
    events = generated(orders=150, seed=5, tenants=("NYC",))
    await put_planned(aws, events)
    first, second = Metrics(), Metrics()
    async with anyio.create_task_group() as group:
        group.start_soon(burst, aws.settings, first)
        group.start_soon(burst, aws.settings, second)
    assert first.messages_received._value.get() > 0
    assert second.messages_received._value.get() > 0
    expected = expected_rows(as_envelopes(events, aws.settings.source), aws.settings)
    assert await aws.stored_rows() == expected
    assert latest_by_key(await aws.published()) == expected


async def test_conflicting_duplicates_through_the_bus_to_two_workers(aws: Aws) -> None:
    """Retried producers: an order submitted twice 20 s apart (the later delivered first),
    completed 60 s after the earlier; another completed twice; a third re-submitted for
    another drink; a fourth completed and then cancelled. Earliest wins, everywhere."""
    base = 1_790_000_000
    source = aws.settings.source
    envelopes = [
        envelope("submitted", "a", at=base + 20, source=source),  # the retry, delivered first
        envelope("submitted", "a", at=base, source=source),
        envelope("completed", "a", at=base + 60, source=source),
        envelope("submitted", "b", at=base + 100, source=source),
        envelope("completed", "b", at=base + 190, source=source),  # the retry of the one below
        envelope("completed", "b", at=base + 130, source=source),
        envelope("submitted", "c", at=base + 200, drink="Mocha", source=source),
        envelope("submitted", "c", at=base + 195, source=source),  # earlier: c is a Latte
        envelope("completed", "c", at=base + 240, source=source),
        envelope("submitted", "d", at=base + 300, source=source),
        envelope("completed", "d", at=base + 330, source=source),
        envelope("cancelled", "d", at=base + 331, source=source),
    ]
    await play_recording(aws.clients.events, aws.settings.event_bus, envelopes, speed=0)
    async with anyio.create_task_group() as group:
        group.start_soon(burst, aws.settings, Metrics())
        group.start_soon(burst, aws.settings, Metrics())
    # a waited 60 s, b 30 s, c 45 s (as a Latte); d was cancelled: it takes no slot.
    expected = [{"eventId": "NYC", "drink": "Latte", "duration": 45.0, "samples": 3}]
    assert expected_rows(envelopes, aws.settings) == expected
    assert expected_rows(envelopes[::-1], aws.settings) == expected
    assert await aws.stored_rows() == expected
    assert latest_by_key(await aws.published()) == expected


async def test_order_finished_as_the_completion_event(aws: Aws) -> None:
    """WAIT_TIMES_COMPLETION_EVENT=order-finished: provision brings the existing rule to the
    new pattern, and the worker ends waits with OrderProcessor.orderFinished (the barista's
    -COMPLETED is then ignored; a cancellation still excludes the order)."""
    settings = aws.settings.model_copy(update={"completion_event": "order-finished"})
    await provision(settings, aws.clients, capture_queue="capture")
    rule = await aws.clients.events.describe_rule(
        Name=settings.rule_name, EventBusName=settings.event_bus
    )
    assert json.loads(rule["EventPattern"]) == consumed_event_pattern(
        settings.source, "order-finished"
    )
    base = 1_790_000_000
    source = settings.source
    envelopes = [
        envelope("submitted", "a", at=base, source=source),
        envelope("completed", "a", at=base + 30, source=source),  # not the completion now
        envelope("finished", "a", at=base + 45, source=source),
        envelope("submitted", "b", at=base + 100, source=source),
        envelope("cancelled", "b", at=base + 120, source=source),
        envelope("finished", "b", at=base + 121, source=source),  # fires for cancelled too
    ]
    await play_recording(aws.clients.events, settings.event_bus, envelopes, speed=0)
    await burst(settings)
    expected = [{"eventId": "NYC", "drink": "Latte", "duration": 45.0, "samples": 1}]
    assert await aws.stored_rows() == expected
    assert latest_by_key(await aws.published()) == expected


POISON = [
    "not json",
    '{"detail-type": "OrderManager.WaitingCompletion", "source": ',
    "[1, 2, 3]",
    json.dumps(envelope("completed", None, at="2026-01-01T00:00:00Z")),  # no orderId
]


async def test_poison_messages_reach_the_dlq_and_good_ones_are_processed(aws: Aws) -> None:
    events = generated(orders=20, seed=3)
    envelopes = as_envelopes(events, aws.settings.source)
    sqs = aws.clients.sqs
    url = aws.resources.queue_url
    bodies = (
        [json.dumps(e) for e in envelopes[:5]] + POISON + [json.dumps(e) for e in envelopes[5:]]
    )
    for start in range(0, len(bodies), 10):
        await sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": body}
                for i, body in enumerate(bodies[start : start + 10])
            ],
        )
    metrics = Metrics()
    with capture_logs() as logs:
        await burst(aws.settings, metrics)
    dead = await aws.drain_queue(aws.resources.dlq_url)
    assert len(dead) == len(POISON)
    poison_logs = [entry for entry in logs if entry["event"] == "poison_message"]
    assert len(poison_logs) == len(POISON)  # once each, with its id and reason
    assert len({entry["message_id"] for entry in poison_logs}) == len(POISON)
    assert all(entry["log_level"] == "error" and entry["reason"] for entry in poison_logs)
    failed = {
        sample.labels["reason"]: sample.value
        for sample in next(iter(metrics.messages_failed.collect())).samples
        if sample.name.endswith("_total")
    }
    assert failed == {"not_json": 2, "not_an_envelope": 1, "missing_order_id": 1}
    assert await aws.stored_rows() == expected_rows(envelopes, aws.settings)


async def test_the_same_message_twice_in_one_flush_is_deleted_without_error(aws: Aws) -> None:
    events = generated(orders=1, seed=1)
    envelope = as_envelopes(events, aws.settings.source)[0]
    await aws.clients.sqs.send_message(
        QueueUrl=aws.resources.queue_url, MessageBody=json.dumps(envelope)
    )
    queue = SqsQueue(aws.clients.sqs, aws.resources.queue_url, visibility_timeout=5, wait_seconds=1)
    received = await queue.receive()
    assert len(received) == 1
    twice: list[Message] = [received[0], received[0]]
    assert await queue.delete(twice) == 1
    assert await queue.is_drained()


@pytest.mark.parametrize("window_size", [3])
async def test_window_size_setting_is_honoured(aws: Aws, window_size: int) -> None:
    settings = aws.settings.model_copy(update={"window_size": window_size})
    events = generated(orders=80, seed=9, tenants=("NYC",))
    await put_planned(aws, events)
    await burst(settings)
    rows = await aws.stored_rows()
    assert rows and all(row["samples"] <= window_size for row in rows)
    assert rows == expected_rows(as_envelopes(events, settings.source), settings)
