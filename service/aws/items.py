"""The DynamoDB item layout, declared once: keys, attribute names, and their codecs.

One table, partition key ``pk`` only, two kinds of item:

| item | ``pk`` | attribute | type | meaning |
|---|---|---|---|---|
| order record | ``O#<orderId>`` | ``tn`` | S | tenant of the first stored submission |
| | | ``dr`` | S | drink of the first stored submission |
| | | ``st`` | N | submission time (epoch seconds) |
| | | ``ct`` | N | completion time (epoch seconds) |
| | | ``cx`` | BOOL | cancelled (sticky) |
| | | ``expiresAt`` | N | DynamoDB TTL: when the record may be garbage-collected |
| window | ``W#["<tenant>","<drink>"]`` | ``tenant``, ``drink`` | S | the key, readable |
| | | ``v`` | N | version: rises with every change |
| | | ``e`` | S | entries, compact JSON ``[[completedAt, orderId, wait, cancelled], ...]`` |
| | | ``updatedAt`` | S | RFC 3339, when it was written |

An order record's update uses ``if_not_exists`` for every half it carries: the same join
as ``OrderRecord.merge``, so concurrent and repeated writes commute. A window is written
with a conditional put on ``v``; JSON keeps any tenant or drink name unambiguous in ``pk``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from service.core.pairing import OrderRecord
from service.core.window import Window, WindowEntry, WindowKey

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.type_defs import (
        AttributeValueTypeDef,
        PutTypeDef,
        UpdateTypeDef,
    )

    Item = Mapping[str, AttributeValueTypeDef]
else:
    Item = Mapping[str, Any]

KEY: Final = "pk"
ORDER_PREFIX: Final = "O#"
WINDOW_PREFIX: Final = "W#"
TENANT: Final = "tn"
DRINK: Final = "dr"
SUBMITTED_AT: Final = "st"
COMPLETED_AT: Final = "ct"
CANCELLED: Final = "cx"
EXPIRES_AT: Final = "expiresAt"
WINDOW_TENANT: Final = "tenant"
WINDOW_DRINK: Final = "drink"
VERSION: Final = "v"
ENTRIES: Final = "e"
UPDATED_AT: Final = "updatedAt"


def order_pk(order_id: str) -> str:
    """Partition key of an order record."""
    return ORDER_PREFIX + order_id


def window_pk(key: WindowKey) -> str:
    """Partition key of a window."""
    return WINDOW_PREFIX + json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def order_update(record: OrderRecord, table: str, expires_at: int) -> UpdateTypeDef:
    """The update joining what a record knows into the stored record (``if_not_exists``
    keeps the first submission and completion, a cancellation is sticky)."""
    clauses = []
    values: dict[str, AttributeValueTypeDef] = {":exp": {"N": str(expires_at)}}
    if record.submitted_at is not None:
        clauses += [f"{name} = if_not_exists({name}, :{name})" for name in (TENANT, DRINK)]
        clauses.append(f"{SUBMITTED_AT} = if_not_exists({SUBMITTED_AT}, :{SUBMITTED_AT})")
        values[f":{TENANT}"] = {"S": record.tenant or ""}
        values[f":{DRINK}"] = {"S": record.drink or ""}
        values[f":{SUBMITTED_AT}"] = {"N": str(record.submitted_at)}
    if record.completed_at is not None:
        clauses.append(f"{COMPLETED_AT} = if_not_exists({COMPLETED_AT}, :{COMPLETED_AT})")
        values[f":{COMPLETED_AT}"] = {"N": str(record.completed_at)}
    if record.cancelled:
        clauses.append(f"{CANCELLED} = :yes")
        values[":yes"] = {"BOOL": True}
    clauses.append(f"{EXPIRES_AT} = if_not_exists({EXPIRES_AT}, :exp)")
    return {
        "TableName": table,
        "Key": {KEY: {"S": order_pk(record.order_id)}},
        "UpdateExpression": "SET " + ", ".join(clauses),
        "ExpressionAttributeValues": values,
    }


def record_from_item(order_id: str, item: Item) -> OrderRecord:
    """An OrderRecord from a stored order item (an empty item: nothing known yet)."""

    def number(name: str) -> int | None:
        return int(item[name]["N"]) if name in item else None

    return OrderRecord(
        order_id=order_id,
        tenant=item[TENANT]["S"] if TENANT in item else None,
        drink=item[DRINK]["S"] if DRINK in item else None,
        submitted_at=number(SUBMITTED_AT),
        completed_at=number(COMPLETED_AT),
        cancelled=bool(item.get(CANCELLED, {}).get("BOOL", False)),
        expires_at=number(EXPIRES_AT),
    )


def encode_entries(window: Window) -> str:
    """Compact JSON of a window's entries."""
    return json.dumps(
        [[e.completed_at, e.order_id, e.wait, int(e.cancelled)] for e in window.entries],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_entries(text: str) -> list[WindowEntry]:
    """Inverse of ``encode_entries``."""
    return [WindowEntry(int(c), str(o), int(w), bool(x)) for c, o, w, x in json.loads(text)]


def window_put(
    key: WindowKey, window: Window, version: int, table: str, *, expected: int
) -> PutTypeDef:
    """A conditional put of a window's new version: only over version ``expected`` (or none)."""
    tenant, drink = key
    return {
        "TableName": table,
        "Item": {
            KEY: {"S": window_pk(key)},
            WINDOW_TENANT: {"S": tenant},
            WINDOW_DRINK: {"S": drink},
            VERSION: {"N": str(version)},
            ENTRIES: {"S": encode_entries(window)},
            UPDATED_AT: {"S": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        },
        "ConditionExpression": f"attribute_not_exists({KEY}) OR {VERSION} = :v",
        "ExpressionAttributeValues": {":v": {"N": str(expected)}},
    }


def window_from_item(item: Item | None, window_size: int) -> tuple[WindowKey, Window, int] | None:
    """A stored window item's key, window and version (None for no item)."""
    if not item:
        return None
    window = Window(window_size).merge(decode_entries(item[ENTRIES]["S"]))
    return (item[WINDOW_TENANT]["S"], item[WINDOW_DRINK]["S"]), window, int(item[VERSION]["N"])
