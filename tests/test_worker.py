"""The worker on in-memory fakes of its ports (tests/fakes.py): the whole module in seconds.

What a flush must keep (service/worker.py): write, merge, publish, and only then delete;
ignored and duplicate messages are deleted, poison is released to the redrive policy and
reported once; a redelivered message republishes its window; a lost window race is
re-read and joined; dependency failures are retried (readiness false meanwhile), a
non-retriable one leaves the messages to the visibility timeout, a configuration error
stops the worker; heartbeats keep a slow flush invisible; a stop drains the flush in
progress, or abandons it while a dependency keeps failing; the depths of the queue and of
its DLQ are read at most once per 30 s each, and a failed read touches neither a flush nor
readiness. What only a real endpoint can
prove stays in the moto-backed tests (test_flush.py, test_end_to_end.py, reliability/).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from structlog.testing import capture_logs

from service.backoff import Backoff
from service.core.pairing import OrderRecord
from service.core.window import WindowEntry, WindowKey
from service.errors import ConfigurationError, DependencyError
from service.flush import Flush
from service.ports import QueueDepth, QueueDepthSource
from service.settings import Settings, worker_options
from service.worker import DEPTH_POLL_SECONDS, Worker, watch_queue_depths
from tests.envelopes import envelope
from tests.fakes import Fakes, Injectable, QueuedMessage, join_record
from tests.helpers import order_record, wait_until

pytestmark = pytest.mark.unit

T0 = 1_790_000_000  # event times: 2026-09-21
NOW = T0 + 3600  # the worker's clock
LATTE: WindowKey = ("NYC", "Latte")
MOCHA: WindowKey = ("NYC", "Mocha")
FLUSH = ["receive", "apply", "commit", "publish", "delete"]

FAST: dict[str, Any] = {
    "receive_wait_seconds": 0,
    "visibility_timeout_seconds": 5,
    "max_receive_count": 3,
    "drain_seconds": 5.0,
    "window_size": 10,
}


# -- building blocks ---------------------------------------------------------------------


def submitted(order_id: str, at: int, drink: str = "Latte", tenant: str = "NYC") -> str:
    return json.dumps(
        envelope("submitted", order_id, at=at, tenant=tenant, drink=drink, id=f"s-{order_id}-{at}")
    )


def completed(order_id: str, at: int, tenant: str = "NYC") -> str:
    return json.dumps(
        envelope("completed", order_id, at=at, tenant=tenant, id=f"c-{order_id}-{at}")
    )


def send_order(fakes: Fakes, order_id: str, at: int, wait: int, drink: str = "Latte") -> list[str]:
    """Both halves of an order on the queue; their message ids."""
    return [
        fakes.queue.send(submitted(order_id, at, drink)),
        fakes.queue.send(completed(order_id, at + wait)),
    ]


def make_worker(fakes: Fakes, **overrides: Any) -> Worker:
    settings = Settings(**{**FAST, **overrides})
    options = worker_options(settings, redrive_limit=fakes.queue.max_receive_count)
    flush = Flush(
        fakes.queue, fakes.store, fakes.publisher, fakes.observer, options, clock=lambda: NOW
    )
    return Worker(fakes.queue, flush, options, fakes.observer)


async def run_burst(worker: Worker) -> None:
    await worker.run(burst=True)


async def burst(worker: Worker, seconds: float = 2.0) -> None:
    with anyio.fail_after(seconds):
        await worker.run(burst=True)


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


@pytest.fixture(autouse=True)
def instant_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's dependency retries without their backoff delays."""
    monkeypatch.setattr("service.retry.DEPENDENCY_RETRY", Backoff(base=0.0, cap=0.0))


@pytest.fixture
def fakes() -> Fakes:
    return Fakes.create()


# -- the fakes themselves ----------------------------------------------------------------


