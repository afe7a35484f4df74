"""DynamoDB's batched requests, as the store makes them: consistent reads of up to 100
keys (``batch_get``) and conditional writes of new states (``write_conditionally``: one
PutItem, or TransactWriteItems of up to 100 items and 4 MB each).

Each request is made once (botocore's own two attempts inside); a failure is raised as
the service's error. A conditional write that loses a race is not an error: its keys are
handed back to be re-read (``service.core.rounds.drive_commit``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING

import anyio
import structlog

from service.aws.errors import call, cancellation_reasons
from service.backoff import CONTENTION
from service.errors import DependencyError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        AttributeValueTypeDef,
        PutTypeDef,
        TransactWriteItemTypeDef,
    )

    Item = Mapping[str, AttributeValueTypeDef]

log = structlog.get_logger(__name__)

MAX_UNPROCESSED_ROUNDS = 8  # asks for DynamoDB's UnprocessedKeys before it counts as a failure
TRANSACT_LIMIT = 100  # actions per TransactWriteItems
TRANSACT_BYTES = 3_500_000  # bytes per TransactWriteItems (DynamoDB's limit: 4 MB)
BATCH_GET_LIMIT = 100  # keys per BatchGetItem


async def batch_get(
    client: DynamoDBClient,
    table_name: str,
    pks: Iterable[str],
    count_items: Callable[[str, int], None],
    *,
    key: str,
) -> dict[str, Item]:
    """Strongly consistent BatchGetItem of distinct keys (the partition key ``key``:
    ``service.aws.items.KEY``); absent keys are left out.

    DynamoDB hands back what it could not read under load (UnprocessedKeys): those are
    asked for again after a short backoff, a bounded number of times.
    """
    pending = list(dict.fromkeys(pks))
    found: dict[str, Item] = {}
    rounds = 0
    while pending:
        chunk, pending = pending[:BATCH_GET_LIMIT], pending[BATCH_GET_LIMIT:]
        response = await call(
            "dynamodb.BatchGetItem",
            partial(
                client.batch_get_item,
                RequestItems={
                    table_name: {
                        "Keys": [{key: {"S": pk}} for pk in chunk],
                        "ConsistentRead": True,
                    }
                },
            ),
        )
        count_items("BatchGetItem", len(chunk))
        for item in response.get("Responses", {}).get(table_name, []):
            found[item[key]["S"]] = item
        unprocessed = response.get("UnprocessedKeys", {}).get(table_name)
        left = [k[key]["S"] for k in unprocessed["Keys"]] if unprocessed else []
        if left:
            if rounds >= MAX_UNPROCESSED_ROUNDS:
                raise DependencyError(
                    f"BatchGetItem left {len(left)} keys unprocessed {rounds} times",
                    operation="dynamodb.BatchGetItem",
                    code="UnprocessedKeys",
                )
            pending = left + pending
            await anyio.sleep(CONTENTION.delay(rounds))
            rounds += 1
    return found


async def write_conditionally(
    client: DynamoDBClient, puts: dict[str, PutTypeDef], count_items: Callable[[str, int], None]
) -> tuple[set[str], set[str]]:
    """Write new states conditionally: (keys written, keys to re-read), by ``pk``.

    One item: a conditional PutItem. Several: one TransactWriteItems per 100, which
    writes all of its items or none. A transaction cancelled because another one held
    an item is a lost race like a failed condition: its items are re-read and joined
    again. Cancelled for throttling, it is a retriable failure.
    """
    pks = list(puts)
    if len(pks) == 1:
        pk = pks[0]
        if await _put_one(client, puts[pk], count_items):
            return {pk}, set()
        return set(), {pk}
    written: set[str] = set()
    conflicted: set[str] = set()
    for chunk in _chunks(pks, puts):
        actions: list[TransactWriteItemTypeDef] = [{"Put": puts[pk]} for pk in chunk]
        try:
            await call(
                "dynamodb.TransactWriteItems",
                partial(client.transact_write_items, TransactItems=actions),
            )
        except DependencyError as exc:
            reasons = cancellation_reasons(exc)
            lost = {
                pk
                for pk, reason in zip(chunk, reasons, strict=False)
                if reason in {"ConditionalCheckFailed", "TransactionConflict"}
            }
            if exc.code != "TransactionCanceledException" or not lost:
                raise
            log.debug("window_transaction_cancelled", reasons=sorted(set(reasons)))
            conflicted |= lost
        else:
            count_items("TransactWriteItems", len(actions))
            written |= set(chunk)
    return written, conflicted


def _chunks(pks: list[str], puts: dict[str, PutTypeDef]) -> list[list[str]]:
    """The puts in transactions of at most ``TRANSACT_LIMIT`` items and
    ``TRANSACT_BYTES`` (DynamoDB's limits: 100 actions, 4 MB)."""
    chunks: list[list[str]] = [[]]
    size = 0
    for pk in pks:
        item = _put_bytes(puts[pk])
        if chunks[-1] and (len(chunks[-1]) >= TRANSACT_LIMIT or size + item > TRANSACT_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(pk)
        size += item
    return chunks


def _put_bytes(put: PutTypeDef) -> int:
    """An upper bound of a put item's size: the length of its text (binary values count
    up to four times: safe for a limit)."""
    return len(str(put["Item"]))


async def _put_one(
    client: DynamoDBClient, put: PutTypeDef, count_items: Callable[[str, int], None]
) -> bool:
    try:
        await call("dynamodb.PutItem", lambda: client.put_item(**put))
    except DependencyError as exc:
        if exc.code in {"ConditionalCheckFailedException", "TransactionConflictException"}:
            # Another writer got there first, or holds the item in a transaction now: a
            # lost race, re-read and joined again (``drive_commit``).
            log.debug("conditional_put_lost", code=exc.code)
            return False
        raise
    count_items("PutItem", 1)
    return True
