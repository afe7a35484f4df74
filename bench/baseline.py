"""The original extension's design, as a plain consumer, for the cost comparison.

What the first version did for every order (docs/performance.md, part 2): store each
submission and each completion as its own DynamoDB write; on each completion, query every
stored order of that drink, average the latest N and put one event. The original drove
this with Step Functions and Lambda; here the same DynamoDB and EventBridge work is done by
a loop on an SQS queue fed by the same rule, so both designs run on one emulator with the
same events. Like the original, it mixes all tenants into one average per drink.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from service.aws.provision import ensure_queue, ensure_rule

# bench.compare carries this module into older trees, whose events were one module.
try:
    from service.core.consumed import consumed_event_pattern, parse_body
except ImportError:
    from service.core.events import consumed_event_pattern, parse_body  # type: ignore[import-untyped,no-redef]
from service.core.orders import Role
from service.errors import PoisonMessageError

TABLE = "baseline-orders"
QUEUE = "baseline-orders"
PAGE_BYTES = 1024 * 1024  # DynamoDB Query returns at most 1 MB per page


def order_item(drink: str, order_id: str, role: str, at: int) -> dict[str, Any]:
    """One stored half: partition by drink, as the original's query needs."""
    return {
        "drink": {"S": drink},
        "sk": {"S": f"{order_id}#{role}"},
        "orderId": {"S": order_id},
        "role": {"S": role},
        "at": {"N": str(at)},
    }


def item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (close enough for read units)."""
    return sum(len(name) + len(str(next(iter(value.values())))) for name, value in item.items())


class BaselineConsumer:
    """Stores halves, re-queries the whole drink on each completion, puts one event."""

    def __init__(self, clients: Any, queue_url: str, bus: str, window: int = 10) -> None:
        self.clients = clients
        self.queue_url = queue_url
        self.bus = bus
        self.window = window
        self.drink_of: dict[str, str] = {}
        self.read_units = 0.0
        self.write_units = 0
        self.calls: Counter[tuple[str, str]] = Counter()
        self.completed = 0
        self.messages = 0
        self.stored = 0

    def per_completed_order(
        self, consumed_events: int, completions: int, stored_halves: int
    ) -> dict[str, float]:
        """Calls per completed order, projected onto a whole traffic of ``consumed_events``
        events with ``completions`` completions, from the rates this consumer measured
        (it may have stopped early: see BASELINE_COMPLETIONS in bench/cost.py)."""
        per_message = {k: v / self.messages for k, v in self.calls.items() if k[0] == "sqs"}
        per_completion = {
            k: v / self.completed for k, v in self.calls.items() if k[1] in ("Query", "PutEvents")
        }
        projected: dict[str, float] = {}
        for (service, operation), rate in per_message.items():
            projected[f"{service}.{operation}"] = rate * consumed_events / completions
        for (service, operation), rate in per_completion.items():
            projected[f"{service}.{operation}"] = rate
        # One write per stored half: every submission and every completion of the traffic.
        projected["dynamodb.PutItem"] = stored_halves / completions
        return {k: round(v, 3) for k, v in sorted(projected.items())}

    async def drain(self, max_completions: int | None = None) -> None:
        """Consume until the queue is empty (or after ``max_completions`` completions)."""
        sqs = self.clients.sqs
        while max_completions is None or self.completed < max_completions:
            self.calls["sqs", "ReceiveMessage"] += 1
            response = await sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = response.get("Messages", [])
            self.messages += len(messages)
            if not messages:
                return
            for message in messages:
                await self.handle(message["Body"])
            self.calls["sqs", "DeleteMessageBatch"] += 1
            await sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )

    async def handle(self, body: str) -> None:
        try:
            event = parse_body(body)
        except PoisonMessageError:
            return
        if event is None or event.role is Role.CANCELLED:
            return
        ddb = self.clients.dynamodb
        if event.role is Role.SUBMITTED:
            assert event.drink is not None
            self.drink_of[event.order_id] = event.drink
        drink = self.drink_of.get(event.order_id)
        if drink is None:
            return  # the original failed on a completion it had not seen submitted
        self.calls["dynamodb", "PutItem"] += 1
        self.stored += 1
        self.write_units += 1
        await ddb.put_item(
            TableName=TABLE, Item=order_item(drink, event.order_id, event.role.value, event.time)
        )
        if event.role is not Role.COMPLETED:
            return
        self.completed += 1
        halves: dict[str, dict[str, int]] = {}
        kwargs: dict[str, Any] = {
            "TableName": TABLE,
            "KeyConditionExpression": "drink = :d",
            "ExpressionAttributeValues": {":d": {"S": drink}},
        }
        while True:
            self.calls["dynamodb", "Query"] += 1
            page = await ddb.query(**kwargs)
            items = page.get("Items", [])
            page_bytes = sum(item_bytes(i) for i in items)
            self.read_units += max(1, -(-page_bytes // 4096)) * 0.5  # eventually consistent
            for item in items:
                halves.setdefault(item["orderId"]["S"], {})[item["role"]["S"]] = int(
                    item["at"]["N"]
                )
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        done = sorted(
            (h["completed"], oid, h["completed"] - h["submitted"])
            for oid, h in halves.items()
            if "completed" in h and "submitted" in h
        )[-self.window :]
        average = sum(w for _, _, w in done) / len(done)
        self.calls["events", "PutEvents"] += 1
        await self.clients.events.put_events(
            Entries=[
                {
                    "EventBusName": self.bus,
                    "Source": "baseline",
                    "DetailType": "OrderManager.DrinkAverageTime",
                    "Detail": json.dumps({"drink": drink, "duration": average, "eventId": ""}),
                }
            ]
        )


async def seed_history(clients: Any, orders: list[tuple[str, str, int, int]]) -> int:
    """Write a history of (order id, drink, submitted, completed) as the original stored it."""
    items = []
    for order_id, drink, submitted, completed in orders:
        items.append(order_item(drink, order_id, "submitted", submitted))
        items.append(order_item(drink, order_id, "completed", completed))
    for start in range(0, len(items), 25):
        await clients.dynamodb.batch_write_item(
            RequestItems={TABLE: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        )
    return len(items)


async def create_table(clients: Any) -> None:
    """The original's table: all halves of a drink under one partition key."""
    await clients.dynamodb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[
            {"AttributeName": "drink", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "drink", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


async def provision(clients: Any, settings: Any) -> str:
    """The original design's queue (fed by a rule with the service's consumed pattern)
    and table, beside the service's on the same emulator; the queue's URL."""
    url, arn = await ensure_queue(clients.sqs, QUEUE, {})
    await ensure_rule(
        clients,
        settings.event_bus,
        QUEUE,
        consumed_event_pattern(settings.source),
        arn,
        url,
    )
    await create_table(clients)
    return url