async def test_the_fake_queue_redrives_and_ignores_stale_receipts() -> None:
    fakes = Fakes.create(visibility_timeout=10, max_receive_count=2)
    queue = fakes.queue
    first_id = queue.send("a")
    [first] = await queue.receive(0)
    assert (first.message_id, first.receive_count) == (first_id, 1)
    assert await queue.receive(0) == []  # in flight
    queue.advance(10)
    [second] = await queue.receive(0)
    assert second.receive_count == 2
    assert second.receipt_handle != first.receipt_handle
    assert await queue.delete([first]) == 0  # stale: another receive holds it now
    await queue.change_visibility([first], 0)  # stale: ignored
    assert await queue.receive(0) == []
    await queue.change_visibility([second], 0)
    assert await queue.receive(0) == []  # received twice already: moved to the DLQ
    assert [m.message_id for m in queue.dlq] == [first_id]
    assert await queue.is_drained()


def test_the_fake_store_joins_records_like_the_set_update() -> None:
    def record(**fields: Any) -> OrderRecord:
        return order_record("o1", **fields)

    stored = join_record(record(), record(completed_at=T0 + 60), expires_at=100)
    stored = join_record(stored, record(tenant="NYC", drink="Latte", submitted_at=T0), 200)
    stored = join_record(stored, record(tenant="LDN", drink="Mocha", submitted_at=T0 - 5), 300)
    stored = join_record(stored, record(cancelled=True), 400)
    stored = join_record(stored, record(completed_at=T0 + 90), 500)
    assert stored.expires_at == 100  # set once
    assert set(stored.submissions) == {(T0, "NYC", "Latte"), (T0 - 5, "LDN", "Mocha")}
    assert set(stored.completions) == {T0 + 60, T0 + 90} and stored.cancelled
    # Earliest wins, whatever the order the halves were stored in.
    assert (stored.key, stored.submitted_at, stored.completed_at) == (
        ("LDN", "Mocha"),
        T0 - 5,
        T0 + 60,
    )


# -- a flush -----------------------------------------------------------------------------


async def test_a_flush_writes_merges_publishes_and_only_then_deletes(fakes: Fakes) -> None:
    ids = send_order(fakes, "o1", T0, 60) + send_order(fakes, "o2", T0 + 10, 120, "Mocha")
    worker = make_worker(fakes)
    publishing = fakes.publisher.hold("publish")
    with anyio.fail_after(3):
        async with anyio.create_task_group() as group:
            group.start_soon(run_burst, worker)
            await publishing.entered.wait()
            # Windows durable, publish under way: nothing may be deleted yet.
            assert fakes.journal.operations() == ["receive", "apply", "commit"]
            assert fakes.queue.deleted == []
            assert fakes.store.window(LATTE).version == 1
            publishing.release()
    journal = fakes.journal
    assert journal.operations() == FLUSH
    assert journal.subjects("apply") == [("o1", "o2")]
    assert sorted(journal.subjects("commit")[0]) == ["NYC/Latte", "NYC/Mocha"]
    # Both averages and the tenant's estimate (its open orders) in the same call.
    assert sorted(journal.subjects("publish")[0]) == ["NYC/Latte@1", "NYC/Mocha@1", "NYC@1"]
    assert sorted(journal.subjects("delete")[0]) == sorted(ids)
    assert sorted(fakes.queue.deleted) == sorted(ids)
    assert not fakes.queue.messages
    latte = fakes.publisher.latest(LATTE)
    assert (latte.duration, latte.samples, latte.version, latte.window) == (60, 1, 1, 10)
    assert fakes.publisher.latest(MOCHA).duration == 120
    [flush] = fakes.observer.flushes
    assert (flush["processed"], flush["ignored"], flush["deleted"]) == (4, 0, 4)
    assert fakes.observer.counts["average_published"] == 2


async def test_a_backlog_of_several_receives_is_one_flush(fakes: Fakes) -> None:
    ids = [i for n in range(12) for i in send_order(fakes, f"o{n:02}", T0 + n, 30 + n)]
    await burst(make_worker(fakes))
    # 24 messages: receives of 10, 10 and 4, then one call of each kind for all of them.
    assert fakes.journal.operations() == ["receive"] * 3 + FLUSH[1:]
    assert len(fakes.journal.subjects("apply")[0]) == 12
    assert sorted(fakes.journal.subjects("delete")[0]) == sorted(ids)
    assert fakes.publisher.latest(LATTE).samples == 10


