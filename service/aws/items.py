"""The DynamoDB item layout, declared once: keys, attribute names, and their codecs.

One table, partition key ``pk`` only, two kinds of item:

| item | ``pk`` | attribute | type | meaning |
|---|---|---|---|---|
| order record | ``O#<orderId>`` | ``sub`` | SS | every distinct submission, ``[time, tenant, drink]`` as JSON |
| | | ``cmp`` | NS | every distinct completion time (epoch seconds) |
| | | ``cx`` | BOOL | cancelled (sticky) |
| | | ``cxs`` | NS | every distinct cancellation time (epoch seconds) |
| | | ``an`` | S | anomaly kind, set once by the worker that first reported it |
| | | ``est`` | L | the estimate in force when its submission was first processed, ``[estimate, p90, tenant]`` (set once; items kept before the tenant was have two) |
| | | ``expiresAt`` | N | DynamoDB TTL; also the end of the order's horizon |
| window | ``W#["<tenant>","<drink>"]`` | ``tenant``, ``drink`` | S | the key, readable |
| | | ``v`` | N | version: rises with every write |
| | | ``e`` | S | the window (the view), ``[[completedAt, orderId, wait], ...]`` |
| | | ``o`` | S | live orders, ``{orderId: [submissions, completions, cancelled, expiresAt]}`` |
| | | ``s`` | S | settled entries (top N of orders that can no longer change) |
| | | ``updatedAt`` | S | RFC 3339, when it was written |
| tenant | ``T#<tenant>`` | ``tenant`` | S | the tenant, readable |
| | | ``v`` | N | version: rises with every write |
| | | ``to`` | B | the tenant's orders (``TenantState``; another tenant's: a tombstone), zlib-compressed JSON ``[[orderId, submittedAt, tenant, drink, completedAt, cancelledAt, cancelled], ...]`` |
| | | ``pv`` | S | the published view: the estimate the worker published (or would: unchanged in whole seconds) at ``v``, ``[asOf, openOrders, [[drink, estimate, p90], ...]]``; absent while the tenant has no estimate, and on items written before it was kept |
| | | ``updatedAt`` | S | RFC 3339, when it was written |

An order record's update only adds to sets (``ADD``) and sets sticky flags: every write
commutes with every other and none can fail a transaction, however many workers and
redeliveries write the same order. The window item holds the key's state (``o`` and
``s``, see ``service.core.pairing.KeyState``) and is written with a conditional put on
``v``; so is a tenant item. The worker computes a tenant's estimate again from its orders
when it reads the item; the board reads the published view (``pv``) and nothing else of it.
Of a window item the board reads the key, the view (``e``: the window the worker published,
or would have had it changed, at ``v``), ``v`` and ``updatedAt`` (``published_average``),
never ``o`` or ``s``.
Records written before this layout (``tn``/``dr``/``st``/``ct``) and windows
without ``o`` are still read.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from service.core.estimate import DrinkEstimate, Estimate
from service.core.pairing import InForce, KeyState, OrderRecord, Submission, top
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
TENANT_PREFIX: Final = "T#"
SUBMISSIONS: Final = "sub"
COMPLETIONS: Final = "cmp"
CANCELLED: Final = "cx"
CANCELLATIONS: Final = "cxs"
ANOMALY: Final = "an"
IN_FORCE: Final = "est"
EXPIRES_AT: Final = "expiresAt"
LEGACY_TENANT: Final = "tn"
LEGACY_DRINK: Final = "dr"
LEGACY_SUBMITTED_AT: Final = "st"
LEGACY_COMPLETED_AT: Final = "ct"
WINDOW_TENANT: Final = "tenant"
WINDOW_DRINK: Final = "drink"
VERSION: Final = "v"
ENTRIES: Final = "e"
LIVE: Final = "o"
SETTLED: Final = "s"
UPDATED_AT: Final = "updatedAt"
TENANT: Final = "tenant"
TENANT_ORDERS: Final = "to"
TENANT_VIEW: Final = "pv"


def order_pk(order_id: str) -> str:
    """Partition key of an order record."""
    return ORDER_PREFIX + order_id


def window_pk(key: WindowKey) -> str:
    """Partition key of a window."""
    return WINDOW_PREFIX + json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def tenant_pk(tenant: str) -> str:
    """Partition key of a tenant's state."""
    return TENANT_PREFIX + tenant


def _submission_text(half: Submission) -> str:
    return json.dumps(list(half), ensure_ascii=False, separators=(",", ":"))


