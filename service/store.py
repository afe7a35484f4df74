"""DynamoDB persistence: order records (pending halves) and windows, one table.

Items (partition key ``pk`` only):
- ``O#<orderId>``: the order record. Each event is one UpdateItem whose ``if_not_exists``
  expressions are the same join as ``OrderRecord.merge``, so concurrent and repeated
  writes commute; ``ReturnValues=ALL_NEW`` hands back the merged record. ``expiresAt``
  (DynamoDB TTL) garbage-collects it.
- ``W#["<tenant>","<drink>"]``: the window, its entries as compact JSON and a version.
  Written with a conditional put on the version; a writer that loses re-reads, joins
  (the window is a semilattice) and tries again, so every worker converges.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from botocore.exceptions import ClientError

from service.events import OrderEvent, Role
from service.pairing import OrderRecord
from service.retry import call_with_retry, error_code
from service.window import Window, WindowEntry, WindowKey

log = structlog.get_logger(__name__)

_UPDATES = {
    Role.SUBMITTED: (
        "SET tn = if_not_exists(tn, :tn), dr = if_not_exists(dr, :dr), "
        "st = if_not_exists(st, :t), expiresAt = if_not_exists(expiresAt, :exp)"
    ),
    Role.COMPLETED: "SET ct = if_not_exists(ct, :t), expiresAt = if_not_exists(expiresAt, :exp)",
    Role.CANCELLED: "SET cx = :yes, expiresAt = if_not_exists(expiresAt, :exp)",
}
MAX_CONFLICT_RETRIES = 50


def order_pk(order_id: str) -> str:
    """Partition key of an order record."""
    return f"O#{order_id}"


def window_pk(key: WindowKey) -> str:
    """Partition key of a window; JSON keeps any tenant or drink name unambiguous."""
    return "W#" + json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


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


def record_from_item(order_id: str, item: dict[str, Any]) -> OrderRecord:
    """An OrderRecord from a DynamoDB item in low-level attribute-value form."""

    def number(name: str) -> int | None:
        return int(item[name]["N"]) if name in item else None

    return OrderRecord(
        order_id=order_id,
        tenant=item["tn"]["S"] if "tn" in item else None,
        drink=item["dr"]["S"] if "dr" in item else None,
        submitted_at=number("st"),
        completed_at=number("ct"),
        cancelled=bool(item.get("cx", {}).get("BOOL", False)),
        expires_at=number("expiresAt"),
    )


@dataclass(frozen=True, slots=True)
class WindowState:
    """A window as last written, with its version."""

    window: Window
    version: int


@dataclass(frozen=True, slots=True)
class WindowChange:
    """The result of merging entries into a stored window."""

    key: WindowKey
    state: WindowState
    changed: bool


class DynamoStore:
    """Order records and windows in one DynamoDB table, with a bounded cache of windows."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        window_size: int,
        ttl_seconds: int,
        max_cached_windows: int = 100_000,
        on_retry: Callable[[str, BaseException], None] | None = None,
        on_success: Callable[[], None] | None = None,
        on_conflict: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.window_size = window_size
        self.ttl_seconds = ttl_seconds
        self.max_cached_windows = max_cached_windows
        self._cache: OrderedDict[WindowKey, WindowState] = OrderedDict()
        self._locks: dict[WindowKey, tuple[anyio.Lock, int]] = {}
        self._on_retry = on_retry
        self._on_success = on_success
        self._on_conflict = on_conflict

    @property
    def cached_windows(self) -> int:
        """How many windows this process holds in memory."""
        return len(self._cache)

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        method = getattr(self.client, operation)
        return await call_with_retry(
            f"dynamodb.{operation}",
            lambda: method(**kwargs),
            on_retry=self._on_retry,
            on_success=self._on_success,
        )

    async def apply(self, event: OrderEvent, now: int) -> OrderRecord:
        """Merge one event into its order record durably; returns the merged record."""
        values: dict[str, Any] = {":exp": {"N": str(now + self.ttl_seconds)}}
        if event.role is Role.SUBMITTED:
            values[":tn"] = {"S": event.tenant}
            values[":dr"] = {"S": event.drink or ""}
            values[":t"] = {"N": str(event.time)}
        elif event.role is Role.COMPLETED:
            values[":t"] = {"N": str(event.time)}
        else:
            values[":yes"] = {"BOOL": True}
        response = await self._call(
            "update_item",
            TableName=self.table_name,
            Key={"pk": {"S": order_pk(event.order_id)}},
            UpdateExpression=_UPDATES[event.role],
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return record_from_item(event.order_id, response.get("Attributes", {}))

    async def load_window(self, key: WindowKey) -> WindowState:
        """The stored window of a key (consistent read); empty at version 0 if none."""
        response = await self._call(
            "get_item",
            TableName=self.table_name,
            Key={"pk": {"S": window_pk(key)}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return WindowState(Window(self.window_size), 0)
        entries = decode_entries(item["e"]["S"])
        return WindowState(Window(self.window_size).merge(entries), int(item["v"]["N"]))

    async def merge(self, key: WindowKey, entries: Iterable[WindowEntry]) -> WindowChange:
        """Join entries into a key's stored window, retrying on concurrent writers."""
        entries = tuple(entries)
        async with self._lock(key):
            state = self._cache.get(key)
            if state is None:
                state = await self.load_window(key)
            changed = False
            for _ in range(MAX_CONFLICT_RETRIES):
                merged = state.window.merge(entries)
                if merged is state.window:
                    break
                new_state = WindowState(merged, state.version + 1)
                if await self._write(key, new_state, expected=state.version):
                    state, changed = new_state, True
                    break
                if self._on_conflict is not None:
                    self._on_conflict()
                state = await self.load_window(key)
            else:
                raise RuntimeError(
                    f"window {key!r}: gave up after {MAX_CONFLICT_RETRIES} conflicts"
                )
            self._remember(key, state)
            return WindowChange(key, state, changed)

    async def _write(self, key: WindowKey, state: WindowState, *, expected: int) -> bool:
        tenant, drink = key
        try:
            await self._call(
                "put_item",
                TableName=self.table_name,
                Item={
                    "pk": {"S": window_pk(key)},
                    "tenant": {"S": tenant},
                    "drink": {"S": drink},
                    "v": {"N": str(state.version)},
                    "e": {"S": encode_entries(state.window)},
                    "updatedAt": {"S": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
                },
                ConditionExpression="attribute_not_exists(pk) OR v = :v",
                ExpressionAttributeValues={":v": {"N": str(expected)}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                log.debug("window_conflict", tenant=tenant, drink=drink, expected=expected)
                return False
            raise
        return True

    def _remember(self, key: WindowKey, state: WindowState) -> None:
        self._cache[key] = state
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_cached_windows:
            self._cache.popitem(last=False)

    def _lock(self, key: WindowKey) -> _KeyLock:
        return _KeyLock(self._locks, key)

    async def scan_windows(self) -> dict[WindowKey, WindowState]:
        """Every stored window (for tests, the demo and operators; not on the hot path)."""
        windows: dict[WindowKey, WindowState] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "begins_with(pk, :w)",
            "ExpressionAttributeValues": {":w": {"S": "W#"}},
            "ConsistentRead": True,
        }
        while True:
            page = await self._call("scan", **kwargs)
            for item in page.get("Items", []):
                key = (item["tenant"]["S"], item["drink"]["S"])
                window = Window(self.window_size).merge(decode_entries(item["e"]["S"]))
                windows[key] = WindowState(window, int(item["v"]["N"]))
            if "LastEvaluatedKey" not in page:
                return windows
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class _KeyLock:
    """A per-key lock that forgets the key when nobody holds or waits for it (bounded memory)."""

    def __init__(self, locks: dict[WindowKey, tuple[anyio.Lock, int]], key: WindowKey) -> None:
        self.locks = locks
        self.key = key

    async def __aenter__(self) -> None:
        lock, users = self.locks.get(self.key, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self.locks[self.key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.locks[self.key][0].release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self.locks[self.key]
        if users <= 1:
            del self.locks[self.key]
        else:
            self.locks[self.key] = (lock, users - 1)