async def test_an_ignored_detail_type_is_deleted_without_touching_the_store(
    fakes: Fakes,
) -> None:
    ignored = fakes.queue.send(
        json.dumps(
            envelope(detail_type="OrderProcessor.WorkflowStarted", detail={"orderId": "o1"}, at=T0)
        )
    )
    await burst(make_worker(fakes))
    assert fakes.journal.operations() == ["receive", "delete"]
    assert fakes.journal.subjects("delete") == [(ignored,)]
    assert fakes.store.records == {}
    assert fakes.publisher.published == []
    [flush] = fakes.observer.flushes
    assert (flush["processed"], flush["ignored"], flush["deleted"]) == (0, 1, 1)


async def test_the_same_message_twice_in_one_flush_is_deleted_without_error(
    fakes: Fakes,
) -> None:
    send_order(fakes, "o1", T0, 45)
    worker = make_worker(fakes)
    with anyio.fail_after(2):
        received = await fakes.queue.receive(0)
        outcome = await worker.process_flush([*received, received[1]])
    assert (outcome.processed, outcome.poison, outcome.published) == (2, 0, 1)
    assert not fakes.queue.messages
    assert fakes.observer.flushes[-1]["deleted"] == 2
    assert fakes.store.window(LATTE).window.entries == (WindowEntry(T0 + 45, "o1", 45),)


async def test_poison_is_released_reported_once_and_ends_in_the_dlq(fakes: Fakes) -> None:
    good = send_order(fakes, "o1", T0, 30)
    poison = [
        fakes.queue.send("{not json"),
        fakes.queue.send(json.dumps(envelope("submitted", None, at=T0))),  # no orderId
    ]
    await burst(make_worker(fakes))
    queue = fakes.queue
    assert [(m.message_id, m.receive_count) for m in queue.dlq] == [(p, 3) for p in poison]
    assert sorted(queue.deleted) == sorted(good)  # the good ones went their way
    assert fakes.journal.subjects("delete") == [tuple(good)]
    # Released at once on each of the three receives, so the redrive policy is quick.
    assert fakes.journal.subjects("release") == [tuple(poison)] * 3
    # Reported once each, on the final receive only.
    assert sorted(fakes.observer.poisoned) == ["missing_order_id", "not_json"]
    reports = [name for name, _ in fakes.observer.calls if name in ("flush_started", "poison")]
    assert reports == ["flush_started"] * 3 + ["poison"] * 2
    assert fakes.journal.subjects("apply") == [("o1",)]


# -- redelivery --------------------------------------------------------------------------


async def die_before_the_publish(fakes: Fakes) -> None:
    """A worker runs until its first publish and dies there, after the window write."""
    publishing = fakes.publisher.hold("publish")
    crashed = make_worker(fakes)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as group:
            group.start_soon(run_burst, crashed)
            await publishing.entered.wait()
            group.cancel_scope.cancel()  # the worker dies between the merge and the publish


async def test_a_redelivered_message_republishes_its_window_at_the_same_version(
    fakes: Fakes,
) -> None:
    send_order(fakes, "o1", T0, 90)
    await die_before_the_publish(fakes)
    assert fakes.store.window(LATTE).version == 1
    assert fakes.publisher.published == []
    assert fakes.queue.deleted == []

    fakes.store.cached.clear()  # a new process
    fakes.queue.advance(fakes.queue.visibility_timeout)
    await burst(make_worker(fakes))
    assert [(d.drink, d.version, d.duration) for d in fakes.publisher.published] == [
        ("Latte", 1, 90)
    ]
    assert fakes.store.window(LATTE).version == 1  # republished, not bumped
    assert [c[1]["redelivered"] for c in fakes.observer.calls if c[0] == "flush_started"] == [
        0,
        2,
    ]
    assert not fakes.queue.messages


