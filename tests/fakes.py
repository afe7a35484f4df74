"""In-memory fakes of the worker's ports (``service.ports``) and a recording observer.

They behave like the real endpoints in what the worker relies on, with no I/O, so worker
tests run in milliseconds:

- ``FakeQueue``: SQS semantics: receive counts, a new receipt handle per receive,
  visibility (on an injectable clock that tests can ``advance``), a redrive policy into
  ``dlq``, stale receipt handles ignored; its depth, and its dead-letter queue's
  (``dead_letters``), as the QueueDepthSource port.
- ``FakeStore``: DynamoDB semantics on the pure core: order records joined as the
  update does (``service.aws.items.order_update``: ``ADD`` to the sets of submissions and
  completions, a sticky cancellation, the expiry set once), windows committed with the one
  window rule (``service.core.commit.WindowCommit``) in versioned, conditional writes, a
  per-process cache, and another writer on demand (``bump``).
- ``RecordingPublisher``: records every published average.
- ``RecordingObserver``: records every report, readiness, and the latest queue depths.

The three ports share one ``Journal`` (every call, in order, failed ones included), so a
test can assert the order of a flush across them. Each port can be made to fail
(``fail``) or to block until released (``hold``), per operation.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.lowlevel import checkpoint

from service.aws.store import committed
from service.core.commit import StoredKey, WindowCommit
from service.core.estimate import Estimate
from service.core.estimators.base import EstimateOptions
from service.core.estimators.registry import estimate_options
from service.core.pairing import OrderRecord
from service.core.published import DrinkAverageTime, Published, WaitEstimate
from service.core.rounds import Proposals, Reread, Subjects, Written, drive_commit
from service.core.tenant import MAX_TENANT_ORDERS, StoredTenant, TenantCommit
from service.core.window import WindowKey
from service.errors import DependencyError, WaitTimesError
from service.ports import (
    SQS_BATCH_LIMIT,
    Committed,
    Message,
    Observer,
    QueueDepth,
    WindowState,
)
from service.settings import setting_default


def key_name(key: WindowKey) -> str:
    """How a window key appears in the journal: ``tenant/drink``."""
    return f"{key[0]}/{key[1]}"


class Journal:
    """Every call the fakes sharing it received, in order.

    An entry is ``(operation, subjects)``: message ids for the queue, order ids for
    ``apply``, ``tenant/drink`` keys for ``merge``, ``tenant/drink@version`` for
    ``publish``. A call that failed before its effect is recorded as ``<operation>:failed``;
    one whose effect landed but whose answer was lost as ``<operation>:lost``.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[str, tuple[str, ...]]] = []

    def record(self, operation: str, subjects: Iterable[str] = ()) -> None:
        """Append one call."""
        self.entries.append((operation, tuple(subjects)))

    def operations(self, *only: str) -> list[str]:
        """The operations in order; with ``only``, just those (and their failed/lost forms)."""
        names = [operation for operation, _ in self.entries]
        if not only:
            return names
        return [name for name in names if name.split(":")[0] in only]

    def subjects(self, operation: str) -> list[tuple[str, ...]]:
        """The subjects of every call of exactly ``operation``, in order."""
        return [subjects for name, subjects in self.entries if name == operation]

    def index(self, operation: str) -> int:
        """Position of the first call of exactly ``operation`` (ValueError when none)."""
        return self.operations().index(operation)


