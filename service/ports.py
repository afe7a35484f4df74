"""The ports: what the worker needs from the world, as Protocols, and the values they pass.

The worker is written against these; the AWS adapters (``service.aws``) implement them for
production, in-memory fakes (``tests/fakes.py``) for fast tests, and ``service.metrics``
implements the observer. Every method that talks to AWS raises only the service's own
errors (``service.errors``): ``DependencyError`` (with ``retriable``) or
``ConfigurationError``; the worker decides what to retry from that alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from service.core.estimate import Estimate
from service.core.pairing import Anomalous, OrderRecord
from service.core.published import Published
from service.core.window import Window, WindowKey
from service.errors import PoisonMessageError, WaitTimesError

T = TypeVar("T")

# AWS's own limit, in AWS's word "batch": at most 10 messages per ReceiveMessage (one
# receive) and 10 entries per DeleteMessageBatch or ChangeMessageVisibilityBatch. A flush
# (what the worker processes together) may hold several receives.
SQS_BATCH_LIMIT = 10


@dataclass(frozen=True, slots=True)
class Message:
    """One received message."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


def final_poison(
    poison: Sequence[tuple[Message, PoisonMessageError]], redrive_limit: int | None
) -> list[tuple[Message, PoisonMessageError]]:
    """The poison messages on the receive after which the redrive policy moves them to the
    dead-letter queue (every one without a DLQ): each is reported once, then. The one
    poison rule of the worker's flush and the board's feed."""
    return [
        (message, error)
        for message, error in poison
        if redrive_limit is None or message.receive_count >= redrive_limit
    ]


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """How many messages a queue holds, as SQS approximates them."""

    visible: int  # waiting to be received (ApproximateNumberOfMessages)
    in_flight: int  # received and not yet deleted or visible again (...NotVisible)


@dataclass(frozen=True, slots=True)
class WindowState:
    """A window as last written, with its version (rises with every change, across workers)."""

    window: Window
    version: int


@dataclass(frozen=True, slots=True)
class WindowChange:
    """The result of merging entries into a stored window: ``changed`` if this call wrote it."""

    key: WindowKey
    state: WindowState
    changed: bool

    @property
    def subject(self) -> WindowKey:
        """What the change is of (its published average's key)."""
        return self.key

    @property
    def shown(self) -> bool:
        """Whether there is a value to publish: the window holds a sample."""
        return self.state.window.samples > 0


@dataclass(frozen=True, slots=True)
class TenantChange:
    """Where a tenant ended after a commit: its estimate (None while it has none) at
    ``version``; ``changed`` if its estimate changed in whole seconds (``Estimate.rounded``);
    ``counted``: the orders this commit was the first to hold completed, waits that count
    (to score, once each)."""

    tenant: str
    estimate: Estimate | None
    version: int
    changed: bool
    counted: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        """What the change is of (its published estimate's tenant)."""
        return self.tenant

    @property
    def shown(self) -> bool:
        """Whether there is a value to publish: the tenant has an estimate."""
        return self.estimate is not None


@dataclass(frozen=True, slots=True)
class Committed:
    """What one commit did: every key's and every tenant's change, and how many orders the
    tenants' cap dropped."""

    windows: list[WindowChange]
    tenants: list[TenantChange]
    dropped: int = 0


class OrderQueue(Protocol):
    """Where messages come from (SQS in production). At-least-once: anything not deleted
    comes back after ``visibility_timeout`` seconds.

    A *receive* is one call of ``receive`` (one SQS ReceiveMessage); a *flush* is what the
    worker processes together: one receive, or several while they come back full.
    """

    visibility_timeout: int

    async def receive(self, wait_seconds: int | None = None) -> list[Message]:
        """One receive: up to ``SQS_BATCH_LIMIT`` messages, waiting up to ``wait_seconds``
        for the first (None: the queue's long poll; 0: only what is waiting). Empty when
        none came."""
        ...

    async def is_drained(self) -> bool:
        """True when no message is waiting and none is in flight anywhere (burst mode)."""
        ...

    async def delete(self, messages: Sequence[Message]) -> int:
        """Delete messages whose effect is durable (a flush's, however many receives brought
        them); returns how many the queue confirmed. A stale receipt (another receiver has
        the message now) is not an error."""
        ...

    async def change_visibility(self, messages: Sequence[Message], seconds: int) -> None:
        """Keep messages invisible for ``seconds`` more (a heartbeat), or 0: release them now."""
        ...


class QueueDepthSource(Protocol):
    """A queue whose depth the worker exports: its own queue and its dead-letter queue."""

    async def depth(self) -> QueueDepth:
        """The queue's current depth (one request)."""
        ...


class OrderStore(Protocol):
    """Where order records, windows and tenant states are kept durably (DynamoDB in
    production).

    ``apply_all`` and ``commit`` are joins: repeating them, in any order, from any number
    of workers, converges on the same state.
    """

    @property
    def cached_windows(self) -> int:
        """How many windows this process holds in memory."""
        ...

    @property
    def cached_tenants(self) -> int:
        """How many tenant states this process holds in memory."""
        ...

    async def tenant_views(self, tenants: Iterable[str], now: int) -> dict[str, Estimate | None]:
        """Each tenant's current estimate (None while it has none), as this process last
        committed or read it."""
        ...

    async def apply_all(self, records: Sequence[OrderRecord], now: int) -> dict[str, OrderRecord]:
        """Join each record (distinct order ids) into its stored record durably; returns the
        stored records after the join, by order id, read after this write."""
        ...

    async def commit(
        self,
        windows: Mapping[WindowKey, Sequence[OrderRecord]],
        tenants: Mapping[str, Sequence[OrderRecord]],
        now: int,
    ) -> Committed:
        """Join order records into their keys' and tenants' stored states durably,
        settling what expired by ``now``; one change per key, ``changed`` when its window
        (the view) changed, and one per tenant."""
        ...

    async def mark_anomalies(self, kinds: Mapping[str, str]) -> set[str]:
        """Mark orders (order id → anomaly kind) as reported, once: returns those this call
        marked (another worker, or an earlier delivery, may have marked the rest)."""
        ...


