"""SQS adapter: long-poll receive, batched deletes, visibility heartbeats."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from service.aws.retry import call_with_retry

log = structlog.get_logger(__name__)

SQS_BATCH_LIMIT = 10


@dataclass(frozen=True, slots=True)
class Message:
    """One received SQS message."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class SqsQueue:
    """The worker's view of its queue."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        visibility_timeout: int,
        wait_seconds: int,
        on_retry: Callable[[str, BaseException], None] | None = None,
        on_success: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.visibility_timeout = visibility_timeout
        self.wait_seconds = wait_seconds
        self._on_retry = on_retry
        self._on_success = on_success

    async def _call(self, operation: str, max_attempts: int | None = 8, **kwargs: Any) -> Any:
        method = getattr(self.client, operation)
        return await call_with_retry(
            f"sqs.{operation}",
            lambda: method(QueueUrl=self.queue_url, **kwargs),
            max_attempts=max_attempts,
            on_retry=self._on_retry,
            on_success=self._on_success,
        )

    async def receive(self, wait_seconds: int | None = None) -> list[Message]:
        """Long-poll for up to ten messages; retries until the queue answers."""
        response = await self._call(
            "receive_message",
            max_attempts=None,
            MaxNumberOfMessages=SQS_BATCH_LIMIT,
            WaitTimeSeconds=self.wait_seconds if wait_seconds is None else wait_seconds,
            VisibilityTimeout=self.visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
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
        response = await self._call(
            "get_queue_attributes",
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response.get("Attributes", {})
        return (
            int(attributes.get("ApproximateNumberOfMessages", 0)) == 0
            and int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)) == 0
        )

    async def delete(self, messages: Sequence[Message]) -> int:
        """Delete messages in batches of ten; returns how many SQS confirmed.

        Receipt handles are deduplicated and entry ids are positions, so the same message
        twice in one batch never trips ``BatchEntryIdsNotDistinct``.
        """
        messages = distinct(messages)
        deleted = 0
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            chunk = messages[start : start + SQS_BATCH_LIMIT]
            response = await self._call(
                "delete_message_batch",
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)
                ],
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
        """Set the visibility timeout of messages (heartbeat, or 0 to release them)."""
        messages = distinct(messages)
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            chunk = messages[start : start + SQS_BATCH_LIMIT]
            response = await self._call(
                "change_message_visibility_batch",
                max_attempts=3,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                    for i, m in enumerate(chunk)
                ],
            )
            for failure in response.get("Failed", []):
                log.debug("visibility_change_failed", code=failure.get("Code"))


def distinct(messages: Sequence[Message]) -> list[Message]:
    """Messages with distinct receipt handles, in their order (SQS refuses repeats in a batch)."""
    return list({m.receipt_handle: m for m in messages}.values())


async def resolve_queue(client: Any, name: str, max_attempts: int = 8) -> tuple[str, int | None]:
    """The URL of a queue by name and the maxReceiveCount of its redrive policy, if any."""
    url = (
        await call_with_retry(
            "sqs.get_queue_url",
            lambda: client.get_queue_url(QueueName=name),
            max_attempts=max_attempts,
        )
    )["QueueUrl"]
    attributes = await call_with_retry(
        "sqs.get_queue_attributes",
        lambda: client.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]),
        max_attempts=max_attempts,
    )
    policy = attributes.get("Attributes", {}).get("RedrivePolicy")
    return url, int(json.loads(policy)["maxReceiveCount"]) if policy else None
