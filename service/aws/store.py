"""DynamoDB adapter of the OrderStore port: order records and windows in one table.

The item layout is ``service.aws.items``. Calls are amortized over a flush
(docs/decisions.md, "One flush, a handful of calls (group commit)"): one or two orders are written with
UpdateItem ``ALL_NEW`` (one round trip, the low-latency path); more are written with one
TransactWriteItems per 100 and read back with one consistent BatchGetItem per 100.
Changed windows go out in one conditional PutItem, or one TransactWriteItems for
several. A write followed by a strongly consistent read is what pairs halves handled by
two workers at once: whichever write lands second, its reader sees both halves.

Each request is made once (botocore's own two attempts inside); a failure is raised as
the service's error and the worker decides whether to try again. Losing a race on a
window is not an error: the store re-reads, joins and writes again, as the one window
rule (``service.core.commit.WindowCommit``) says, within its limits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

import anyio
import structlog

from service.aws import items
from service.aws.errors import call, cancellation_reasons
from service.backoff import CONTENTION
from service.core.commit import StoredKey, WindowCommit
from service.core.pairing import OrderRecord
from service.core.window import WindowKey
from service.errors import DependencyError, first_error
from service.lru import Lru
from service.ports import Observer, WindowChange, WindowState

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        PutTypeDef,
        TransactWriteItemTypeDef,
    )

log = structlog.get_logger(__name__)

MAX_UNPROCESSED_ROUNDS = 8  # asks for DynamoDB's UnprocessedKeys before it counts as a failure
TRANSACT_LIMIT = 100  # actions per TransactWriteItems
BATCH_GET_LIMIT = 100  # keys per BatchGetItem
SINGLE_WRITES_UP_TO = 2  # orders per flush written with UpdateItem ALL_NEW instead


class DynamoStore:
    """Order records and windows in one DynamoDB table, with a bounded cache of windows."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        window_size: int,
        ttl_seconds: int,
        max_wait_seconds: int = 7200,
        observer: Observer | None = None,
        max_cached_windows: int = 100_000,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.window_size = window_size
        self.ttl_seconds = ttl_seconds
        self.max_wait_seconds = max_wait_seconds
        self.observer = observer
        self.cache: Lru[WindowKey, StoredKey] = Lru(max_cached_windows)  # windows as last written
        # Windows are merged one flush at a time per process (the worker has one loop); the
        # lock keeps that true for any other caller, so the cache never goes backwards.
        self._windows_lock = anyio.Lock()

    @property
    def cached_windows(self) -> int:
        """How many windows this process holds in memory."""
        return len(self.cache)

    def _items(self, operation: str, count: int) -> None:
        if self.observer is not None:
            self.observer.items(operation, count)

    # -- order records -------------------------------------------------------------

    async def apply_all(self, records: Sequence[OrderRecord], now: int) -> dict[str, OrderRecord]:
        """Join each record (a flush's events of one order) into its stored record, durably.

        Returns the stored records after the join, by order id. Order ids must be distinct.
        """
        if not records:
            return {}
        expires_at = now + self.ttl_seconds
        if len(records) <= SINGLE_WRITES_UP_TO:
            merged: dict[str, OrderRecord] = {}

            async def update(record: OrderRecord) -> None:
                merged[record.order_id] = await self._update_one(record, expires_at)

            with first_error():
                async with anyio.create_task_group() as group:
                    for record in records:
                        group.start_soon(update, record)
            return merged
        for start in range(0, len(records), TRANSACT_LIMIT):
            chunk = records[start : start + TRANSACT_LIMIT]
            await self._transact_orders(
                [{"Update": items.order_update(r, self.table_name, expires_at)} for r in chunk]
            )
        stored = await self._get_items([items.order_pk(r.order_id) for r in records])
        return {
            r.order_id: items.record_from_item(
                r.order_id, stored.get(items.order_pk(r.order_id), {})
            )
            for r in records
        }

    async def _update_one(self, record: OrderRecord, expires_at: int) -> OrderRecord:
        action = items.order_update(record, self.table_name, expires_at)
        response = await call(
            "dynamodb.UpdateItem", lambda: self.client.update_item(**action, ReturnValues="ALL_NEW")
        )
        self._items("UpdateItem", 1)
        return items.record_from_item(record.order_id, response.get("Attributes", {}))

    async def _transact_orders(self, actions: list[TransactWriteItemTypeDef]) -> None:
        """One TransactWriteItems of unconditional updates. Cancelled for transient reasons
        (another transaction on an item, throttling), it fails retriably."""
        await call(
            "dynamodb.TransactWriteItems",
            lambda: self.client.transact_write_items(TransactItems=actions),
        )
        self._items("TransactWriteItems", len(actions))

    async def _get_items(self, pks: Iterable[str]) -> dict[str, items.Item]:
        return await batch_get(self.client, self.table_name, pks, self._items)

    async def mark_anomalies(self, kinds: Mapping[str, str]) -> set[str]:
        """Set each order's anomaly mark (order id → kind) unless already set; returns the
        orders this call marked, so exactly one worker reports each anomalous order."""
        marked: set[str] = set()

        async def mark(order_id: str, kind: str) -> None:
            update = items.anomaly_mark(order_id, kind, self.table_name)
            try:
                await call("dynamodb.UpdateItem", lambda: self.client.update_item(**update))
            except DependencyError as exc:
                if exc.code != "ConditionalCheckFailedException":
                    raise
            else:
                marked.add(order_id)

        with first_error():
            async with anyio.create_task_group() as group:
                for order_id, kind in kinds.items():
                    group.start_soon(mark, order_id, kind)
        return marked

    # -- windows -------------------------------------------------------------------

    def _stored_state(self, key: WindowKey, item: items.Item | None) -> StoredKey:
        stored = items.window_from_item(item, self.window_size)
        return StoredKey.empty(key, self.window_size) if stored is None else StoredKey(*stored)

    async def load_states(self, keys: Iterable[WindowKey]) -> dict[WindowKey, StoredKey]:
        """The stored states of some keys (one consistent read per 100); empty at version 0."""
        keys = list(keys)
        stored = await self._get_items(items.window_pk(key) for key in keys)
        return {key: self._stored_state(key, stored.get(items.window_pk(key))) for key in keys}

    async def merge_all(
        self, records: Mapping[WindowKey, Sequence[OrderRecord]], now: int
    ) -> list[WindowChange]:
        """Join records into their keys' stored states (settling what expired by ``now``)
        with the one window rule; keys that lost a race are re-read and joined again.
        ``changed``: the key's window (the view) changed."""
        async with self._windows_lock:
            states: dict[WindowKey, StoredKey] = {}
            for key in records:
                cached = self.cache.get(key)
                if cached is not None:
                    states[key] = cached
            cold = [key for key in records if key not in states]
            if cold:
                states |= await self.load_states(cold)
            commit = WindowCommit(records, states, now=now, max_wait_seconds=self.max_wait_seconds)
            while proposals := commit.proposals():
                written, conflicted = await self._write_windows(proposals, commit.states)
                commit.landed(written)
                for key in written:
                    self.cache.put(key, proposals[key])
                if conflicted:
                    for _ in conflicted:
                        if self.observer is not None:
                            self.observer.window_conflict()
                    commit.lost(await self.load_states(conflicted))
                if not written:  # nobody's write landed: let the other transaction finish
                    await anyio.sleep(CONTENTION.delay(commit.rounds - 1))
            result = commit.result()
            for committed in result:
                self.cache.put(committed.key, committed.stored)
            return [
                WindowChange(c.key, WindowState(c.stored.view, c.stored.version), c.changed)
                for c in result
            ]

    async def _write_windows(
        self, proposals: dict[WindowKey, StoredKey], current: dict[WindowKey, StoredKey]
    ) -> tuple[set[WindowKey], set[WindowKey]]:
        """Write new states conditionally: (keys written, keys to re-read).

        One key: a conditional PutItem. Several: one TransactWriteItems per 100, which
        writes all of its keys or none. A transaction cancelled because another one held
        an item is a lost race like a failed condition: its keys are re-read and joined
        again. Cancelled for throttling, it is a retriable failure.
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
            actions: list[TransactWriteItemTypeDef] = [
                {"Put": self._window_put(proposals[key], current[key].version)} for key in chunk
            ]
            try:
                await call(
                    "dynamodb.TransactWriteItems",
                    partial(self.client.transact_write_items, TransactItems=actions),
                )
            except DependencyError as exc:
                reasons = cancellation_reasons(exc)
                lost = {
                    key
                    for key, reason in zip(chunk, reasons, strict=False)
                    if reason in {"ConditionalCheckFailed", "TransactionConflict"}
                }
                if exc.code != "TransactionCanceledException" or not lost:
                    raise
                log.debug("window_transaction_cancelled", reasons=sorted(set(reasons)))
                conflicted |= lost
            else:
                self._items("TransactWriteItems", len(actions))
                written |= set(chunk)
        return written, conflicted

    def _window_put(self, proposal: StoredKey, expected: int) -> PutTypeDef:
        return items.window_put(
            proposal.state, proposal.view, proposal.version, self.table_name, expected=expected
        )

    async def _put_window(self, key: WindowKey, proposal: StoredKey, *, expected: int) -> bool:
        put = self._window_put(proposal, expected)
        try:
            await call("dynamodb.PutItem", lambda: self.client.put_item(**put))
        except DependencyError as exc:
            if exc.code == "ConditionalCheckFailedException":
                log.debug("window_conflict", tenant=key[0], drink=key[1], expected=expected)
                return False
            raise
        self._items("PutItem", 1)
        return True


async def batch_get(
    client: DynamoDBClient,
    table_name: str,
    pks: Iterable[str],
    count_items: Callable[[str, int], None],
) -> dict[str, items.Item]:
    """Strongly consistent BatchGetItem of distinct keys; absent keys are left out.

    DynamoDB hands back what it could not read under load (UnprocessedKeys): those are
    asked for again after a short backoff, a bounded number of times.
    """
    pending = list(dict.fromkeys(pks))
    found: dict[str, items.Item] = {}
    rounds = 0
    while pending:
        chunk, pending = pending[:BATCH_GET_LIMIT], pending[BATCH_GET_LIMIT:]
        response = await call(
            "dynamodb.BatchGetItem",
            partial(
                client.batch_get_item,
                RequestItems={
                    table_name: {
                        "Keys": [{items.KEY: {"S": pk}} for pk in chunk],
                        "ConsistentRead": True,
                    }
                },
            ),
        )
        count_items("BatchGetItem", len(chunk))
        for item in response.get("Responses", {}).get(table_name, []):
            found[item[items.KEY]["S"]] = item
        unprocessed = response.get("UnprocessedKeys", {}).get(table_name)
        left = [key[items.KEY]["S"] for key in unprocessed["Keys"]] if unprocessed else []
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