async def test_a_redelivered_cancellation_republishes_the_window_it_left(fakes: Fakes) -> None:
    """A cancellation takes an order out of its window; the worker dies between writing the
    window and publishing. Redelivered, the cancellation changes nothing any more and its
    order is in no window, yet consumers still hold the average with it: the key it
    left republishes its current version (a CI run of the crash scenario found this)."""
    send_order(fakes, "o1", T0, 60)
    send_order(fakes, "o2", T0 + 10, 120)
    await burst(make_worker(fakes))
    assert fakes.publisher.latest(LATTE).samples == 2
    fakes.queue.send(json.dumps(envelope("cancelled", "o2", at=T0 + 200)), message_id="cancel-o2")
    await die_before_the_publish(fakes)
    written = fakes.store.window(LATTE)
    assert written.window.samples == 1 and fakes.publisher.latest(LATTE).samples == 2

    fakes.store.cached.clear()  # a new process
    fakes.queue.advance(fakes.queue.visibility_timeout)
    await burst(make_worker(fakes))
    latest = fakes.publisher.latest(LATTE)
    assert (latest.samples, latest.duration, latest.version) == (1, 60, written.version)
    assert not fakes.queue.messages


async def test_a_first_delivery_of_an_applied_order_publishes_nothing(fakes: Fakes) -> None:
    send_order(fakes, "o1", T0, 90)
    worker = make_worker(fakes)
    await burst(worker)
    assert len(fakes.publisher.published) == 1
    again = fakes.queue.send(completed("o1", T0 + 90))  # the same event, a new message
    await burst(worker)
    assert fakes.journal.operations()[len(FLUSH) :] == ["receive", "apply", "commit", "delete"]
    assert len(fakes.publisher.published) == 1
    assert fakes.queue.deleted[-1] == again


async def test_a_lost_window_race_is_reread_and_joined(fakes: Fakes) -> None:
    worker = make_worker(fakes)
    send_order(fakes, "o1", T0, 60)
    await burst(worker)
    # Another worker writes the same window behind this one's cache.
    fakes.store.bump(
        LATTE,
        [order_record("theirs", "NYC", "Latte", T0 + 100, T0 + 200, expires_at=T0 + 86_400)],
    )
    send_order(fakes, "o2", T0 + 300, 30)
    await burst(worker)
    latest = fakes.publisher.latest(LATTE)
    assert (latest.version, latest.samples, latest.duration) == (3, 3, round(190 / 3, 3))
    assert [e.order_id for e in fakes.store.window(LATTE).window.entries] == [
        "o2",
        "theirs",
        "o1",
    ]
    assert fakes.observer.counts["window_conflict"] == 1


# -- dependency failures -----------------------------------------------------------------


def target(fakes: Fakes, stage: str) -> Injectable:
    if stage in ("receive", "delete"):
        return fakes.queue
    if stage in ("apply", "commit"):
        return fakes.store
    return fakes.publisher


@pytest.mark.parametrize("stage", ["receive", "apply", "commit", "publish", "delete"])
async def test_a_retriable_failure_is_retried_until_it_succeeds(fakes: Fakes, stage: str) -> None:
    target(fakes, stage).fail(stage, times=2)
    ids = send_order(fakes, "o1", T0, 60)
    await burst(make_worker(fakes))
    expected = list(FLUSH)
    at = expected.index(stage)
    expected[at:at] = [f"{stage}:failed"] * 2
    assert fakes.journal.operations() == expected
    assert fakes.observer.stages_retried() == [stage, stage]
    assert fakes.observer.readiness == [False, False, True]  # not ready, then ready again
    assert fakes.observer.ready
    assert [d.version for d in fakes.publisher.published] == [1]
    assert sorted(fakes.queue.deleted) == sorted(ids)


async def test_a_publish_that_fails_after_the_merge_is_retried_alone(fakes: Fakes) -> None:
    fakes.publisher.fail("publish")
    send_order(fakes, "o1", T0, 60)
    await burst(make_worker(fakes))
    journal = fakes.journal
    assert journal.operations() == ["receive", "apply", "commit", "publish:failed", *FLUSH[3:]]
    assert journal.subjects("publish:failed") == journal.subjects("publish")
    assert journal.subjects("publish") == [("NYC/Latte@1", "NYC@1")]
    assert fakes.store.window(LATTE).version == 1
    assert len(fakes.publisher.published) == 1