class Gate:
    """Holds the next call of an operation until ``release()``; ``entered`` says it arrived."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self._released = anyio.Event()

    def release(self) -> None:
        """Let the held call proceed (later calls were never held)."""
        self._released.set()

    async def wait(self) -> None:
        """Called by the fake: mark the call as arrived and block until released."""
        self.entered.set()
        await self._released.wait()


@dataclass
class _Fault:
    error: Exception | None  # None: a fresh retriable DependencyError each time
    remaining: int | None  # None: until cleared
    after_effect: bool


class Injections:
    """Failures and holds planned per operation, shared by the fakes' base class."""

    def __init__(self, component: str, journal: Journal) -> None:
        self.component = component
        self.journal = journal
        self._faults: dict[str, _Fault] = {}
        self._gates: dict[str, Gate] = {}
        self.failures: Counter[str] = Counter()  # injected failures raised, per operation

    def fail(
        self,
        operation: str,
        times: int | None = 1,
        error: Exception | None = None,
        *,
        after_effect: bool = False,
    ) -> None:
        """Make the next ``times`` calls of ``operation`` raise ``error`` (default: a retriable
        DependencyError); ``times=None`` until ``clear``. With ``after_effect`` the call
        takes effect first and then raises: a write that landed but whose answer was lost."""
        self._faults[operation] = _Fault(error, times, after_effect)

    def clear(self, operation: str) -> None:
        """Stop failing ``operation``."""
        self._faults.pop(operation, None)

    def hold(self, operation: str) -> Gate:
        """Block the next call of ``operation`` until the returned gate is released."""
        gate = self._gates[operation] = Gate()
        return gate

    async def enter(self, operation: str, subjects: Sequence[str]) -> None:
        """Before a call's effect: wait at a gate, raise a planned failure."""
        gate = self._gates.pop(operation, None)
        if gate is not None:
            await gate.wait()
        else:
            await checkpoint()
        error = self._take(operation, after_effect=False)
        if error is not None:
            self.journal.record(f"{operation}:failed", subjects)
            raise error

    def leave(self, operation: str, subjects: Sequence[str]) -> None:
        """After a call's effect: journal it, or raise a planned lost answer."""
        error = self._take(operation, after_effect=True)
        if error is not None:
            self.journal.record(f"{operation}:lost", subjects)
            raise error
        self.journal.record(operation, subjects)

    def _take(self, operation: str, *, after_effect: bool) -> Exception | None:
        """The planned error of this call, if any (one use of the fault spent)."""
        fault = self._faults.get(operation)
        if fault is None or fault.after_effect != after_effect:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[operation]
        self.failures[operation] += 1
        if fault.error is not None:
            return fault.error
        return DependencyError(
            f"injected failure of {self.component}.{operation}",
            operation=f"{self.component}.{operation}",
            code="Injected",
            retriable=True,
        )


class Injectable:
    """What every fake port offers tests: a journal, failures and holds per operation."""

    def __init__(self, component: str, journal: Journal | None) -> None:
        self.journal = journal if journal is not None else Journal()
        self.injections = Injections(component, self.journal)

    def fail(
        self,
        operation: str,
        times: int | None = 1,
        error: Exception | None = None,
        *,
        after_effect: bool = False,
    ) -> None:
        """Make the next ``times`` calls of ``operation`` fail (see ``Injections.fail``)."""
        self.injections.fail(operation, times, error, after_effect=after_effect)

    def clear(self, operation: str) -> None:
        """Stop failing ``operation``."""
        self.injections.clear(operation)

    def hold(self, operation: str) -> Gate:
        """Block the next call of ``operation`` until the gate is released."""
        return self.injections.hold(operation)


# -- the queue ---------------------------------------------------------------------------


@dataclass
class QueuedMessage:
    """A message as the fake queue keeps it."""

    message_id: str
    body: str
    receive_count: int = 0
    receipt_handle: str | None = None  # the latest receive's; older ones are stale
    visible_at: float = 0.0