def order_update(record: OrderRecord, table: str, expires_at: int) -> UpdateTypeDef:
    """The update adding what a record knows to the stored record: set unions (``ADD`` to
    the submissions, completions and cancellation times), a sticky flag, the expiry and
    the estimate in force once."""
    # Names go through placeholders: DynamoDB reserves hundreds of words.
    names = {"#exp": EXPIRES_AT}
    adds = []
    sets = ["#exp = if_not_exists(#exp, :exp)"]
    values: dict[str, AttributeValueTypeDef] = {":exp": {"N": str(expires_at)}}
    if record.submissions:
        names["#sub"] = SUBMISSIONS
        adds.append("#sub :s")
        values[":s"] = {"SS": sorted(_submission_text(half) for half in record.submissions)}
    if record.completions:
        names["#cmp"] = COMPLETIONS
        adds.append("#cmp :c")
        values[":c"] = {"NS": sorted(str(at) for at in record.completions)}
    if record.cancelled:
        names["#cx"] = CANCELLED
        sets.append("#cx = :yes")
        values[":yes"] = {"BOOL": True}
    if record.cancellations:
        names["#cxs"] = CANCELLATIONS
        adds.append("#cxs :x")
        values[":x"] = {"NS": sorted(str(at) for at in record.cancellations)}
    if record.in_force is not None:
        names["#est"] = IN_FORCE
        sets.append("#est = if_not_exists(#est, :est)")
        told = record.in_force
        kept: list[AttributeValueTypeDef] = [{"N": repr(told.estimate)}, {"N": repr(told.p90)}]
        if told.tenant is not None:
            kept.append({"S": told.tenant})
        values[":est"] = {"L": kept}
    expression = "SET " + ", ".join(sets)
    if adds:
        expression += " ADD " + ", ".join(adds)
    return {
        "TableName": table,
        "Key": {KEY: {"S": order_pk(record.order_id)}},
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def anomaly_mark(order_id: str, kind: str, table: str) -> UpdateTypeDef:
    """Set the anomaly mark once: the condition fails for every worker but the first."""
    return {
        "TableName": table,
        "Key": {KEY: {"S": order_pk(order_id)}},
        "UpdateExpression": "SET #an = :kind",
        "ConditionExpression": "attribute_not_exists(#an)",
        "ExpressionAttributeNames": {"#an": ANOMALY},
        "ExpressionAttributeValues": {":kind": {"S": kind}},
    }


def record_from_item(order_id: str, item: Item) -> OrderRecord:
    """An OrderRecord from a stored order item (an empty item: nothing known yet)."""
    submissions = {
        (int(t), str(tenant), str(drink))
        for t, tenant, drink in (
            json.loads(text) for text in item.get(SUBMISSIONS, {}).get("SS", ())
        )
    }
    completions = {int(n) for n in item.get(COMPLETIONS, {}).get("NS", ())}
    if LEGACY_SUBMITTED_AT in item:
        tenant = item.get(LEGACY_TENANT, {}).get("S", "")
        drink = item.get(LEGACY_DRINK, {}).get("S", "")
        submissions.add((int(item[LEGACY_SUBMITTED_AT]["N"]), tenant, drink))
    if LEGACY_COMPLETED_AT in item:
        completions.add(int(item[LEGACY_COMPLETED_AT]["N"]))
    return OrderRecord(
        order_id,
        tuple(sorted(submissions)),
        tuple(sorted(completions)),
        bool(item.get(CANCELLED, {}).get("BOOL", False)),
        int(item[EXPIRES_AT]["N"]) if EXPIRES_AT in item else None,
        ANOMALY in item,
        tuple(sorted(int(n) for n in item.get(CANCELLATIONS, {}).get("NS", ()))),
        _in_force(item),
    )


def _in_force(item: Item) -> InForce | None:
    values = item.get(IN_FORCE, {}).get("L")
    if not values or len(values) not in (2, 3):
        return None
    tenant = values[2].get("S") if len(values) == 3 else None  # (kept before the tenant was)
    return InForce(float(values[0]["N"]), float(values[1]["N"]), tenant)


def encode_entries(entries: Iterable[WindowEntry]) -> str:
    """Compact JSON of window entries."""
    return json.dumps(
        [[e.completed_at, e.order_id, e.wait] for e in entries],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_entries(text: str) -> list[WindowEntry]:
    """Inverse of ``encode_entries``; an entry of the old layout marked cancelled is dropped
    (a cancelled order no longer holds a slot)."""
    return [
        WindowEntry(int(row[0]), str(row[1]), int(row[2]))
        for row in json.loads(text)
        if len(row) < 4 or not row[3]
    ]


def encode_live(live: Mapping[str, OrderRecord]) -> str:
    """Compact JSON of a key's live records."""
    return json.dumps(
        {
            order_id: [
                sorted(record.submissions),
                sorted(record.completions),
                int(record.cancelled),
                record.expires_at,
            ]
            for order_id, record in sorted(live.items())
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_live(text: str) -> dict[str, OrderRecord]:
    """Inverse of ``encode_live``."""
    return {
        order_id: OrderRecord(
            order_id,
            tuple(sorted((int(t), str(tenant), str(drink)) for t, tenant, drink in subs)),
            tuple(sorted(int(c) for c in cmps)),
            bool(cancelled),
            None if expires is None else int(expires),
        )
        for order_id, (subs, cmps, cancelled, expires) in json.loads(text).items()
    }


def window_put(
    state: KeyState, view: Window, version: int, table: str, *, expected: int
) -> PutTypeDef:
    """A conditional put of a key's new state: only over version ``expected`` (or none)."""
    tenant, drink = state.key
    return {
        "TableName": table,
        "Item": {
            KEY: {"S": window_pk(state.key)},
            WINDOW_TENANT: {"S": tenant},
            WINDOW_DRINK: {"S": drink},
            VERSION: {"N": str(version)},
            ENTRIES: {"S": encode_entries(view.entries)},
            LIVE: {"S": encode_live(state.live)},
            SETTLED: {"S": encode_entries(state.settled)},
            UPDATED_AT: {"S": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        },
        "ConditionExpression": f"attribute_not_exists({KEY}) OR {VERSION} = :v",
        "ExpressionAttributeValues": {":v": {"N": str(expected)}},
    }


def window_from_item(item: Item | None, window_size: int) -> tuple[KeyState, Window, int] | None:
    """A stored window item's key state, view and version (None for no item).

    A window of the old layout (no ``o``) becomes settled entries: it can no longer change.
    """
    if not item:
        return None
    key = _window_key(item)
    view = _window_view(item, window_size)
    if LIVE not in item:
        return KeyState(key, window_size, {}, view.entries), view, int(item[VERSION]["N"])
    state = KeyState(
        key,
        window_size,
        decode_live(item[LIVE]["S"]),
        top(decode_entries(item[SETTLED]["S"]), window_size),
    )
    return state, view, int(item[VERSION]["N"])


def _window_key(item: Item) -> WindowKey:
    return item[WINDOW_TENANT]["S"], item[WINDOW_DRINK]["S"]


def _window_view(item: Item, window_size: int) -> Window:
    """The window a window item keeps as its view (``e``)."""
    return Window(window_size, top(decode_entries(item[ENTRIES]["S"]), window_size))


class PublishedAverage(NamedTuple):
    """A window item's published view: the window the worker published (or would have,
    had it changed) at ``version``, and when the item was written (None: not kept)."""

    key: WindowKey
    view: Window
    version: int
    updated_at: datetime | None


def published_average(item: Item, window_size: int) -> PublishedAverage:
    """A window item's published view, read from its key, view (``e``), version and
    ``updatedAt`` only: none of the key's live records (``o``) or settled entries (``s``),
    the worker's private state, are decoded."""
    stamp = item.get(UPDATED_AT, {}).get("S")
    return PublishedAverage(
        _window_key(item),
        _window_view(item, window_size),
        int(item[VERSION]["N"]),
        datetime.fromisoformat(stamp) if stamp else None,
    )


def encode_tenant_orders(orders: Mapping[str, OrderRecord]) -> bytes:
    """A tenant's orders (the compacted records of ``TenantState``), as compressed JSON."""
    return zlib.compress(_tenant_rows(orders).encode(), 6)


def decode_tenant_orders(data: bytes) -> dict[str, OrderRecord]:
    """Inverse of ``encode_tenant_orders``."""
    return _orders_of_rows(zlib.decompress(data))


def _tenant_rows(orders: Mapping[str, OrderRecord]) -> str:
    """A tenant's orders as the JSON rows of its item, by order id."""
    rows = [
        [
            record.order_id,
            *record.submissions[0],
            record.completions[0] if record.completions else None,
            record.cancellations[0] if record.cancellations else None,
            int(record.cancelled),
        ]
        for record in sorted(orders.values(), key=lambda r: r.order_id)
        if record.submissions
    ]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def _orders_of_rows(text: str | bytes) -> dict[str, OrderRecord]:
    """Inverse of ``_tenant_rows``."""
    orders = {}
    for order_id, submitted, owner, drink, completed, cancelled_at, cancelled in json.loads(text):
        orders[str(order_id)] = OrderRecord(
            str(order_id),
            ((int(submitted), str(owner), str(drink)),),
            () if completed is None else (int(completed),),
            bool(cancelled),
            None,
            False,
            () if cancelled_at is None else (int(cancelled_at),),
        )
    return orders


def tenant_put(
    tenant: str,
    orders: Mapping[str, OrderRecord],
    view: Estimate | None,
    version: int,
    table: str,
    *,
    expected: int,
) -> PutTypeDef:
    """A conditional put of a tenant's new state and its view (the estimate published at
    ``version``): only over version ``expected`` (or none)."""
    item: dict[str, AttributeValueTypeDef] = {
        KEY: {"S": tenant_pk(tenant)},
        TENANT: {"S": tenant},
        VERSION: {"N": str(version)},
        TENANT_ORDERS: {"B": encode_tenant_orders(orders)},
        UPDATED_AT: {"S": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
    }
    if view is not None:
        item[TENANT_VIEW] = {"S": encode_estimate(view)}
    return {
        "TableName": table,
        "Item": item,
        "ConditionExpression": f"attribute_not_exists({KEY}) OR {VERSION} = :v",
        "ExpressionAttributeValues": {":v": {"N": str(expected)}},
    }


def encode_estimate(view: Estimate) -> str:
    """A tenant's estimate as JSON, ``[asOf, openOrders, [[drink, estimate, p90], ...]]``."""
    return json.dumps(_estimate_row(view), ensure_ascii=False, separators=(",", ":"))


def _estimate_row(view: Estimate) -> list[Any]:
    return [view.as_of, view.open_orders, [[d, *e] for d, e in view.drinks.items()]]


def _estimate_of_row(tenant: str, row: list[Any]) -> Estimate:
    """Inverse of ``_estimate_row``, for ``tenant``."""
    as_of, open_orders, drinks = row
    return Estimate(
        tenant,
        int(as_of),
        int(open_orders),
        {str(d): DrinkEstimate(float(e), float(p)) for d, e, p in drinks},
    )


def published_estimate(item: Item) -> tuple[Estimate, int] | None:
    """A tenant item's published view and its version (None: no estimate kept, as on an
    item written before the view was)."""
    view = item.get(TENANT_VIEW)
    if view is None:
        return None
    estimate = _estimate_of_row(item[TENANT]["S"], json.loads(view["S"]))
    return estimate, int(item[VERSION]["N"])


def tenant_from_item(item: Item | None) -> tuple[str, dict[str, OrderRecord], int] | None:
    """A stored tenant item's tenant, orders and version (None for no item)."""
    if not item:
        return None
    tenant = item[TENANT]["S"]
    data = item[TENANT_ORDERS]["B"]
    return tenant, decode_tenant_orders(bytes(data)), int(item[VERSION]["N"])


# -- packed states: the store's caches hold the states they use least in these -----------


def pack_window(state: KeyState, view: Window, version: int) -> bytes:
    """A key's stored state as one compressed blob: its version and size, then its live
    records, settled entries and view in the encodings of its item (JSON has no raw
    newline, so lines separate them)."""
    text = "\n".join(
        (
            f"{version} {state.size}",
            encode_live(state.live),
            encode_entries(state.settled),
            encode_entries(view.entries),
        )
    )
    return zlib.compress(text.encode(), 6)


def unpack_window(key: WindowKey, data: bytes) -> tuple[KeyState, Window, int]:
    """Inverse of ``pack_window``: the state, view and version packed for ``key``."""
    header, live, settled, entries = zlib.decompress(data).decode().split("\n")
    version, size = (int(n) for n in header.split())
    state = KeyState(key, size, decode_live(live), tuple(decode_entries(settled)))
    return state, Window(size, tuple(decode_entries(entries))), version


def pack_tenant(orders: Mapping[str, OrderRecord], view: Estimate | None, version: int) -> bytes:
    """A tenant's stored state as one compressed blob: its version and view (``null``
    for none, else ``[asOf, openOrders, [[drink, estimate, p90], ...]]``), then its
    orders as the rows of its item (the records must be compacted, as ``TenantState``
    keeps them)."""
    estimate = None if view is None else _estimate_row(view)
    header = json.dumps([version, estimate], ensure_ascii=False, separators=(",", ":"))
    return zlib.compress(f"{header}\n{_tenant_rows(orders)}".encode(), 6)


def unpack_tenant(tenant: str, data: bytes) -> tuple[dict[str, OrderRecord], Estimate | None, int]:
    """Inverse of ``pack_tenant``: the orders, view and version packed for ``tenant``."""
    header, rows = zlib.decompress(data).split(b"\n", 1)
    version, estimate = json.loads(header)
    view = None if estimate is None else _estimate_of_row(tenant, estimate)
    return _orders_of_rows(rows), view, int(version)
