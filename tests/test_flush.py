"""Flushes: several receives share one set of DynamoDB and EventBridge calls (real HTTP).

What the paths that share calls must keep: halves written by two workers at once still pair; a
window write that loses a race inside a transaction is re-read and joined; a backlog is
processed in flushes larger than one receive with fewer calls than orders; and a receive
that fails for an unexpected reason does not hold back the others of its flush.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack

import anyio
import pytest
from botocore.exceptions import ClientError

from service.app import build_worker
from service.aws.clients import open_clients
from service.aws.queue import resolve_queue
from service.aws.store import DynamoStore
from service.core.consumed import role_of
from service.core.estimate import Estimate
from service.core.estimators.registry import estimate_options
from service.core.orders import OrderEvent, Role
from service.core.pairing import OrderRecord
from service.core.window import WindowKey
from service.errors import DependencyError
from service.flush import Flush
from service.metrics import Metrics, PrometheusObserver
from service.ports import Committed, Message
from service.readiness import Health
from tests.helpers import (
    DYNAMODB_ONLY,
    Aws,
    as_envelopes,
    aws_calls,
    burst,
    expected_rows,
    generated,
    order_record,
    put_planned,
    scan_windows,
)
from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.integration


def submitted(order_id: str, at: int, drink: str = "Latte") -> OrderRecord:
    event = OrderEvent(Role.SUBMITTED, order_id, at, "NYC", drink)
    return OrderRecord(order_id).merge(event)


def completed(order_id: str, at: int) -> OrderRecord:
    return OrderRecord(order_id).merge(OrderEvent(Role.COMPLETED, order_id, at))


@DYNAMODB_ONLY
async def test_halves_written_by_two_stores_at_once_always_pair(aws: Aws) -> None:
    first, second = aws.store(), aws.store()
    for orders in (2, 40):  # the UpdateItem path and the transaction + BatchGetItem path
        ids = [f"{orders}-{i}" for i in range(orders)]
        seen: dict[str, list[OrderRecord]] = {}

        async def write(
            store: DynamoStore, records: list[OrderRecord], seen: dict[str, list[OrderRecord]]
        ) -> None:
            for order_id, record in (await store.apply_all(records, now=1_000)).items():
                seen.setdefault(order_id, []).append(record)

        async with anyio.create_task_group() as group:
            group.start_soon(write, first, [submitted(o, 100) for o in ids], seen)
            group.start_soon(write, second, [completed(o, 160) for o in ids], seen)
        for order_id in ids:
            records = seen[order_id]
            assert len(records) == 2
            # Whichever write landed second read both halves back.
            assert any(r.submitted_at == 100 and r.completed_at == 160 for r in records), records
            assert all(r.tenant in (None, "NYC") and r.expires_at is not None for r in records)


@DYNAMODB_ONLY
async def test_a_repeated_flush_changes_no_stored_record(aws: Aws) -> None:
    store = aws.store()
    records = [submitted(f"o{i}", 100) for i in range(5)]
    once = await store.apply_all(records, now=1_000)
    twice = await store.apply_all(records, now=9_000)  # later clock: the expiry stays put
    assert once == twice
    assert {r.expires_at for r in once.values()} == {1_000 + aws.settings.pending_ttl_seconds}


class Conflicts:
    """The part of the Observer port a store reports lost races through."""

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def window_conflict(self) -> None:
        self.seen.append(1)

    def items(self, operation: str, count: int) -> None:
        pass


@DYNAMODB_ONLY
async def test_a_window_transaction_that_loses_a_race_rereads_and_joins(aws: Aws) -> None:
    keys: list[WindowKey] = [("NYC", "Latte"), ("NYC", "Mocha"), ("LDN", "Tea")]
    conflicts: list[int] = []
    stale = aws.store()
    stale.observer = Conflicts(conflicts)  # type: ignore[assignment]
    fresh = aws.store()

    def records(prefix: str, at: int) -> dict[WindowKey, list[OrderRecord]]:
        return {
            key: [order_record(f"{prefix}-{key[1]}", *key, at - 60, at, expires_at=10**9)]
            for key in keys
        }

    # Both stores cache every key at version 1; then the fresh one moves them all to 2.
    await stale.commit(records("a", 100), {}, now=1_000)
    await fresh.commit(records("b", 200), {}, now=1_000)
    # Stale versions: the transaction fails.
    changes = (await stale.commit(records("c", 300), {}, now=1_000)).windows

    assert conflicts  # the condition failed, was counted, and the keys were re-read
    stored = await scan_windows(aws.clients, aws.settings)
    for change in changes:
        assert change.changed
        assert change.state == stored[change.key]
        assert change.state.version == 3
        assert [e.order_id for e in change.state.window.entries] == [
            f"{p}-{change.key[1]}" for p in ("c", "b", "a")
        ]


async def test_a_backlog_is_processed_in_flushes_of_several_receives(aws: Aws) -> None:
    events = generated(orders=60, seed=11)
    await put_planned(aws, events)
    metrics = Metrics()
    await burst(aws.settings, metrics)

    expected = expected_rows(as_envelopes(events, aws.settings.source), aws.settings)
    assert await aws.stored_rows() == expected
    flushes = metrics.registry.get_sample_value("wait_times_flush_messages_count")
    received = metrics.registry.get_sample_value("wait_times_messages_received_total")
    receives_with_messages = aws_calls(metrics)["sqs.ReceiveMessage"]
    assert flushes is not None and received is not None
    assert received / flushes > 10  # on average more than one full receive per flush
    made = aws_calls(metrics)
    dynamodb = sum(v for k, v in made.items() if k.startswith("dynamodb.") and "Describe" not in k)
    assert made.get("dynamodb.TransactWriteItems", 0) > 0
    assert dynamodb < 60 / 2, made  # far fewer DynamoDB calls than orders
    assert receives_with_messages >= received / 10


class FailsOnOneOrder:
    """The real store, except that any flush holding one order id fails like a bug would."""

    def __init__(self, store: DynamoStore, bad_order: str) -> None:
        self.store = store
        self.bad_order = bad_order
        self.failures = 0

    @property
    def cached_windows(self) -> int:
        return self.store.cached_windows

    @property
    def cached_tenants(self) -> int:
        return self.store.cached_tenants

    async def tenant_views(self, tenants: Iterable[str], now: int) -> dict[str, Estimate | None]:
        return await self.store.tenant_views(tenants, now)

    async def apply_all(self, records: Sequence[OrderRecord], now: int) -> dict[str, OrderRecord]:
        if any(r.order_id == self.bad_order for r in records):
            self.failures += 1
            raise RuntimeError(f"unexpected: {self.bad_order}")
        return await self.store.apply_all(records, now)

    async def commit(
        self,
        windows: Mapping[WindowKey, Sequence[OrderRecord]],
        tenants: Mapping[str, Sequence[OrderRecord]],
        now: int,
    ) -> Committed:
        return await self.store.commit(windows, tenants, now)

    async def mark_anomalies(self, kinds: Mapping[str, str]) -> set[str]:
        return await self.store.mark_anomalies(kinds)


async def test_an_unexpected_failure_in_one_receive_spares_the_rest_of_its_flush(
    aws: Aws,
) -> None:
    events = generated(orders=12, seed=2, tenants=("NYC",))
    envelopes = [e for e in as_envelopes(events, aws.settings.source) if role_of(e["detail-type"])]
    bad = envelopes[0]["detail"]["orderId"]
    bodies = [json.dumps(e) for e in envelopes if e["detail"].get("orderId") == bad]
    bodies += [json.dumps(e) for e in envelopes if e["detail"].get("orderId") != bad]
    sqs = aws.clients.sqs
    found = await resolve_queue(sqs, aws.settings.queue_name)
    url, max_receive = found.url, found.max_receive_count
    for start in range(0, len(bodies), 10):
        await sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])
            ],
        )
    metrics = Metrics()
    observer = PrometheusObserver(metrics, Health(metrics))
    worker = build_worker(aws.settings, aws.clients, url, max_receive, observer)
    failing = FailsOnOneOrder(aws.store(), bad)
    assert isinstance(worker.flush, Flush)
    worker.flush.store = failing

    # Every receive handed to the committer at once, as on a busy queue.
    held: list[list[Message]] = []
    while sum(len(h) for h in held) < len(bodies):
        held.append(await worker.queue.receive(0))
    assert len(held) >= 3
    await worker._process_held(held)

    assert failing.failures == 2  # the whole flush, then the one receive holding that order
    bad_receive = [h for h in held if any(bad in m.body for m in h)]
    spared = [json.loads(m.body) for h in held for m in h if h not in bad_receive]
    assert len(bad_receive) == 1 and spared
    # The spared receives are processed as if the bad one had never been received ...
    assert await aws.stored_rows() == expected_rows(spared, aws.settings)
    # ... and the bad receive is not deleted: back after the visibility timeout, then the DLQ.
    attributes = await sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )
    assert int(attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"]) == len(
        bad_receive[0]
    )


@DYNAMODB_ONLY
async def test_a_failing_write_of_two_orders_surfaces_as_itself(aws: Aws) -> None:
    """The one-or-two-orders path writes concurrently; its failure must reach the worker as
    the AWS error (retried, flush held), not as an ExceptionGroup (taken for a bug)."""
    with FaultProxy(aws.cloud.urls, seed=5) as proxy:
        proxy.configure(throttle_rate=1.0, operations=frozenset({"UpdateItem"}))
        settings = aws.settings.through(proxy.url)
        async with AsyncExitStack() as stack:
            clients = await open_clients(settings, stack)
            store = DynamoStore(
                clients.dynamodb,
                settings.table_name,
                window_size=10,
                ttl_seconds=86_400,
                estimates=estimate_options(7200),
            )
            with pytest.raises(DependencyError) as caught:
                await store.apply_all([submitted("x", 1), completed("y", 2)], now=10)
    assert caught.value.retriable
    assert caught.value.operation == "dynamodb.UpdateItem"
    assert caught.value.code == "ThrottlingException"


@DYNAMODB_ONLY
async def test_a_cancelled_transaction_on_the_emulator_changes_nothing(aws: Aws) -> None:
    """The emulator's cheap rollback (service/tools/emulator.py) keeps transactions all-or-nothing."""
    ddb, table = aws.clients.dynamodb, aws.settings.table_name
    await ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    await ddb.put_item(TableName=table, Item={"pk": {"S": "c"}, "v": {"N": "5"}})
    with pytest.raises(ClientError) as caught:
        await ddb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "a"}},
                        "UpdateExpression": "SET n = :two, m = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
                {"Put": {"TableName": table, "Item": {"pk": {"S": "b"}}}},
                {
                    "Put": {
                        "TableName": table,
                        "Item": {"pk": {"S": "c"}, "v": {"N": "6"}},
                        "ConditionExpression": "v = :four",
                        "ExpressionAttributeValues": {":four": {"N": "4"}},
                    }
                },
            ]
        )
    assert caught.value.response["CancellationReasons"][2]["Code"] == "ConditionalCheckFailed"
    items = {
        item["pk"]["S"]: item
        for item in (await ddb.scan(TableName=table, ConsistentRead=True))["Items"]
    }
    assert items["a"] == {"pk": {"S": "a"}, "n": {"N": "1"}}
    assert "b" not in items
    assert items["c"] == {"pk": {"S": "c"}, "v": {"N": "5"}}