class FakeQueue(Injectable):
    """The OrderQueue port in memory, with SQS's semantics where the worker relies on them.

    - ``receive`` hands out up to ten visible messages, oldest first, each with its receive
      count raised and a new receipt handle, invisible for ``visibility_timeout`` seconds.
    - With a ``max_receive_count`` (the redrive policy), a message already received that
      many times is moved to ``dlq`` instead of being handed out again.
    - ``delete`` and ``change_visibility`` act only on a message's latest receipt handle;
      stale ones are ignored, as SQS does when another receiver has the message now.
    - Time is ``clock()`` (default: the event loop's clock) plus whatever tests ``advance``,
      so a visibility timeout can pass without waiting for it. A long poll waits at most
      ``poll_seconds`` of real time for a message, so an idle worker never holds a test up.

    Operations for ``fail``/``hold``: ``receive``, ``is_drained``, ``delete``,
    ``change_visibility``, ``depth``. Journal entries: ``receive`` (only when messages came
    back), ``delete``, ``release`` (visibility 0) and ``extend`` (a heartbeat); ``depth``
    reads change nothing and are kept apart, as the queue's time of each, in ``depth_reads``.
    """

    def __init__(
        self,
        *,
        visibility_timeout: int = 30,
        max_receive_count: int | None = 3,
        poll_seconds: float = 0.05,
        journal: Journal | None = None,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        super().__init__("sqs", journal)
        self.visibility_timeout = visibility_timeout
        self.max_receive_count = max_receive_count
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.offset = 0.0
        self.messages: dict[str, QueuedMessage] = {}  # waiting or in flight, in send order
        self.dlq: list[QueuedMessage] = []
        self.deleted: list[str] = []  # message ids, in order of deletion
        self.depth_reads: list[float] = []  # the queue's time of every depth() call
        self.dead_letters = FakeDeadLetterQueue(self)
        self._ids = itertools.count(1)
        self._handles = itertools.count(1)

    # -- for tests -----------------------------------------------------------------

    def now(self) -> float:
        """The queue's current time."""
        return self.clock() + self.offset

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for visibility timeouts, at once."""
        self.offset += seconds

    def send(self, body: str, message_id: str | None = None) -> str:
        """Enqueue a message, visible at once; returns its id."""
        message_id = message_id or f"m{next(self._ids)}"
        self.messages[message_id] = QueuedMessage(message_id, body, visible_at=self.now())
        return message_id

    def visible(self) -> list[QueuedMessage]:
        """Messages a receive would hand out now."""
        now = self.now()
        return [m for m in self.messages.values() if m.visible_at <= now]

    def in_flight(self) -> list[QueuedMessage]:
        """Messages received and not yet visible again."""
        now = self.now()
        return [m for m in self.messages.values() if m.visible_at > now]

    # -- the port ------------------------------------------------------------------

    async def receive(self, wait_seconds: int | None = None) -> list[Message]:
        """Up to ten visible messages; waits (briefly, see the class) when none is."""
        await self.injections.enter("receive", ())
        wait = self.poll_seconds if wait_seconds is None else min(wait_seconds, self.poll_seconds)
        deadline = anyio.current_time() + wait
        while True:
            received = self._take_visible()
            if received or anyio.current_time() >= deadline:
                break
            await anyio.sleep(min(0.01, max(deadline - anyio.current_time(), 0.0)))
        if received:
            self.injections.leave("receive", [m.message_id for m in received])
        return received

    def _take_visible(self) -> list[Message]:
        received: list[Message] = []
        for queued in self.visible():
            if len(received) == SQS_BATCH_LIMIT:
                break
            if (
                self.max_receive_count is not None
                and queued.receive_count >= self.max_receive_count
            ):
                del self.messages[queued.message_id]
                self.dlq.append(queued)
                continue
            queued.receive_count += 1
            queued.receipt_handle = f"{queued.message_id}/{next(self._handles)}"
            queued.visible_at = self.now() + self.visibility_timeout
            received.append(
                Message(queued.message_id, queued.receipt_handle, queued.body, queued.receive_count)
            )
        return received

    async def is_drained(self) -> bool:
        """True when no message is waiting or in flight."""
        await self.injections.enter("is_drained", ())
        return not self.messages

    async def depth(self) -> QueueDepth:
        """How many messages are visible and in flight (the QueueDepthSource port)."""
        self.depth_reads.append(self.now())
        await self.injections.enter("depth", ())
        return QueueDepth(visible=len(self.visible()), in_flight=len(self.in_flight()))

    def _current(self, messages: Sequence[Message]) -> list[QueuedMessage]:
        """The queued messages these receipts still designate (distinct; stale ones left out)."""
        found: dict[str, QueuedMessage] = {}
        for message in messages:
            queued = self.messages.get(message.message_id)
            if queued is not None and queued.receipt_handle == message.receipt_handle:
                found[queued.message_id] = queued
        return list(found.values())

    async def delete(self, messages: Sequence[Message]) -> int:
        """Delete the messages whose receipt is current; returns how many were."""
        ids = [m.message_id for m in messages]
        await self.injections.enter("delete", ids)
        current = self._current(messages)
        for queued in current:
            del self.messages[queued.message_id]
            self.deleted.append(queued.message_id)
        self.injections.leave("delete", ids)
        return len(current)

    async def change_visibility(self, messages: Sequence[Message], seconds: int) -> None:
        """Make messages visible ``seconds`` from now (0: at once); stale receipts ignored."""
        operation = "release" if seconds == 0 else "extend"
        ids = [m.message_id for m in messages]
        await self.injections.enter("change_visibility", ids)
        for queued in self._current(messages):
            queued.visible_at = self.now() + seconds
        self.journal.record(operation, ids)


class FakeDeadLetterQueue(Injectable):
    """A FakeQueue's ``dlq`` as the worker sees it: only its depth (QueueDepthSource).

    Operation for ``fail``/``hold``: ``depth``; ``depth_reads`` as FakeQueue's.
    """

    def __init__(self, queue: FakeQueue) -> None:
        super().__init__("sqs-dlq", queue.journal)
        self.queue = queue
        self.depth_reads: list[float] = []

    async def depth(self) -> QueueDepth:
        """Every dead-lettered message is visible there (nothing consumes it)."""
        self.depth_reads.append(self.queue.now())
        await self.injections.enter("depth", ())
        return QueueDepth(visible=len(self.queue.dlq), in_flight=0)


# -- the store ---------------------------------------------------------------------------


def join_record(stored: OrderRecord, incoming: OrderRecord, expires_at: int) -> OrderRecord:
    """``incoming`` joined into ``stored`` as the DynamoDB update does it
    (``service.aws.items.order_update``): submissions and completions added to sets, a
    cancellation sticky, the expiry set once."""
    joined = stored.join(incoming._replace(expires_at=None, anomaly_reported=False))
    return joined if joined.expires_at is not None else joined._replace(expires_at=expires_at)


class FakeStore(Injectable):
    """The OrderStore port in memory, on the pure core, with DynamoStore's semantics.

    - ``records``: order records, each call's records joined in with ``join_record``.
    - ``keys``: each key's durable state (``KeyState``), view and version. ``commit``
      starts from this process's cache (``cached``; the durable copy for a key not cached)
      and runs ``WindowCommit`` and ``TenantCommit`` with the stores' one driver
      (``drive_commit``) over ``FakeWrites``: a round's proposals are written all together
      only if every expected version still holds (a transaction); keys that lost are
      re-read, joined and proposed again, within the rules' limits.
    - ``bump(key, records)``: another writer joins records into a key behind this
      process's cache, so the next merge of that key must re-read and join.

    Operations for ``fail``/``hold``: ``apply``, ``commit``, ``mark``. A lost answer on
    ``commit`` (``after_effect``) leaves the keys written but the cache stale, as a
    timed-out write does. Journal entries: ``apply`` (order ids), ``commit`` (keys),
    ``mark`` (order ids), ``bump``.
    """

    def __init__(
        self,
        *,
        window_size: int = setting_default("window_size"),
        ttl_seconds: int = setting_default("pending_ttl_seconds"),
        estimates: EstimateOptions | None = None,
        journal: Journal | None = None,
        observer: Observer | None = None,
        tenant_cap: int = MAX_TENANT_ORDERS,
    ) -> None:
        super().__init__("dynamodb", journal)
        self.window_size = window_size
        self.ttl_seconds = ttl_seconds
        self.estimates = estimates or estimate_options(
            setting_default("max_wait_seconds"), setting_default("estimator")
        )
        self.max_wait_seconds = self.estimates.max_wait_seconds
        self.observer = observer
        self.records: dict[str, OrderRecord] = {}
        self.keys: dict[WindowKey, StoredKey] = {}
        self.cached: dict[WindowKey, StoredKey] = {}
        self.tenant_states: dict[str, StoredTenant] = {}
        self.cached_tenant_states: dict[str, StoredTenant] = {}
        self.tenant_cap = tenant_cap
        self.conflicts = 0

    # -- for tests -----------------------------------------------------------------

    def stored(self, key: WindowKey) -> StoredKey:
        """The durable state of a key (empty at version 0 when none)."""
        return self.keys.get(key) or StoredKey.empty(key, self.window_size)

    def window(self, key: WindowKey) -> WindowState:
        """The durable window of a key (empty at version 0 when none)."""
        stored = self.stored(key)
        return WindowState(stored.view, stored.version)

    def tenant(self, tenant: str, now: int | None = None) -> StoredTenant:
        """The durable state of a tenant (empty at version 0 when none), its view
        computed again at ``now`` (None: its latest event) as DynamoStore does when it
        reads the item."""
        stored = self.tenant_states.get(tenant)
        if stored is None:
            return StoredTenant.empty(tenant)
        latest = stored.state.latest_event() or 0
        return StoredTenant.of(
            stored.state,
            stored.version,
            now=latest if now is None else now,
            options=self.estimates,
        )

    def bump_tenant(self, tenant: str, records: Iterable[OrderRecord], now: int) -> None:
        """Another writer joins ``records`` into a stored tenant: its version rises."""
        current = self.tenant(tenant, now)
        state = current.state.add(records)
        self.tenant_states[tenant] = StoredTenant.of(
            state, current.version + 1, now=now, options=self.estimates
        )
        self.journal.record("bump", [tenant])

    def bump(self, key: WindowKey, records: Iterable[OrderRecord] = ()) -> WindowState:
        """Another writer joins ``records`` into a stored key: its version rises."""
        current = self.stored(key)
        state = current.state.add(records)
        self.keys[key] = StoredKey(state, state.view(self.max_wait_seconds), current.version + 1)
        self.journal.record("bump", [key_name(key)])
        return self.window(key)

    # -- the port ------------------------------------------------------------------

    @property
    def cached_windows(self) -> int:
        """How many windows this process holds in memory."""
        return len(self.cached)

    @property
    def cached_tenants(self) -> int:
        """How many tenant states this process holds in memory."""
        return len(self.cached_tenant_states)

    async def apply_all(self, records: Sequence[OrderRecord], now: int) -> dict[str, OrderRecord]:
        """Join each record into its stored record; the stored records after the join."""
        if not records:
            return {}  # as DynamoStore: no call at all
        ids = [r.order_id for r in records]
        assert len(set(ids)) == len(ids), "apply_all takes distinct order ids"
        await self.injections.enter("apply", ids)
        expires_at = now + self.ttl_seconds
        joined: dict[str, OrderRecord] = {}
        for record in records:
            stored = self.records.get(record.order_id) or OrderRecord(record.order_id)
            joined[record.order_id] = self.records[record.order_id] = join_record(
                stored, record, expires_at
            )
        self.injections.leave("apply", ids)
        return joined

    async def mark_anomalies(self, kinds: Mapping[str, str]) -> set[str]:
        """Set each order's anomaly mark once; the orders this call marked."""
        ids = sorted(kinds)
        await self.injections.enter("mark", ids)
        marked = set()
        for order_id in ids:
            stored = self.records.get(order_id) or OrderRecord(order_id)
            if not stored.anomaly_reported:
                self.records[order_id] = stored._replace(anomaly_reported=True)
                marked.add(order_id)
        self.injections.leave("mark", ids)
        return marked

    async def tenant_views(self, tenants: Iterable[str], now: int) -> dict[str, Estimate | None]:
        """Each tenant's estimate as this process last committed or read it (no fault
        point: DynamoStore reads only what it has not cached)."""
        found = {}
        for tenant in tenants:
            stored = self.cached_tenant_states.get(tenant) or self.tenant(tenant, now)
            self.cached_tenant_states[tenant] = stored
            found[tenant] = stored.view
        return found

    async def commit(
        self,
        windows: Mapping[WindowKey, Sequence[OrderRecord]],
        tenants: Mapping[str, Sequence[OrderRecord]],
        now: int,
    ) -> Committed:
        """Join records into the stored key and tenant states with conditional, versioned
        writes: one transaction for every proposal, written only if every expected version
        holds."""
        if not windows and not tenants:
            return Committed([], [])
        keys = [key_name(key) for key in windows]
        await self.injections.enter("commit", keys)
        states = {key: self.cached.get(key) or self.stored(key) for key in windows}
        tenant_states = {
            t: self.cached_tenant_states.get(t) or self.tenant(t, now) for t in tenants
        }
        window_commit = WindowCommit(
            windows, states, now=now, max_wait_seconds=self.max_wait_seconds
        )
        tenant_commit = TenantCommit(
            tenants,
            tenant_states,
            now=now,
            options=self.estimates,
            cap=self.tenant_cap,
        )
        result = await drive_commit(window_commit, tenant_commit, FakeWrites(self, now))
        self.injections.leave("commit", keys)  # a lost answer leaves the cache stale
        for key_committed in result.windows:
            self.cached[key_committed.key] = key_committed.stored
        for tenant_committed in result.tenants:
            self.cached_tenant_states[tenant_committed.tenant] = tenant_committed.stored
        return committed(result, tenant_commit.dropped)


class FakeWrites:
    """``FakeStore``'s I/O for one commit (``CommitWrites``): every proposal in one
    transaction, written only if every expected version holds; no wait between rounds."""

    def __init__(self, store: FakeStore, now: int) -> None:
        self.store, self.now = store, now

    async def write(
        self, proposals: Proposals[WindowKey, StoredKey, str, StoredTenant]
    ) -> Written[WindowKey, str]:
        """All of the round's proposals, or none when any expected version moved."""
        store = self.store
        lost = frozenset(
            k for k, p in proposals.windows.items() if store.stored(k).version != p.version - 1
        )
        lost_tenants = frozenset(
            t
            for t, p in proposals.tenants.items()
            if store.tenant(t, self.now).version != p.version - 1
        )
        if lost or lost_tenants:
            store.conflicts += len(lost) + len(lost_tenants)
            for _ in range(len(lost) + len(lost_tenants)):
                if store.observer is not None:
                    store.observer.window_conflict()
            return Written(lost=Subjects(lost, lost_tenants))
        store.keys.update(proposals.windows)
        store.tenant_states.update(proposals.tenants)
        return Written(landed=Subjects(frozenset(proposals.windows), frozenset(proposals.tenants)))

    async def reread(
        self, lost: Subjects[WindowKey, str]
    ) -> Reread[WindowKey, StoredKey, str, StoredTenant]:
        """The durable states of what lost."""
        store = self.store
        return Reread(
            {key: store.stored(key) for key in lost.windows},
            {t: store.tenant(t, self.now) for t in lost.tenants},
        )

    async def contended(self, rounds: int) -> None:
        """The other writer finished at once: nothing to wait for."""


# -- the publisher -----------------------------------------------------------------------


class RecordingPublisher(Injectable):
    """The EventPublisher port in memory: keeps every detail it was asked to publish.

    ``published``: every average accepted, in order; ``estimates``: every estimate;
    ``calls``: the details of each call, both kinds. Operation for ``fail``/``hold``:
    ``publish``. Journal entry: ``publish`` with ``tenant/drink@version`` per average and
    ``tenant@version`` per estimate.
    """

    def __init__(self, *, journal: Journal | None = None) -> None:
        super().__init__("events", journal)
        self.published: list[DrinkAverageTime] = []
        self.estimates: list[WaitEstimate] = []
        self.calls: list[list[Published]] = []

    async def publish(self, details: Sequence[Published]) -> None:
        """Record every detail, or raise an injected failure (nothing recorded then)."""
        subjects = [
            f"{d.eventId}/{d.drink}@{d.version}"
            if isinstance(d, DrinkAverageTime)
            else f"{d.eventId}@{d.version}"
            for d in details
        ]
        await self.injections.enter("publish", subjects)
        for detail in details:
            if isinstance(detail, DrinkAverageTime):
                self.published.append(detail)
            else:
                self.estimates.append(detail)
        self.calls.append(list(details))
        self.injections.leave("publish", subjects)

    def latest(self, key: WindowKey) -> DrinkAverageTime:
        """The last detail published for a key (AssertionError when none)."""
        for detail in reversed(self.published):
            if (detail.eventId, detail.drink) == key:
                return detail
        raise AssertionError(f"nothing published for {key_name(key)}")


# -- the observer ------------------------------------------------------------------------


@dataclass
class RecordingObserver:
    """The Observer port in memory: counts every report and keeps its arguments.

    ``counts``: calls per method name; ``calls``: every call in order, with its arguments.
    ``ready`` follows ``retrying`` (False) and ``dependencies_ok`` (True); ``readiness``
    is the value after each of those calls.
    """

    counts: Counter[str] = field(default_factory=Counter)
    calls: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    ready: bool = True
    readiness: list[bool] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    late_halves: int = 0
    averages: list[tuple[WindowKey, float | None, int]] = field(default_factory=list)
    retries: list[tuple[str, WaitTimesError]] = field(default_factory=list)
    flushes: list[dict[str, object]] = field(default_factory=list)
    depths: dict[str, QueueDepth] = field(default_factory=dict)  # the latest, by queue
    estimates: dict[str, Estimate] = field(default_factory=dict)  # the latest, by tenant
    scored: list[tuple[str, float, bool]] = field(default_factory=list)
    unscored: list[tuple[str, str]] = field(default_factory=list)
    tenant_dropped: int = 0

    def _record(self, method: str, **arguments: object) -> None:
        self.counts[method] += 1
        self.calls.append((method, arguments))

    def flush_started(self, messages: int, redelivered: int) -> None:
        """Record a flush's start."""
        self._record("flush_started", messages=messages, redelivered=redelivered)

    def flush_finished(
        self,
        *,
        processed: int,
        ignored: int,
        deleted: int,
        seconds: float,
        windows_tracked: int,
        tenants_tracked: int,
    ) -> None:
        """Record what a flush did."""
        arguments: dict[str, object] = {
            "processed": processed,
            "ignored": ignored,
            "deleted": deleted,
            "seconds": seconds,
            "windows_tracked": windows_tracked,
            "tenants_tracked": tenants_tracked,
        }
        self.flushes.append(arguments)
        self._record("flush_finished", **arguments)

    def poison(self, reason: str) -> None:
        """Record a message on its way to the dead-letter queue."""
        self.poisoned.append(reason)
        self._record("poison", reason=reason)

    def anomaly(self, kind: str) -> None:
        """Record an order whose wait is never averaged."""
        self.anomalies.append(kind)
        self._record("anomaly", kind=kind)

    def late_half(self, count: int) -> None:
        """Record halves that came after their order's record expired."""
        self.late_halves += count
        self._record("late_half", count=count)

    def average_published(self, key: WindowKey, duration: float | None, samples: int) -> None:
        """Record a published average."""
        self.averages.append((key, duration, samples))
        self._record("average_published", key=key, duration=duration, samples=samples)

    def tenant_estimate(self, estimate: Estimate) -> None:
        """Record a tenant's current view."""
        self.estimates[estimate.tenant] = estimate
        self._record("tenant_estimate", estimate=estimate)

    def estimate_scored(self, tenant: str, error_seconds: float, over_p90: bool) -> None:
        """Record a scored estimate."""
        self.scored.append((tenant, error_seconds, over_p90))
        self._record(
            "estimate_scored", tenant=tenant, error_seconds=error_seconds, over_p90=over_p90
        )

    def estimate_unscored(self, tenant: str, reason: str) -> None:
        """Record an order completed with no estimate to score."""
        self.unscored.append((tenant, reason))
        self._record("estimate_unscored", tenant=tenant, reason=reason)

    def tenant_orders_dropped(self, count: int) -> None:
        """Record orders a tenant's cap dropped."""
        self.tenant_dropped += count
        self._record("tenant_orders_dropped", count=count)

    def visibility_extended(self) -> None:
        """Record a heartbeat."""
        self._record("visibility_extended")

    def aws_call(self, service: str, operation: str) -> None:
        """Record an API request."""
        self._record("aws_call", service=service, operation=operation)

    def items(self, operation: str, count: int) -> None:
        """Record DynamoDB items written or read."""
        self._record("items", operation=operation, count=count)

    def window_conflict(self) -> None:
        """Record a lost window race."""
        self._record("window_conflict")

    def events_published(self, accepted: int, refused: int) -> None:
        """Record a PutEvents result."""
        self._record("events_published", accepted=accepted, refused=refused)

    def queue_depth(self, queue: str, depth: QueueDepth) -> None:
        """Record a queue's depth."""
        self.depths[queue] = depth
        self._record("queue_depth", queue=queue, depth=depth)

    def retrying(self, stage: str, error: WaitTimesError) -> None:
        """Record a retry: not ready."""
        self.retries.append((stage, error))
        self.ready = False
        self.readiness.append(False)
        self._record("retrying", stage=stage, error=error)

    def dependencies_ok(self) -> None:
        """Record that dependencies answered: ready."""
        self.ready = True
        self.readiness.append(True)
        self._record("dependencies_ok")

    def stages_retried(self) -> list[str]:
        """The stage of every retry, in order."""
        return [stage for stage, _ in self.retries]


@dataclass
class Fakes:
    """The three fake ports and an observer sharing one journal, ready for a Worker."""

    journal: Journal
    queue: FakeQueue
    store: FakeStore
    publisher: RecordingPublisher
    observer: RecordingObserver

    @classmethod
    def create(
        cls,
        *,
        visibility_timeout: int = 30,
        max_receive_count: int | None = 3,
        window_size: int = 10,
        clock: Callable[[], float] = anyio.current_time,
    ) -> Fakes:
        """Fresh fakes sharing one journal; the store reports window conflicts to the observer."""
        journal = Journal()
        observer = RecordingObserver()
        return cls(
            journal=journal,
            queue=FakeQueue(
                visibility_timeout=visibility_timeout,
                max_receive_count=max_receive_count,
                journal=journal,
                clock=clock,
            ),
            store=FakeStore(window_size=window_size, journal=journal, observer=observer),
            publisher=RecordingPublisher(journal=journal),
            observer=observer,
        )