async def test_a_merge_retried_after_its_write_landed_publishes_every_window_of_the_flush(
    fakes: Fakes,
) -> None:
    # The windows are written, the answer is lost: the retry finds nothing to change, and
    # the publish of both windows must not be lost with it.
    fakes.store.fail("commit", after_effect=True)
    send_order(fakes, "o1", T0, 60)
    send_order(fakes, "o2", T0, 80, "Mocha")
    await burst(make_worker(fakes))
    assert fakes.journal.operations() == ["receive", "apply", "commit:lost", *FLUSH[2:]]
    assert sorted(fakes.journal.subjects("publish")[0]) == ["NYC/Latte@1", "NYC/Mocha@1", "NYC@1"]
    assert fakes.store.window(LATTE).version == fakes.store.window(MOCHA).version == 1
    assert not fakes.queue.messages


async def test_a_non_retriable_failure_leaves_the_messages_to_the_visibility_timeout(
    fakes: Fakes,
) -> None:
    denied = DependencyError("AccessDenied", code="AccessDeniedException", retriable=False)
    fakes.store.fail("apply", error=denied)
    ids = send_order(fakes, "o1", T0, 60)
    worker = make_worker(fakes)
    with anyio.fail_after(3):
        async with anyio.create_task_group() as group:
            group.start_soon(run_burst, worker)
            await wait_until(
                lambda: "apply:failed" in fakes.journal.operations(), 2, "the failed apply"
            )
            await anyio.sleep(0.1)  # the worker keeps polling meanwhile
            assert fakes.queue.deleted == []
            assert {m.message_id for m in fakes.queue.in_flight()} == set(ids)
            assert not worker.finished.is_set()
            fakes.queue.advance(fakes.queue.visibility_timeout)
    assert fakes.journal.operations() == ["receive", "apply:failed", *FLUSH]
    assert fakes.observer.retries == []  # not retried in place
    assert fakes.observer.ready
    assert sorted(fakes.queue.deleted) == sorted(ids)
    assert [d.version for d in fakes.publisher.published] == [1]


async def test_a_configuration_error_stops_the_worker(fakes: Fakes) -> None:
    fakes.store.fail("apply", error=ConfigurationError("table wait-times does not exist"))
    send_order(fakes, "o1", T0, 60)
    worker = make_worker(fakes)
    with (
        anyio.fail_after(2),
        pytest.raises((ConfigurationError, BaseExceptionGroup)) as raised,
    ):
        await worker.run(burst=True)
    # The flush's task group may wrap it; the CLI looks inside groups (service/cli.py).
    [error] = leaves(raised.value)
    assert isinstance(error, ConfigurationError)
    assert "does not exist" in str(error)
    assert worker.finished.is_set()
    assert fakes.queue.deleted == []
    assert fakes.journal.operations() == ["receive", "apply:failed"]


# -- the batch window --------------------------------------------------------------------


async def flushes_done(fakes: Fakes, count: int, seconds: float = 2.0) -> None:
    await wait_until(lambda: len(fakes.observer.flushes) >= count, seconds, f"{count} flush(es)")


async def flush_sizes(
    fakes: Fakes, window: float, arrivals: list[list[float]], first: int = 3, **overrides: Any
) -> list[int]:
    """Messages per flush of a running worker with batch window ``window``: ``first``
    submissions queued before it starts, then, once each flush so far is done, the next
    group of ``arrivals`` (each a list of delays before a submission is sent)."""
    for n in range(first):
        fakes.queue.send(submitted(f"o{n}", T0 + n))
    worker = make_worker(fakes, batch_window_seconds=window, **overrides)
    sent = first
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await flushes_done(fakes, 1)
            for index, delays in enumerate(arrivals):
                for delay in delays:
                    await anyio.sleep(delay)
                    fakes.queue.send(submitted(f"o{sent}", T0 + sent))
                    sent += 1
                await flushes_done(fakes, index + 2)
            worker.stop()
    return [int(str(f["processed"])) for f in fakes.observer.flushes]


