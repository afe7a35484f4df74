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
from service.core.estimate import Estimate
from service.core.estimators.base import EstimateOptions
from service.core.pairing import OrderRecord
from service.core.tenant import StoredTenant, TenantCommit, TenantCommitted, TenantState
from service.core.window import WindowKey
from service.errors import DependencyError, first_error
from service.lru import PackedLru
from service.ports import Committed, Observer, TenantChange, WindowChange, WindowState

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        PutTypeDef,
        TransactWriteItemTypeDef,
    )

log = structlog.get_logger(__name__)

MAX_UNPROCESSED_ROUNDS = 8  # asks for DynamoDB's UnprocessedKeys before it counts as a failure
TRANSACT_LIMIT = 100  # actions per TransactWriteItems
TRANSACT_BYTES = 3_500_000  # bytes per TransactWriteItems (DynamoDB's limit: 4 MB)
BATCH_GET_LIMIT = 100  # keys per BatchGetItem
SINGLE_WRITES_UP_TO = 2  # orders per flush written with UpdateItem ALL_NEW instead
HOT_WINDOWS = 1024  # cached windows kept as objects; the older ones are packed (PackedLru)
HOT_TENANTS = 256  # likewise for tenant states (a state holds up to MAX_TENANT_ORDERS)


def pack_key(stored: StoredKey) -> bytes:
    """A cached window, packed (``items.pack_window``)."""
    return items.pack_window(stored.state, stored.view, stored.version)


def unpack_key(key: WindowKey, data: bytes) -> StoredKey:
    """Inverse of ``pack_key``."""
    return StoredKey(*items.unpack_window(key, data))


def pack_tenant(stored: StoredTenant) -> bytes:
    """A cached tenant state, packed (``items.pack_tenant``)."""
    return items.pack_tenant(stored.state.orders, stored.view, stored.version)


def unpack_tenant(tenant: str, data: bytes) -> StoredTenant:
    """Inverse of ``pack_tenant``."""
    orders, view, version = items.unpack_tenant(tenant, data)
    return StoredTenant(TenantState(tenant, orders), view, version)


class DynamoStore:
    """Order records and windows in one DynamoDB table, with bounded caches of windows and
    tenant states (the least recently used of each packed)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        window_size: int,
        ttl_seconds: int,
        max_wait_seconds: int = 7200,
        estimates: EstimateOptions,
        observer: Observer | None = None,
        max_cached_windows: int = 100_000,
        max_cached_tenants: int = 50_000,
        hot_windows: int = HOT_WINDOWS,
        hot_tenants: int = HOT_TENANTS,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.window_size = window_size
        self.ttl_seconds = ttl_seconds
        self.max_wait_seconds = max_wait_seconds
        self.estimates = estimates  # the tenants' and their estimator's options
        self.observer = observer
        # Windows and tenant states as last written, the least recently used packed.
        self.cache: PackedLru[WindowKey, StoredKey, bytes] = PackedLru(
            max_cached_windows, hot_windows, pack_key, unpack_key
        )
        self.tenants: PackedLru[str, StoredTenant, bytes] = PackedLru(
            max_cached_tenants, hot_tenants, pack_tenant, unpack_tenant
        )
        # Windows are merged one flush at a time per process (the worker has one loop); the
        # lock keeps that true for any other caller, so the cache never goes backwards.
        self._windows_lock = anyio.Lock()

    @property
    def cached_windows(self) -> int:
        """How many windows this process holds in memory."""
        return len(self.cache)

    @property
    def cached_tenants(self) -> int:
        """How many tenant states this process holds in memory."""
        return len(self.tenants)

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
        """Join records into their keys' stored states (``commit`` without tenants)."""
        return (await self.commit(records, {}, now)).windows

    async def tenant_views(self, tenants: Iterable[str], now: int) -> dict[str, Estimate | None]:
        """Each tenant's current estimate (None: none yet), from the cache or one
        consistent read per 100 tenants; what is read is cached for the commit."""
        async with self._windows_lock:
            states = await self._tenant_states(tenants, now)
        return {tenant: stored.view for tenant, stored in states.items()}

    async def _tenant_states(self, tenants: Iterable[str], now: int) -> dict[str, StoredTenant]:
        states: dict[str, StoredTenant] = {}
        cold = []
        for tenant in tenants:
            cached = self.tenants.get(tenant)
            if cached is None:
                cold.append(tenant)
            else:
                states[tenant] = cached
        if cold:
            loaded = await self.load_tenants(cold, now)
            for tenant, stored in loaded.items():
                self.tenants.put(tenant, stored)
            states |= loaded
        return states

    async def load_tenants(self, tenants: Iterable[str], now: int) -> dict[str, StoredTenant]:
        """The stored states of some tenants (one consistent read per 100)."""
        tenants = list(tenants)
        stored = await self._get_items(items.tenant_pk(tenant) for tenant in tenants)
        return {
            tenant: self._stored_tenant(tenant, stored.get(items.tenant_pk(tenant)), now)
            for tenant in tenants
        }

    def _stored_tenant(self, tenant: str, item: items.Item | None, now: int) -> StoredTenant:
        found = items.tenant_from_item(item)
        if found is None:
            return StoredTenant.empty(tenant)
        _, orders, version = found
        return StoredTenant.of(
            TenantState(tenant, orders), version, now=now, options=self.estimates
        )

    async def commit(
        self,
        windows: Mapping[WindowKey, Sequence[OrderRecord]],
        tenants: Mapping[str, Sequence[OrderRecord]],
        now: int,
    ) -> Committed:
        """Join records into their keys' and tenants' stored states (settling what expired
        by ``now``) with the one window rule, both kinds in the same requests; whatever
        lost a race is re-read and joined again."""
        async with self._windows_lock:
            rounds = _Rounds(
                self,
                WindowCommit(
                    windows,
                    await self._key_states(windows),
                    now=now,
                    max_wait_seconds=self.max_wait_seconds,
                ),
                TenantCommit(
                    tenants,
                    await self._tenant_states(tenants, now),
                    now=now,
                    options=self.estimates,
                ),
                now,
            )
            while puts := rounds.puts():
                written, conflicted = await write_conditionally(self.client, puts, self._items)
                rounds.landed(written)
                if conflicted:
                    await rounds.reread(conflicted)
                if not written:  # nobody's write landed: let the other transaction finish
                    await anyio.sleep(CONTENTION.delay(rounds.rounds - 1))
            return rounds.result()

    async def _key_states(self, records: Iterable[WindowKey]) -> dict[WindowKey, StoredKey]:
        states: dict[WindowKey, StoredKey] = {}
        for key in records:
            cached = self.cache.get(key)
            if cached is not None:
                states[key] = cached
        cold = [key for key in records if key not in states]
        if cold:
            states |= await self.load_states(cold)
        return states

    def _window_put(self, proposal: StoredKey, expected: int) -> PutTypeDef:
        return items.window_put(
            proposal.state, proposal.view, proposal.version, self.table_name, expected=expected
        )