class EventPublisher(Protocol):
    """Where averages and estimates go (EventBridge in production)."""

    async def publish(self, details: Sequence[Published]) -> None:
        """Publish every detail (each under its own detail-type), or raise: nothing is
        silently dropped."""
        ...


class Observer(Protocol):
    """Everything the worker and the adapters report: metrics, readiness. One seam."""

    def flush_started(self, messages: int, redelivered: int) -> None:
        """A flush starts: ``messages`` messages from one or several receives, processed
        together (``redelivered`` of them received before)."""
        ...

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
        """A flush made its effects durable, published and deleted its messages;
        ``seconds`` is how long that took, its receives excluded. ``windows_tracked`` and
        ``tenants_tracked``: the windows and tenant states this process holds in memory."""
        ...

    def poison(self, reason: str) -> None:
        """A message is on its way to the dead-letter queue (reported once per message)."""
        ...

    def anomaly(self, kind: str) -> None:
        """A paired order whose wait is never averaged (reported once per order)."""
        ...

    def late_half(self, count: int) -> None:
        """Halves of orders whose record had already expired: never paired."""
        ...

    def average_published(self, key: WindowKey, duration: float | None, samples: int) -> None:
        """A key's average went out on the bus."""
        ...

    def tenant_estimate(self, estimate: Estimate) -> None:
        """A tenant's current view after a flush committed its state: its open orders and
        each drink's estimate and p90 (whether or not it changed, or was published)."""
        ...

    def estimate_scored(self, tenant: str, error_seconds: float, over_p90: bool) -> None:
        """An order completed, and the estimate in force when its submission was processed
        is scored: the absolute error, and whether the wait exceeded the p90 (once per
        order, by the worker whose commit first counted it)."""
        ...

    def estimate_unscored(self, tenant: str, reason: str) -> None:
        """An order completed with no estimate to score: ``no_estimate`` (none was in force
        for its drink when its submission was processed) or ``completed_first`` (its
        completion was processed before, or with, its submission)."""
        ...

    def tenant_orders_dropped(self, count: int) -> None:
        """A tenant's state reached its cap and lost its oldest orders (approximate open
        counts and estimates for it from then on)."""
        ...

    def visibility_extended(self) -> None:
        """A heartbeat kept a slow flush's messages invisible."""
        ...

    def aws_call(self, service: str, operation: str) -> None:
        """An API request was sent (botocore's own retries included)."""
        ...

    def items(self, operation: str, count: int) -> None:
        """A DynamoDB call wrote or read ``count`` items."""
        ...

    def window_conflict(self) -> None:
        """A conditional window write lost to another writer and was merged again."""
        ...

    def events_published(self, accepted: int, refused: int) -> None:
        """A PutEvents call: entries accepted and refused (refused ones are sent again)."""
        ...

    def queue_depth(self, queue: str, depth: QueueDepth) -> None:
        """The depth of a watched queue (``main`` or ``dlq``), as just read."""
        ...

    def retrying(self, stage: str, error: WaitTimesError) -> None:
        """A dependency failed and the worker will try ``stage`` again: not ready."""
        ...

    def dependencies_ok(self) -> None:
        """Dependencies answered: ready."""
        ...


class Retry(Protocol):
    """How a flush runs a step that may fail retriably: the worker's one retry loop."""

    def __call__(self, step: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """Run ``call`` until it succeeds, or raise once it fails for good."""
        ...


@dataclass(frozen=True, slots=True)
class Score:
    """An order's estimate scored once it completed: the absolute error and whether the
    wait exceeded the p90; ``reason`` instead when there was nothing to score
    (``no_estimate``, ``completed_first``)."""

    tenant: str
    order_id: str
    error: float = 0.0
    over_p90: bool = False
    reason: str | None = None


@dataclass
class FlushOutcome:
    """What one flush did, for the observer, tests and logs."""

    processed: int = 0
    ignored: int = 0
    poison: int = 0
    published: int = 0
    deleted: int = 0
    changed_keys: list[WindowKey] = field(default_factory=list)
    late_halves: int = 0
    anomalies: list[Anomalous] = field(default_factory=list)  # marked by this flush
    averages: list[WindowChange] = field(default_factory=list)
    estimates: list[TenantChange] = field(default_factory=list)  # published
    tenants: list[TenantChange] = field(default_factory=list)  # every tenant committed
    scores: list[Score] = field(default_factory=list)
    tenant_orders_dropped: int = 0
    final_poison: list[tuple[Message, PoisonMessageError]] = field(default_factory=list)
    seconds: float = 0.0


class FlushRunner(Protocol):
    """Processes the messages of one flush (``service.flush.Flush``): the worker's runner."""

    async def run(self, messages: Sequence[Message], retry: Retry) -> FlushOutcome:
        """Make the flush's effects durable, publish, then delete its messages, running
        every step that may fail retriably through ``retry``. Idempotent."""
        ...