async def test_traffic_waits_the_batch_window_so_the_next_flush_holds_more(fakes: Fakes) -> None:
    # A flush of three messages that emptied the queue says messages arrive faster than
    # the worker turns around: the next receive waits the window, so the two messages
    # sent 0.1 s apart during it are one flush, not two.
    assert await flush_sizes(fakes, 0.5, [[0, 0.1]]) == [3, 2]


async def test_without_a_batch_window_each_arrival_is_its_own_flush(fakes: Fakes) -> None:
    assert await flush_sizes(fakes, 0, [[0], [0]]) == [3, 1, 1]


async def test_a_lone_message_is_not_held_by_the_batch_window(fakes: Fakes) -> None:
    # One message a flush is light traffic: the next arrival is received at once.
    assert await flush_sizes(fakes, 10, [[0]], first=1) == [1, 1]


async def test_a_backlog_is_not_held_by_the_batch_window(fakes: Fakes) -> None:
    # Full receives mean a backlog: the next flush starts at once, window or not.
    sizes = await flush_sizes(fakes, 10, [[], []], first=30, max_receives_per_flush=1)
    assert sizes == [10, 10, 10]


async def test_a_full_receive_then_an_empty_short_poll_waits_the_batch_window(
    fakes: Fakes,
) -> None:
    # Ten messages, then a short poll that found nothing: the queue was emptied, so this is
    # traffic, not a backlog; the two that follow 0.1 s apart are one flush.
    assert await flush_sizes(fakes, 0.5, [[0, 0.1]], first=10) == [10, 2]


async def test_a_partial_receive_after_full_ones_waits_the_batch_window(fakes: Fakes) -> None:
    assert await flush_sizes(fakes, 0.5, [[0, 0.1]], first=13) == [13, 2]


async def test_burst_mode_never_waits_the_batch_window(fakes: Fakes) -> None:
    # Three messages make the next receive wait, but not in burst mode: it drains the queue
    # and exits (a 10 s wait would outlast fail_after).
    for n in range(3):
        fakes.queue.send(submitted(f"o{n}", T0 + n))
    await burst(make_worker(fakes, batch_window_seconds=10), seconds=3)
    assert [f["processed"] for f in fakes.observer.flushes] == [3]


async def test_a_stop_during_the_batch_window_ends_the_worker_at_once(fakes: Fakes) -> None:
    for n in range(3):
        fakes.queue.send(submitted(f"o{n}", T0 + n))
    worker = make_worker(fakes, batch_window_seconds=10)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await flushes_done(fakes, 1)
            await anyio.sleep(0.05)  # inside the window now
            worker.stop()
            await worker.finished.wait()
    assert len(fakes.observer.flushes) == 1


# -- heartbeats and stopping -------------------------------------------------------------


async def test_a_slow_flush_is_kept_invisible_by_heartbeats() -> None:
    # Heartbeat every max(1, 3 / 3) = 1 s: the fastest the worker allows.
    fakes = Fakes.create(visibility_timeout=3)
    ids = send_order(fakes, "o1", T0, 60)
    applying = fakes.store.hold("apply")
    worker = make_worker(fakes)
    with anyio.fail_after(4):
        async with anyio.create_task_group() as group:
            group.start_soon(run_burst, worker)
            await applying.entered.wait()
            invisible_until = max(m.visible_at for m in fakes.queue.messages.values())
            await wait_until(
                lambda: fakes.observer.counts["visibility_extended"] >= 1, 2, "a heartbeat"
            )
            assert fakes.journal.subjects("extend") == [tuple(ids)]
            assert all(m.visible_at > invisible_until for m in fakes.queue.messages.values())
            applying.release()
    assert sorted(fakes.queue.deleted) == sorted(ids)


