"""DynamoDB persistence: order records (pending halves) and windows, one table.

Items (partition key ``pk`` only):
- ``O#<orderId>``: the order record. Its update's ``if_not_exists`` expressions are the
  same join as ``OrderRecord.merge``, so concurrent and repeated writes commute. ``expiresAt``
  (DynamoDB TTL) garbage-collects it.
- ``W#["<tenant>","<drink>"]``: the window, its entries as compact JSON and a version.
  Written with a conditional put on the version; a writer that loses re-reads, joins
  (the window is a semilattice) and tries again, so every worker converges.

Calls are amortized over a flush (docs/decisions.md, "One flush, four calls"): one or two
orders are written with UpdateItem ``ALL_NEW`` (one round trip, the low-latency path);
more are written with one TransactWriteItems per 100 and read back with one consistent
BatchGetItem per 100. Changed windows go out in one conditional PutItem, or one
TransactWriteItems for several. A write followed by a strongly consistent read is what
pairs halves handled by two workers at once: whichever write lands second, its reader
sees both halves.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from botocore.exceptions import ClientError

from service.aws.retry import Backoff, call_with_retry, error_code, first_error
from service.core.pairing import OrderRecord
from service.core.window import Window, WindowEntry, WindowKey
from service.errors import DependencyError

log = structlog.get_logger(__name__)

MAX_CONFLICT_RETRIES = 50
TRANSACT_LIMIT = 100  # actions per TransactWriteItems
BATCH_GET_LIMIT = 100  # keys per BatchGetItem
SINGLE_WRITES_UP_TO = 2  # orders per flush written with UpdateItem ALL_NEW instead
# Why a transaction was cancelled, when retrying it unchanged can succeed.
TRANSIENT_CANCELLATIONS = frozenset(
    {"None", "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)


def order_pk(order_id: str) -> str:
    """Partition key of an order record."""
    return f"O#{order_id}"


def window_pk(key: WindowKey) -> str:
    """Partition key of a window; JSON keeps any tenant or drink name unambiguous."""
    return "W#" + json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def order_update(record: OrderRecord, expires_at: int) -> tuple[str, dict[str, Any]]:
    """The UpdateExpression joining what a record knows into the stored record, and its values.

    ``if_not_exists`` keeps the first submission and completion, and a cancellation is
    sticky: the same join as ``OrderRecord.merge``, so writes commute and repeat safely.
    """
    clauses = []
    values: dict[str, Any] = {":exp": {"N": str(expires_at)}}
    if record.submitted_at is not None:
        clauses += ["tn = if_not_exists(tn, :tn)", "dr = if_not_exists(dr, :dr)"]
        clauses.append("st = if_not_exists(st, :st)")
        values[":tn"] = {"S": record.tenant or ""}
        values[":dr"] = {"S": record.drink or ""}
        values[":st"] = {"N": str(record.submitted_at)}
    if record.completed_at is not None:
        clauses.append("ct = if_not_exists(ct, :ct)")
        values[":ct"] = {"N": str(record.completed_at)}
    if record.cancelled:
        clauses.append("cx = :yes")
        values[":yes"] = {"BOOL": True}
    clauses.append("expiresAt = if_not_exists(expiresAt, :exp)")
    return "SET " + ", ".join(clauses), values


def cancellation_reasons(exc: ClientError) -> list[str]:
    """The per-action codes of a TransactionCanceledException, in request order."""
    return [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])]


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
        on_items: Callable[[str, int], None] | None = None,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.window_size = window_size
        self.ttl_seconds = ttl_seconds
        self.max_cached_windows = max_cached_windows
        self._cache: OrderedDict[WindowKey, WindowState] = OrderedDict()
        # Windows are merged one flush at a time per process (the worker has one committer);
        # the lock keeps that true for any other caller, so the cache never goes backwards.
        self._windows_lock = anyio.Lock()
        self._on_retry = on_retry
        self._on_success = on_success
        self._on_conflict = on_conflict
        self._on_items = on_items

    @property
    def cached_windows(self) -> int:
        """How many windows this process holds in memory."""
        return len(self._cache)

    async def _call(self, operation: str, items: int = 1, **kwargs: Any) -> Any:
        """One DynamoDB call (retried); ``items`` it writes or reads are counted on success."""
        method = getattr(self.client, operation)
        response = await call_with_retry(
            f"dynamodb.{operation}",
            lambda: method(**kwargs),
            on_retry=self._on_retry,
            on_success=self._on_success,
        )
        if self._on_items is not None:
            self._on_items("".join(part.title() for part in operation.split("_")), items)
        return response

    # -- order records -------------------------------------------------------------

    async def apply_all(self, records: Sequence[OrderRecord], now: int) -> dict[str, OrderRecord]:
        """Join each record (a flush's events of one order) into its stored record, durably.

        Returns the stored records after the join, by order id. Order ids must be distinct.
        """
        if not records:
            return {}
        expires_at = now + self.ttl_seconds
        merged: dict[str, OrderRecord] = {}
        if len(records) <= SINGLE_WRITES_UP_TO:

            async def update(record: OrderRecord) -> None:
                merged[record.order_id] = await self._update_one(record, expires_at)

            with first_error():
                async with anyio.create_task_group() as group:
                    for record in records:
                        group.start_soon(update, record)
            return merged
        for start in range(0, len(records), TRANSACT_LIMIT):
            chunk = records[start : start + TRANSACT_LIMIT]
            await self._transact(
                [{"Update": self._update_action(record, expires_at)} for record in chunk]
            )
        items = await self._get_items([order_pk(r.order_id) for r in records])
        for record in records:
            merged[record.order_id] = record_from_item(
                record.order_id, items.get(order_pk(record.order_id), {})
            )
        return merged

    def _update_action(self, record: OrderRecord, expires_at: int) -> dict[str, Any]:
        expression, values = order_update(record, expires_at)
        return {
            "TableName": self.table_name,
            "Key": {"pk": {"S": order_pk(record.order_id)}},
            "UpdateExpression": expression,
            "ExpressionAttributeValues": values,
        }

    async def _update_one(self, record: OrderRecord, expires_at: int) -> OrderRecord:
        response = await self._call(
            "update_item", **self._update_action(record, expires_at), ReturnValues="ALL_NEW"
        )
        return record_from_item(record.order_id, response.get("Attributes", {}))

    async def _transact(self, actions: list[dict[str, Any]]) -> None:
        """One TransactWriteItems of unconditional updates, retried while cancellations are
        transient (another transaction on the same item, throttling)."""
        backoff = Backoff(base=0.05, cap=2.0)
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                await self._call("transact_write_items", items=len(actions), TransactItems=actions)
            except ClientError as exc:
                reasons = cancellation_reasons(exc)
                if error_code(exc) != "TransactionCanceledException" or not set(reasons) <= (
                    TRANSIENT_CANCELLATIONS
                ):
                    raise
                log.debug("transaction_retry", reasons=sorted(set(reasons)), attempt=attempt + 1)
                await anyio.sleep(backoff.delay(attempt))
            else:
                return
        raise DependencyError(
            f"TransactWriteItems cancelled {MAX_CONFLICT_RETRIES} times in a row (contention)"
        )

    async def _get_items(self, pks: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Strongly consistent BatchGetItem of distinct keys; absent keys are left out."""
        pending = list(dict.fromkeys(pks))
        found: dict[str, dict[str, Any]] = {}
        backoff = Backoff(base=0.05, cap=2.0)
        attempt = 0
        while pending:
            chunk, pending = pending[:BATCH_GET_LIMIT], pending[BATCH_GET_LIMIT:]
            response = await self._call(
                "batch_get_item",
                items=len(chunk),
                RequestItems={
                    self.table_name: {
                        "Keys": [{"pk": {"S": pk}} for pk in chunk],
                        "ConsistentRead": True,
                    }
                },
            )
            for item in response.get("Responses", {}).get(self.table_name, []):
                found[item["pk"]["S"]] = item
            unprocessed = response.get("UnprocessedKeys", {}).get(self.table_name, {})
            left = [key["pk"]["S"] for key in unprocessed.get("Keys", [])]
            if left:
                # DynamoDB hands back what it could not read under load: back off, ask again.
                pending = left + pending
                await anyio.sleep(backoff.delay(attempt))
                attempt += 1
        return found

    # -- windows -------------------------------------------------------------------

    def _window_state(self, item: dict[str, Any] | None) -> WindowState:
        if not item:
            return WindowState(Window(self.window_size), 0)
        entries = decode_entries(item["e"]["S"])
        return WindowState(Window(self.window_size).merge(entries), int(item["v"]["N"]))

    async def load_windows(self, keys: Iterable[WindowKey]) -> dict[WindowKey, WindowState]:
        """The stored windows of some keys (one consistent read per 100); empty at version 0."""
        keys = list(keys)
        items = await self._get_items(window_pk(key) for key in keys)
        return {key: self._window_state(items.get(window_pk(key))) for key in keys}

    async def merge_all(
        self, entries: Mapping[WindowKey, Sequence[WindowEntry]]
    ) -> list[WindowChange]:
        """Join entries into their keys' stored windows, retrying keys that lost a race."""
        async with self._windows_lock:
            states = {key: self._cache[key] for key in entries if key in self._cache}
            cold = [key for key in entries if key not in states]
            if cold:
                states |= await self.load_windows(cold)
            changed: set[WindowKey] = set()
            backoff = Backoff(base=0.05, cap=2.0)
            for attempt in range(MAX_CONFLICT_RETRIES):
                proposals = {}
                for key, batch in entries.items():
                    merged = states[key].window.merge(tuple(batch))
                    if merged is not states[key].window:
                        proposals[key] = WindowState(merged, states[key].version + 1)
                if not proposals:
                    break
                written, conflicted = await self._write_windows(proposals, states)
                for key in written:
                    states[key] = proposals[key]
                    changed.add(key)
                if conflicted:
                    for _ in conflicted:
                        if self._on_conflict is not None:
                            self._on_conflict()
                    states |= await self.load_windows(conflicted)
                elif not written:
                    await anyio.sleep(backoff.delay(attempt))  # a transient cancellation
            else:
                raise DependencyError(
                    f"window writes lost {MAX_CONFLICT_RETRIES} races in a row (contention)"
                )
            for key in entries:
                self._remember(key, states[key])
            return [WindowChange(key, states[key], key in changed) for key in entries]

    async def _write_windows(
        self, proposals: dict[WindowKey, WindowState], current: dict[WindowKey, WindowState]
    ) -> tuple[set[WindowKey], set[WindowKey]]:
        """Write new window versions conditionally: (keys written, keys another writer changed).

        One window: a conditional PutItem. Several: one TransactWriteItems per 100, which
        writes all of its windows or none; when it is cancelled, the keys whose condition
        failed must be re-read and every key of it proposed again.
        """
        keys = list(proposals)
        if len(keys) == 1:
            key = keys[0]
            if await self._put_window(key, proposals[key], expected=current[key].version):
                return {key}, set()
            return set(), {key}
        written: set[WindowKey] = set()
        conflicted: set[WindowKey] = set()
        for start in range(0, len(keys), TRANSACT_LIMIT):
            chunk = keys[start : start + TRANSACT_LIMIT]
            actions = [
                {"Put": self._window_put(key, proposals[key], current[key].version)}
                for key in chunk
            ]
            try:
                await self._call("transact_write_items", items=len(actions), TransactItems=actions)
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                reasons = cancellation_reasons(exc)
                log.debug("window_transaction_cancelled", reasons=sorted(set(reasons)))
                conflicted |= {
                    key
                    for key, reason in zip(chunk, reasons, strict=False)
                    if reason == "ConditionalCheckFailed"
                }
            else:
                written |= set(chunk)
        return written, conflicted

    def _window_put(self, key: WindowKey, state: WindowState, expected: int) -> dict[str, Any]:
        tenant, drink = key
        return {
            "TableName": self.table_name,
            "Item": {
                "pk": {"S": window_pk(key)},
                "tenant": {"S": tenant},
                "drink": {"S": drink},
                "v": {"N": str(state.version)},
                "e": {"S": encode_entries(state.window)},
                "updatedAt": {"S": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
            },
            "ConditionExpression": "attribute_not_exists(pk) OR v = :v",
            "ExpressionAttributeValues": {":v": {"N": str(expected)}},
        }

    async def _put_window(self, key: WindowKey, state: WindowState, *, expected: int) -> bool:
        try:
            await self._call("put_item", **self._window_put(key, state, expected))
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                log.debug("window_conflict", tenant=key[0], drink=key[1], expected=expected)
                return False
            raise
        return True

    def _remember(self, key: WindowKey, state: WindowState) -> None:
        self._cache[key] = state
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_cached_windows:
            self._cache.popitem(last=False)

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
