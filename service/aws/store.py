"""DynamoDB adapter of the OrderStore port: order records and windows in one table.

The item layout is ``service.aws.items``. Calls are amortized over a flush
(docs/decisions.md, "One flush, a handful of calls (group commit)"): one or two orders are written with
UpdateItem ``ALL_NEW`` (one round trip, the low-latency path); more are written with one
TransactWriteItems per 100 and read back with one consistent BatchGetItem per 100.
Changed windows go out in one conditional PutItem, or one TransactWriteItems for
several. A write followed by a strongly consistent read is what pairs halves handled by
two workers at once: whichever write lands second, its reader sees both halves.

Each request is made once (botocore's own two attempts inside; the batched ones in
``service.aws.batches``); a failure is raised as the service's error and the worker
decides whether to try again. Losing a race on a window or a tenant is not an error: the
store re-reads, joins and writes again, as the commit driver
(``service.core.rounds.drive_commit``) runs the rules, within their limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import anyio

from service.aws import items
from service.aws.batches import TRANSACT_LIMIT, batch_get, write_conditionally
from service.aws.errors import call
from service.backoff import CONTENTION
from service.core.commit import KeyCommitted, StoredKey, WindowCommit
from service.core.estimate import Estimate
from service.core.estimators.base import EstimateOptions
from service.core.pairing import OrderRecord
from service.core.rounds import (
    CommitResult,
    Proposals,
    Reread,
    Subjects,
    Written,
    drive_commit,
)
from service.core.tenant import StoredTenant, TenantCommit, TenantCommitted, TenantState
from service.core.window import WindowKey
from service.errors import DependencyError, first_error
from service.lru import PackedLru
from service.ports import Committed, Observer, TenantChange, WindowChange, WindowState
from service.settings import setting_default

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        PutTypeDef,
        TransactWriteItemTypeDef,
    )

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
        estimates: EstimateOptions,
        observer: Observer | None = None,
        max_cached_windows: int = setting_default("max_windows_in_memory"),
        max_cached_tenants: int = setting_default("max_tenants_in_memory"),
        hot_windows: int = HOT_WINDOWS,
        hot_tenants: int = HOT_TENANTS,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.window_size = window_size
        self.ttl_seconds = ttl_seconds
        # The tenants' and their estimator's options; the windows read its maximum wait
        # too, so one value decides what counts for both.
        self.estimates = estimates
        self.max_wait_seconds = estimates.max_wait_seconds
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
        return await batch_get(self.client, self.table_name, pks, self._items, key=items.KEY)

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
        by ``now``) with the commit driver, both kinds in the same requests; whatever
        lost a race is re-read and joined again."""
        async with self._windows_lock:
            window_commit = WindowCommit(
                windows,
                await self._key_states(windows),
                now=now,
                max_wait_seconds=self.max_wait_seconds,
            )
            tenant_commit = TenantCommit(
                tenants,
                await self._tenant_states(tenants, now),
                now=now,
                options=self.estimates,
            )
            result = await drive_commit(window_commit, tenant_commit, _TableWrites(self, now))
            for key_committed in result.windows:
                self.cache.put(key_committed.key, key_committed.stored)
            for tenant_committed in result.tenants:
                self.tenants.put(tenant_committed.tenant, tenant_committed.stored)
            return committed(result, tenant_commit.dropped)

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


def committed(result: CommitResult[KeyCommitted, TenantCommitted], dropped: int) -> Committed:
    """The port's view of where a commit's keys and tenants ended (``drive_commit``), and
    of the orders the tenants' cap ``dropped``."""
    windows = [
        WindowChange(c.key, WindowState(c.stored.view, c.stored.version), c.changed)
        for c in result.windows
    ]
    tenants = [
        TenantChange(t.tenant, t.stored.view, t.stored.version, t.changed, t.counted)
        for t in result.tenants
    ]
    return Committed(windows, tenants, dropped)


class _TableWrites:
    """One commit's I/O on the table (``CommitWrites``): each round's proposals of both
    kinds as conditional puts by ``pk``, what lost re-read in one read, and the store's
    caches kept as last written."""

    def __init__(self, store: DynamoStore, now: int) -> None:
        self.store, self.now = store, now

    async def write(
        self, proposals: Proposals[WindowKey, StoredKey, str, StoredTenant]
    ) -> Written[WindowKey, str]:
        """Every proposal as a conditional put over its version - 1, written together."""
        store, table = self.store, self.store.table_name
        keys = {items.window_pk(key): key for key in proposals.windows}
        tenants = {items.tenant_pk(tenant): tenant for tenant in proposals.tenants}
        puts: dict[str, PutTypeDef] = {}
        for pk, key in keys.items():
            window = proposals.windows[key]
            puts[pk] = items.window_put(
                window.state, window.view, window.version, table, expected=window.version - 1
            )
        for pk, tenant in tenants.items():
            stored = proposals.tenants[tenant]
            puts[pk] = items.tenant_put(
                tenant,
                stored.state.orders,
                stored.view,
                stored.version,
                table,
                expected=stored.version - 1,
            )
        written, conflicted = await write_conditionally(store.client, puts, store._items)
        for pk in written & keys.keys():
            store.cache.put(keys[pk], proposals.windows[keys[pk]])
        for pk in written & tenants.keys():
            store.tenants.put(tenants[pk], proposals.tenants[tenants[pk]])
        return Written(
            Subjects(
                frozenset(keys[pk] for pk in written & keys.keys()),
                frozenset(tenants[pk] for pk in written & tenants.keys()),
            ),
            Subjects(
                frozenset(keys[pk] for pk in conflicted & keys.keys()),
                frozenset(tenants[pk] for pk in conflicted & tenants.keys()),
            ),
        )

    async def reread(
        self, lost: Subjects[WindowKey, str]
    ) -> Reread[WindowKey, StoredKey, str, StoredTenant]:
        """Read again what lost a race, both kinds in one read."""
        store = self.store
        for _ in range(len(lost.windows) + len(lost.tenants)):
            if store.observer is not None:
                store.observer.window_conflict()
        keys = {items.window_pk(key): key for key in lost.windows}
        tenants = {items.tenant_pk(tenant): tenant for tenant in lost.tenants}
        stored = await store._get_items([*keys, *tenants])
        return Reread(
            {key: store._stored_state(key, stored.get(pk)) for pk, key in keys.items()},
            {
                tenant: store._stored_tenant(tenant, stored.get(pk), self.now)
                for pk, tenant in tenants.items()
            },
        )

    async def contended(self, rounds: int) -> None:
        """Nobody's write landed: let the other transaction finish."""
        await anyio.sleep(CONTENTION.delay(rounds - 1))