async def test_stop_drains_the_flush_in_progress(fakes: Fakes) -> None:
    ids = send_order(fakes, "o1", T0, 60)
    applying = fakes.store.hold("apply")
    worker = make_worker(fakes, drain_seconds=5.0)
    with anyio.fail_after(3):
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await applying.entered.wait()
            worker.stop()
            late = fakes.queue.send(submitted("o2", T0))  # arrives after the stop
            await anyio.sleep(0.1)
            assert not worker.finished.is_set()  # the held flush keeps run going
            applying.release()
            await worker.finished.wait()
    assert fakes.journal.operations() == FLUSH
    assert sorted(fakes.queue.deleted) == sorted(ids)
    assert list(fakes.queue.messages) == [late]  # never received
    assert len(fakes.publisher.published) == 1


async def test_stop_cancels_a_flush_that_outlasts_the_drain_budget(fakes: Fakes) -> None:
    ids = send_order(fakes, "o1", T0, 60)
    applying = fakes.store.hold("apply")  # never released
    worker = make_worker(fakes, drain_seconds=0.2)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await applying.entered.wait()
            stopped_at = anyio.current_time()
            worker.stop()
            await worker.finished.wait()
    assert anyio.current_time() - stopped_at < 1.0
    assert fakes.queue.deleted == []
    assert {m.message_id for m in fakes.queue.in_flight()} == set(ids)  # back after the timeout


