"""The values in force when the board starts, read from wait-times' own table (read-only).

A board started after the worker would otherwise be blank until each key changes again.
The table holds what the worker published (``service.aws.items``): a window item's view
is the average of its (tenant, drink), at the window's version; a tenant item's published
view (``pv``) is the estimate the worker published at the tenant's version, written with
the tenant's state in the same put. The board reads those views only
(``items.published_average``, ``items.published_estimate``): it runs no model and
decodes none of the worker's private state (a window's live records and settled entries,
a tenant's orders). Both are the versions the worker published them at, so the
highest-version rule of ``BoardState`` applies to them and to the events that follow
alike. A tenant item written before the view was kept shows nothing until the tenant's
estimate changes. One paginated Scan, filtered to the window and tenant items.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from service.aws import items
from service.aws.errors import call
from service.core.published import Published, average_event, estimate_detail
from service.retry import until_done

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient


log = structlog.get_logger(__name__)


async def current_values(
    client: DynamoDBClient, table: str, *, window_size: int
) -> list[Published]:
    """Every average and estimate the table holds now (a Scan: DynamoDB's ``Scan`` only)."""
    found: list[Published] = []
    start: dict[str, Any] | None = None
    while True:
        request: dict[str, Any] = {
            "TableName": table,
            "FilterExpression": "begins_with(#pk, :w) OR begins_with(#pk, :t)",
            "ExpressionAttributeNames": {"#pk": items.KEY},
            "ExpressionAttributeValues": {
                ":w": {"S": items.WINDOW_PREFIX},
                ":t": {"S": items.TENANT_PREFIX},
            },
        }
        if start:
            request["ExclusiveStartKey"] = start
        page = await until_done(
            "board.scan", partial(call, "dynamodb.Scan", partial(client.scan, **request))
        )
        for item in page.get("Items", []):
            value = value_of(item, window_size)
            if value is not None:
                found.append(value)
        start = page.get("LastEvaluatedKey")
        if not start:
            return found


def value_of(item: items.Item, window_size: int) -> Published | None:
    """The published value a window or tenant item stands for (None: nothing published)."""
    pk = str(item.get(items.KEY, {}).get("S", ""))
    try:
        if pk.startswith(items.WINDOW_PREFIX):
            key, view, version, updated = items.published_average(item, window_size)
            if view.duration is None:
                return None
            return average_event(key, view, version, window_size, updated or datetime.now(UTC))
        published = items.published_estimate(item)
        return None if published is None else estimate_detail(*published)
    except (KeyError, ValueError, TypeError) as exc:
        # An item this version cannot read: the board shows the key once it changes.
        log.warning(
            "board_item_unreadable", pk=pk[:200], error=f"{type(exc).__name__}: {exc}"[:200]
        )
        return None
