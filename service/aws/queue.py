"""SQS adapters: the OrderQueue port (receives: long-poll ReceiveMessage; deletes and
visibility changes, ten entries per DeleteMessageBatch or ChangeMessageVisibilityBatch)
and the QueueDepthSource port (a queue's depth, for the queue and its dead-letter queue).

Each request is made once (botocore's own two attempts inside); failures are raised as the
service's errors and the worker decides whether to try again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import structlog

from service.aws.errors import call
from service.errors import WaitTimesError
from service.ports import SQS_BATCH_LIMIT, Message, QueueDepth

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = structlog.get_logger(__name__)


class SqsQueue:
    """The worker's view of its queue."""

    def __init__(
        self, client: SQSClient, queue_url: str, *, visibility_timeout: int, wait_seconds: int
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.visibility_timeout = visibility_timeout
        self.wait_seconds = wait_seconds

    async def receive(self, wait_seconds: int | None = None) -> list[Message]:
        """One receive: one ReceiveMessage, long-polling for up to ten messages."""
        response = await call(
            "sqs.ReceiveMessage",
            partial(
                self.client.receive_message,
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=SQS_BATCH_LIMIT,
                WaitTimeSeconds=self.wait_seconds if wait_seconds is None else wait_seconds,
                VisibilityTimeout=self.visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ),
        )
        return [
            Message(
                message_id=raw["MessageId"],
                receipt_handle=raw["ReceiptHandle"],
                body=raw.get("Body", ""),
                receive_count=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for raw in response.get("Messages", [])
        ]

    async def is_drained(self) -> bool:
        """No message waiting and none in flight anywhere (used by burst mode)."""
        depth = await queue_depth(self.client, self.queue_url)
        return depth.visible == 0 and depth.in_flight == 0

    async def delete(self, messages: Sequence[Message]) -> int:
        """Delete messages (a flush's), ten per DeleteMessageBatch; returns how many SQS
        confirmed.

        Receipt handles are deduplicated and entry ids are positions, so the same message
        twice in one flush never trips ``BatchEntryIdsNotDistinct``.
        """
        messages = distinct(messages)
        deleted = 0
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            chunk = messages[start : start + SQS_BATCH_LIMIT]
            response = await call(
                "sqs.DeleteMessageBatch",
                partial(
                    self.client.delete_message_batch,
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                        for i, m in enumerate(chunk)
                    ],
                ),
            )
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                # A stale receipt handle means another receiver has the message now;
                # its effect is already durable, so the redelivery is a harmless no-op.
                log.warning(
                    "delete_failed",
                    message_id=chunk[int(failure["Id"])].message_id,
                    code=failure.get("Code"),
                )
        return deleted

    async def change_visibility(self, messages: Sequence[Message], seconds: int) -> None:
        """Set the visibility timeout of messages (a flush's heartbeat, or 0 to release
        them), ten per ChangeMessageVisibilityBatch."""
        messages = distinct(messages)
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            chunk = messages[start : start + SQS_BATCH_LIMIT]
            response = await call(
                "sqs.ChangeMessageVisibilityBatch",
                partial(
                    self.client.change_message_visibility_batch,
                    QueueUrl=self.queue_url,
                    Entries=[
                        {
                            "Id": str(i),
                            "ReceiptHandle": m.receipt_handle,
                            "VisibilityTimeout": seconds,
                        }
                        for i, m in enumerate(chunk)
                    ],
                ),
            )
            for failure in response.get("Failed", []):
                log.debug("visibility_change_failed", code=failure.get("Code"))


def distinct(messages: Sequence[Message]) -> list[Message]:
    """Messages with distinct receipt handles, in their order (SQS refuses repeats in one
    DeleteMessageBatch or ChangeMessageVisibilityBatch)."""
    return list({m.receipt_handle: m for m in messages}.values())


async def queue_depth(client: SQSClient, queue_url: str) -> QueueDepth:
    """A queue's approximate depth: one GetQueueAttributes."""
    response = await call(
        "sqs.GetQueueAttributes",
        partial(
            client.get_queue_attributes,
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        ),
    )
    attributes = response.get("Attributes", {})
    return QueueDepth(
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
    )


class SqsDepth:
    """The QueueDepthSource port on one SQS queue (the worker's queue or its DLQ)."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    async def depth(self) -> QueueDepth:
        """The queue's depth now (one GetQueueAttributes)."""
        return await queue_depth(self.client, self.queue_url)


@dataclass(frozen=True, slots=True)
class ResolvedQueue:
    """The worker's queue as found at start."""

    url: str
    max_receive_count: int | None  # of its redrive policy; None without one
    dead_letter_url: str | None  # None: no redrive policy, or its DLQ could not be looked up


async def resolve_queue(client: SQSClient, name: str) -> ResolvedQueue:
    """A queue by name: its URL, and from its redrive policy the maxReceiveCount and the URL
    of its dead-letter queue (named by the last part of ``deadLetterTargetArn``).

    The dead-letter queue is only watched (its depth is exported), so a lookup AWS refuses
    (missing queue, a task role that does not grant ``sqs:GetQueueUrl`` on it) is logged
    and leaves it unwatched; only a retriable failure is raised, to be tried again.
    """
    url = (await call("sqs.GetQueueUrl", partial(client.get_queue_url, QueueName=name)))["QueueUrl"]
    attributes = await call(
        "sqs.GetQueueAttributes",
        partial(client.get_queue_attributes, QueueUrl=url, AttributeNames=["RedrivePolicy"]),
    )
    policy = attributes.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        return ResolvedQueue(url, None, None)
    redrive = json.loads(policy)
    dead_letter_name = str(redrive["deadLetterTargetArn"]).rsplit(":", 1)[-1]
    try:
        found = await call(
            "sqs.GetQueueUrl", partial(client.get_queue_url, QueueName=dead_letter_name)
        )
    except WaitTimesError as exc:
        if exc.retriable:
            raise
        log.warning(
            "dead_letter_queue_not_watched",
            queue=dead_letter_name,
            error=str(exc)[:300],
            fix="grant the task role sqs:GetQueueUrl and sqs:GetQueueAttributes on it",
        )
        return ResolvedQueue(url, int(redrive["maxReceiveCount"]), None)
    return ResolvedQueue(url, int(redrive["maxReceiveCount"]), found["QueueUrl"])