async def test_stop_while_a_dependency_keeps_failing_abandons_the_flush(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.retry.DEPENDENCY_RETRY", Backoff(base=0.01, cap=0.01))
    fakes.store.fail("apply", times=None)  # an outage that does not end
    ids = send_order(fakes, "o1", T0, 60)
    worker = make_worker(fakes, drain_seconds=30.0)
    with anyio.fail_after(3):
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await wait_until(lambda: fakes.observer.counts["retrying"] >= 3, 2, "retries")
            assert not fakes.observer.ready
            stopped_at = anyio.current_time()
            worker.stop()
            await worker.finished.wait()
    assert anyio.current_time() - stopped_at < 0.5  # not the 30 s drain budget
    assert fakes.queue.deleted == []
    assert {m.message_id for m in fakes.queue.in_flight()} == set(ids)
    assert "apply" not in fakes.journal.operations()
    assert fakes.publisher.published == []


async def test_stop_in_burst_mode_while_the_queue_keeps_failing_returns(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Burst mode asks is_drained between receives; a stop during that outage must end
    # run like any other stop ("Run until stop()"), not raise out of it.
    monkeypatch.setattr("service.retry.DEPENDENCY_RETRY", Backoff(base=0.01, cap=0.01))
    fakes.queue.fail("is_drained", times=None)
    worker = make_worker(fakes)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as group:
            group.start_soon(run_burst, worker)
            await wait_until(lambda: fakes.observer.counts["retrying"] >= 2, 1, "retries")
            worker.stop()
            await worker.finished.wait()
    assert fakes.observer.stages_retried()[-1] == "is_drained"


# -- the depths of the queue and of its DLQ ----------------------------------------------


class VirtualTime:
    """Time that passes only when every sleeper is asleep: ``run_until`` wakes them in
    order of their deadlines, so minutes of watching take no real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        woken = anyio.Event()
        self._sleepers.append((self.now + seconds, len(self._sleepers), woken))
        await woken.wait()

    async def run_until(self, end: float) -> None:
        while True:
            for _ in range(20):  # let every task run until it sleeps again
                await checkpoint()
            if not self._sleepers:
                raise AssertionError("nothing is sleeping: the watch ended")
            self._sleepers.sort(key=lambda sleeper: sleeper[:2])
            deadline, _, woken = self._sleepers[0]
            if deadline > end:
                return
            self._sleepers.pop(0)
            self.now = max(self.now, deadline)
            woken.set()


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def watched(fakes: Fakes) -> dict[str, QueueDepthSource]:
    """The fake queue and its DLQ, labelled as the app labels the real ones."""
    return {"main": fakes.queue, "dlq": fakes.queue.dead_letters}


async def watch_for(
    fakes: Fakes, time: VirtualTime, *stops: float, then: Callable[[], None] = lambda: None
) -> None:
    """Watch the fake queue and its DLQ in virtual time, calling ``then`` at each stop but
    the last."""
    queues = watched(fakes)
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: watch_queue_depths(queues, fakes.observer, sleep=time.sleep))
        for index, stop in enumerate(stops):
            await time.run_until(stop)
            if index < len(stops) - 1:
                then()
        group.cancel_scope.cancel()


async def test_queue_depths_are_read_at_most_once_per_30_seconds() -> None:
    time = VirtualTime()
    fakes = Fakes.create(clock=time.clock, visibility_timeout=3600)
    queue = fakes.queue
    for body in ("a", "b", "c"):
        queue.send(body)
    assert len(await queue.receive(0)) == 3  # in flight
    queue.send("d")
    queue.send("e")
    queue.dlq.append(QueuedMessage("dead", "x"))

    await watch_for(fakes, time, 300)

    assert DEPTH_POLL_SECONDS == 30
    for reads in (queue.depth_reads, queue.dead_letters.depth_reads):
        assert reads[0] == 0  # read at once when the worker starts
        assert min(gaps(reads)) >= 30
        assert len(reads) == 11  # 0, 30, ..., 300: never more often
    assert fakes.observer.depths == {
        "main": QueueDepth(visible=2, in_flight=3),
        "dlq": QueueDepth(visible=1, in_flight=0),
    }
    # On real time too: one read each at start, the next one 30 s later.
    fakes = Fakes.create()
    queues = watched(fakes)
    with anyio.move_on_after(0.3):
        await watch_queue_depths(queues, fakes.observer)
    assert (len(fakes.queue.depth_reads), len(fakes.queue.dead_letters.depth_reads)) == (1, 1)


async def test_a_failing_depth_read_is_logged_once_per_streak_and_spares_readiness() -> None:
    time = VirtualTime()
    fakes = Fakes.create(clock=time.clock)
    denied = ConfigurationError("sqs.GetQueueAttributes: AccessDenied: not authorized")
    fakes.queue.dead_letters.fail("depth", times=3, error=denied)  # reads at 0, 30, 60
    fakes.queue.fail("depth", times=1)  # a retriable failure, at 0
    fakes.queue.dlq.append(QueuedMessage("dead", "x"))

    def second_streak() -> None:
        fakes.queue.dead_letters.fail("depth", times=2, error=denied)  # reads at 180, 210

    with capture_logs() as logs:
        await watch_for(fakes, time, 150, 300, then=second_streak)

    events = [(e["event"], e["queue"]) for e in logs if e["event"].startswith("queue_depth")]
    assert events.count(("queue_depth_failed", "main")) == 1
    assert events.count(("queue_depth_recovered", "main")) == 1
    assert events.count(("queue_depth_failed", "dlq")) == 2  # once per streak
    assert events.count(("queue_depth_recovered", "dlq")) == 2
    failed = next(e for e in logs if e["event"] == "queue_depth_failed" and e["queue"] == "dlq")
    assert "AccessDenied" in failed["error"]
    # Never tried again sooner, never a dependency failure: readiness never heard of it.
    assert min(gaps(fakes.queue.dead_letters.depth_reads)) >= 30
    assert fakes.observer.retries == []
    assert fakes.observer.readiness == []
    assert fakes.observer.depths["dlq"] == QueueDepth(visible=1, in_flight=0)


async def test_a_depth_read_that_keeps_failing_leaves_the_flushes_alone(fakes: Fakes) -> None:
    send_order(fakes, "o1", T0, 90)
    denied = ConfigurationError("sqs.GetQueueAttributes: AccessDenied: not authorized")
    fakes.queue.dead_letters.fail("depth", times=None, error=denied)
    queues = watched(fakes)
    worker = make_worker(fakes)
    async with anyio.create_task_group() as group:
        group.start_soon(watch_queue_depths, queues, fakes.observer)
        await burst(worker)
        group.cancel_scope.cancel()
    assert fakes.publisher.latest(LATTE).duration == 90
    assert len(fakes.queue.deleted) == 2
    assert fakes.queue.dead_letters.injections.failures["depth"] == 1
    assert fakes.observer.ready
    assert False not in fakes.observer.readiness
    assert set(fakes.observer.depths) == {"main"}  # the DLQ's depth is simply not exported
