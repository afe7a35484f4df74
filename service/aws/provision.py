"""Idempotent provisioning of the bus, rule, queue, dead-letter queue and table (and, with
``WAIT_TIMES_BOARD_ENABLED``, the wait board's own queue, dead-letter queue and rule)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from botocore.exceptions import ClientError

from service.aws.clients import AwsClients
from service.aws.errors import error_code
from service.core.consumed import consumed_event_pattern
from service.core.published import published_event_pattern
from service.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType

log = structlog.get_logger(__name__)

DLQ_RETENTION_SECONDS = 14 * 24 * 3600
QUEUE_RETENTION_SECONDS = 4 * 24 * 3600


@dataclass(frozen=True)
class Provisioned:
    """What provisioning created or found."""

    bus_arn: str
    rule_arn: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    table_name: str
    capture_queue_url: str | None = None
    board_queue_url: str | None = None


async def provision(
    settings: Settings, clients: AwsClients, *, capture_queue: str | None = None
) -> Provisioned:
    """Create whatever is missing; running it twice changes nothing.

    ``capture_queue``: also route the service's own events (DrinkAverageTime and
    WaitEstimate: ``published_event_pattern``) to a queue of that name (the demo and the
    tests read them there).
    """
    bus_arn = await ensure_bus(clients.events, settings.event_bus)
    (queue_url, queue_arn), (dlq_url, dlq_arn) = await ensure_queue_with_dlq(
        settings, clients, settings.queue_name, settings.dlq_name
    )
    rule_arn = await ensure_rule(
        clients,
        settings.event_bus,
        settings.rule_name,
        consumed_event_pattern(settings.source, settings.completion_event),
        queue_arn,
        queue_url,
    )
    await ensure_table(clients.dynamodb, settings.table_name)
    board_url = await ensure_board_queue(settings, clients) if settings.board_enabled else None
    capture_url = None
    if capture_queue:
        capture_url, capture_arn = await ensure_queue(clients.sqs, capture_queue, {})
        await ensure_rule(
            clients,
            settings.event_bus,
            f"{capture_queue}-averages",
            published_event_pattern(settings.source),
            capture_arn,
            capture_url,
            description="wait-times: the published averages and estimates, captured",
        )
    log.info(
        "provisioned",
        bus=settings.event_bus,
        rule=settings.rule_name,
        queue=settings.queue_name,
        dlq=settings.dlq_name,
        table=settings.table_name,
        capture_queue=capture_queue,
        board_queue=settings.board_queue_name if settings.board_enabled else None,
    )
    return Provisioned(
        bus_arn,
        rule_arn,
        queue_url,
        queue_arn,
        dlq_url,
        dlq_arn,
        settings.table_name,
        capture_url,
        board_url,
    )


async def ensure_queue_with_dlq(
    settings: Settings, clients: AwsClients, name: str, dlq_name: str
) -> tuple[tuple[str, str], tuple[str, str]]:
    """A queue (long polling, the worker's visibility timeout, encrypted) and its dead-letter
    queue, the queue redriving to it after ``max_receive_count`` receives; each (URL, ARN)."""
    dlq_url, dlq_arn = await ensure_queue(
        clients.sqs,
        dlq_name,
        {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS), "SqsManagedSseEnabled": "true"},
    )
    url, arn = await ensure_queue(
        clients.sqs,
        name,
        {
            "VisibilityTimeout": str(settings.visibility_timeout_seconds),
            "ReceiveMessageWaitTimeSeconds": str(settings.receive_wait_seconds),
            "MessageRetentionPeriod": str(QUEUE_RETENTION_SECONDS),
            "SqsManagedSseEnabled": "true",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count}
            ),
        },
    )
    return (url, arn), (dlq_url, dlq_arn)


async def ensure_board_queue(settings: Settings, clients: AwsClients) -> str:
    """The board's own queue (with its DLQ and redrive policy) and the rule feeding it the
    published events; returns its URL. One board per queue: each board deletes what it
    reads."""
    (url, arn), _ = await ensure_queue_with_dlq(
        settings, clients, settings.board_queue_name, f"{settings.board_queue_name}-dlq"
    )
    await ensure_rule(
        clients,
        settings.event_bus,
        settings.board_rule_name,
        published_event_pattern(settings.source),
        arn,
        url,
        description="wait-times: the published averages and estimates, for the wait board",
    )
    return url


async def ensure_bus(events: EventBridgeClient, name: str) -> str:
    """The bus ARN, creating the bus if it is missing."""
    try:
        return str((await events.describe_event_bus(Name=name))["Arn"])
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
    log.info("creating_event_bus", bus=name)
    return str((await events.create_event_bus(Name=name))["EventBusArn"])


async def ensure_queue(
    sqs: SQSClient, name: str, attributes: Mapping[QueueAttributeNameType, str]
) -> tuple[str, str]:
    """URL and ARN of a standard queue, created or brought to ``attributes``."""
    try:
        url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
    except ClientError as exc:
        if error_code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        log.info("creating_queue", queue=name)
        url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    else:
        if attributes:
            await sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    return str(url), str(arn)


async def ensure_rule(
    clients: AwsClients,
    bus: str,
    rule_name: str,
    pattern: dict[str, Any],
    queue_arn: str,
    queue_url: str,
    *,
    description: str = "wait-times: order events for the average wait per drink",
) -> str:
    """A rule on ``bus`` with ``pattern`` delivering to a queue, and the queue policy allowing it.

    PutRule creates the rule or brings an existing one to ``pattern`` (a changed
    WAIT_TIMES_COMPLETION_EVENT takes effect on the next ``provision``).
    """
    rule_arn = str(
        (
            await clients.events.put_rule(
                Name=rule_name,
                EventBusName=bus,
                EventPattern=json.dumps(pattern),
                State="ENABLED",
                Description=description,
            )
        )["RuleArn"]
    )
    await clients.events.put_targets(
        Rule=rule_name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}]
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowRuleToSend",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }
    await clients.sqs.set_queue_attributes(
        QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)}
    )
    return rule_arn


async def ensure_table(dynamodb: DynamoDBClient, name: str) -> None:
    """The table (on demand, key ``pk``), active, with TTL on ``expiresAt``."""
    try:
        await dynamodb.describe_table(TableName=name)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        log.info("creating_table", table=name)
        await dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    for _ in range(120):
        status = (await dynamodb.describe_table(TableName=name))["Table"]["TableStatus"]
        if status == "ACTIVE":
            break
        await anyio.sleep(1)
    ttl = await dynamodb.describe_time_to_live(TableName=name)
    if ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        await dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"},
        )