class _Rounds:
    """One commit's two rules (windows, tenants) driven together: their proposals as
    conditional puts by ``pk``, what landed and what was re-read handed back to each, the
    store's caches kept as last written."""

    def __init__(
        self, store: DynamoStore, windows: WindowCommit, tenants: TenantCommit, now: int
    ) -> None:
        self.store, self.windows, self.tenants, self.now = store, windows, tenants, now
        self.keys: dict[str, WindowKey] = {}
        self.tenant_names: dict[str, str] = {}

    @property
    def rounds(self) -> int:
        """Proposal rounds so far (the larger of the two rules')."""
        return max(self.windows.rounds, self.tenants.rounds)

    def puts(self) -> dict[str, PutTypeDef]:
        """Every proposal of both rules as a conditional put; empty when both are done."""
        store, table = self.store, self.store.table_name
        keys, tenants = self.windows.proposals(), self.tenants.proposals()
        self.keys = {items.window_pk(key): key for key in keys}
        self.tenant_names = {items.tenant_pk(tenant): tenant for tenant in tenants}
        puts = {
            pk: store._window_put(keys[key], self.windows.states[key].version)
            for pk, key in self.keys.items()
        }
        for pk, tenant in self.tenant_names.items():
            proposal = tenants[tenant]
            expected = self.tenants.states[tenant].version
            puts[pk] = items.tenant_put(
                tenant, proposal.state.orders, proposal.version, table, expected=expected
            )
        return puts

    def landed(self, written: set[str]) -> None:
        """These puts were written: their proposals are the stored states now."""
        keys = [key for pk, key in self.keys.items() if pk in written]
        tenants = [tenant for pk, tenant in self.tenant_names.items() if pk in written]
        self.windows.landed(keys)
        self.tenants.landed(tenants)
        for key in keys:
            self.store.cache.put(key, self.windows.states[key])
        for tenant in tenants:
            self.store.tenants.put(tenant, self.tenants.states[tenant])

    async def reread(self, conflicted: set[str]) -> None:
        """Read again what lost a race (one read for both kinds) and hand it back."""
        store = self.store
        for _ in conflicted:
            if store.observer is not None:
                store.observer.window_conflict()
        stored = await store._get_items(conflicted)
        self.windows.lost(
            {
                key: store._stored_state(key, stored.get(pk))
                for pk, key in self.keys.items()
                if pk in conflicted
            }
        )
        self.tenants.lost(
            {
                tenant: store._stored_tenant(tenant, stored.get(pk), self.now)
                for pk, tenant in self.tenant_names.items()
                if pk in conflicted
            }
        )

    def result(self) -> Committed:
        """Where every key and tenant ended, the caches updated to it."""
        key_result = self.windows.result()
        for committed in key_result:
            self.store.cache.put(committed.key, committed.stored)
        tenant_result = self.tenants.result()
        for tenant_committed in tenant_result:
            self.store.tenants.put(tenant_committed.tenant, tenant_committed.stored)
        return Committed(
            [
                WindowChange(c.key, WindowState(c.stored.view, c.stored.version), c.changed)
                for c in key_result
            ],
            [tenant_change(t) for t in tenant_result],
            self.tenants.dropped,
        )


def tenant_change(committed: TenantCommitted) -> TenantChange:
    """The port's view of where a tenant ended after a commit."""
    stored = committed.stored
    return TenantChange(
        committed.tenant, stored.view, stored.version, committed.changed, committed.counted
    )


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
            # lost race, re-read and joined again (``_Rounds.reread``).
            log.debug("conditional_put_lost", code=exc.code)
            return False
        raise
    count_items("PutItem", 1)
    return True
