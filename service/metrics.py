"""The observer of production on Prometheus: the worker's series and the ``Observer`` port
on them.

``PrometheusObserver`` implements the ``Observer`` port (``service.ports``) that the worker
and the adapters report through; ``Metrics`` holds the series (those labelled by tenant
capped in number). Readiness is ``service.readiness``, which the observer changes; the HTTP
endpoints that serve both are ``service.endpoints``. (The series and the observer share
this module: the observer stands on the series, and a module of its own would put the
command line one floor over tests/test_layout.py's limit.)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.core.estimate import Estimate
from service.core.tenant import MAX_TENANT_ORDERS
from service.core.window import WindowKey
from service.errors import WaitTimesError
from service.ports import QueueDepth
from service.readiness import Health
from service.settings import setting_default

# The tenant label of the scoring counters for every tenant past the cap (``Metrics``).
OTHER_TENANT = "_other"
# The estimate's absolute error: seconds to the default maximum wait (2 hours).
ESTIMATE_ERROR_BUCKETS = (5, 10, 20, 30, 60, 90, 120, 180, 300, 600, 900, 1800, 3600, 7200)
UNSCORED_REASONS = ("no_estimate", "completed_first", "moved")


class Metrics:
    """All of the worker's series, on a registry of its own (several workers fit in a test).

    Labels that name a tenant come from the events, so their series are capped, each cap at
    ``max_average_series`` (``WAIT_TIMES_MAX_METRIC_SERIES``):

    - (tenant, drink) keys of the averages, and separately those of the estimates: a key
      past the cap has no series, and each of its updates counts in
      ``wait_times_metric_series_dropped_total``;
    - tenants with series of their own: the first ``max_average_series`` this worker hears
      of. A tenant past the cap has no open-orders or as-of series (each view not exported
      counts as dropped, once for the tenant and once per drink) and no estimate series;
      its scores and unscored orders are counted under ``tenant="_other"`` (shared with a
      tenant of that name, if one ever comes), so totals over tenants stay exact. A tenant's scoring series start at zero when it is first heard
      of, so ``increase()`` sees its first orders.
    """

    def __init__(self, max_average_series: int = setting_default("max_metric_series")) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.max_average_series = max_average_series
        self.messages_received = Counter(
            "wait_times_messages_received", "SQS messages received", registry=r
        )
        self.messages_processed = Counter(
            "wait_times_messages_processed", "Order events applied durably", registry=r
        )
        self.messages_ignored = Counter(
            "wait_times_messages_ignored",
            "Messages of detail-types the service ignores",
            registry=r,
        )
        self.messages_failed = Counter(
            "wait_times_messages_failed",
            "Poison messages sent towards the dead-letter queue, by reason",
            ["reason"],
            registry=r,
        )
        self.messages_redelivered = Counter(
            "wait_times_messages_redelivered", "Messages received more than once", registry=r
        )
        self.messages_deleted = Counter(
            "wait_times_messages_deleted",
            "Messages deleted after their effect was durable",
            registry=r,
        )
        self.flush_seconds = Histogram(
            "wait_times_flush_seconds",
            "Time to process one flush (one or several receives), its receives excluded",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.flush_messages = Histogram(
            "wait_times_flush_messages",
            "Messages processed together in one flush (one or several receives)",
            buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320),
            registry=r,
        )
        self.events_published = Counter(
            "wait_times_events_published",
            "DrinkAverageTime events accepted by EventBridge",
            registry=r,
        )
        self.publish_failures = Counter(
            "wait_times_publish_failures",
            "DrinkAverageTime entries EventBridge refused",
            registry=r,
        )
        self.anomalies = Counter(
            "wait_times_anomalies",
            "Paired orders whose wait is never averaged",
            ["kind"],
            registry=r,
        )
        self.expired_halves = Counter(
            "wait_times_expired_halves",
            "Halves of orders whose record had already expired: never paired",
            registry=r,
        )
        self.aws_retries = Counter(
            "wait_times_aws_retries",
            "AWS calls retried after a retriable failure",
            ["operation", "error"],
            registry=r,
        )
        self.aws_calls = Counter(
            "wait_times_aws_calls",
            "AWS API requests sent, retries included, by service and operation",
            ["service", "operation"],
            registry=r,
        )
        self.dynamodb_items = Counter(
            "wait_times_dynamodb_items",
            "Items the store wrote or read, by DynamoDB operation (a BatchGetItem or "
            "TransactWriteItems call carries several)",
            ["operation"],
            registry=r,
        )
        self.window_conflicts = Counter(
            "wait_times_window_conflicts",
            "Conditional window writes that lost to another writer and were merged again",
            registry=r,
        )
        self.visibility_extensions = Counter(
            "wait_times_visibility_extensions",
            "Heartbeats that kept a slow flush's messages invisible",
            registry=r,
        )
        self.windows_tracked = Gauge(
            "wait_times_windows_tracked", "Windows held in this worker's memory", registry=r
        )
        self.tenants_tracked = Gauge(
            "wait_times_tenants_tracked", "Tenant states held in this worker's memory", registry=r
        )
        self.average_wait = Gauge(
            "wait_times_average_wait_seconds",
            "Current average wait per tenant and drink (bounded number of series)",
            ["tenant", "drink"],
            registry=r,
        )
        self.window_samples = Gauge(
            "wait_times_window_samples",
            "Orders averaged in the window per tenant and drink (same series cap)",
            ["tenant", "drink"],
            registry=r,
        )
        self.series_dropped = Counter(
            "wait_times_metric_series_dropped",
            "Updates not exported because a series cap was reached: (tenant, drink) averages "
            "and estimates, tenant views",
            registry=r,
        )
        self.ready = Gauge("wait_times_ready", "1 while AWS dependencies answer", registry=r)
        self.queue_messages = Gauge(
            "wait_times_queue_messages",
            "Messages in the queue (main) and its dead-letter queue (dlq) as this worker last "
            "read them (GetQueueAttributes, every 30 s): visible (waiting) or in_flight "
            "(received, not yet deleted)",
            ["queue", "state"],
            registry=r,
        )
        self.queue_read = Gauge(
            "wait_times_queue_read_timestamp_seconds",
            "When this worker last read the queue's depth (Unix time): how old "
            "wait_times_queue_messages is",
            ["queue"],
            registry=r,
        )
        self._average_keys: set[WindowKey] = set()
        self.estimates = EstimateSeries(r, max_average_series, self.series_dropped)

    def observe_average(self, key: WindowKey, duration: float | None, samples: int) -> None:
        """Export a window's average, unless that would pass the series cap."""
        if key not in self._average_keys:
            if len(self._average_keys) >= self.max_average_series:
                self.series_dropped.inc()
                return
            self._average_keys.add(key)
        tenant, drink = key
        self.average_wait.labels(tenant, drink).set(
            duration if duration is not None else float("nan")
        )
        self.window_samples.labels(tenant, drink).set(samples)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample by its exposed name (``..._total`` for counters);
        0.0 for a series not yet seen. The public way to read a metric (demo, tests)."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


class EstimateSeries:
    """The estimate's series, within the tenant and key caps ``Metrics`` describes."""

    def __init__(self, r: CollectorRegistry, cap: int, series_dropped: Counter) -> None:
        self.max_average_series = cap
        self.series_dropped = series_dropped
        self.open_orders = Gauge(
            "wait_times_open_orders",
            "Open orders per tenant (exact: from its durable state) in the view this worker "
            "last committed; across workers, take the series with the greatest "
            "wait_times_estimate_as_of_timestamp_seconds (tenant cap)",
            ["tenant"],
            registry=r,
        )
        self.estimate_as_of = Gauge(
            "wait_times_estimate_as_of_timestamp_seconds",
            "Event time (Unix) of the tenant view this worker last committed: across "
            "workers, the greatest is the current view (tenant cap)",
            ["tenant"],
            registry=r,
        )
        self.estimate = Gauge(
            "wait_times_estimate_seconds",
            "Predicted wait per tenant and drink in the view this worker last committed; NaN "
            "once that view has none for the drink (series cap, as the averages)",
            ["tenant", "drink"],
            registry=r,
        )
        self.estimate_p90 = Gauge(
            "wait_times_estimate_p90_seconds",
            "p90 of the wait per tenant and drink in the view this worker last committed; NaN "
            "once that view has none for the drink (series cap, as the averages)",
            ["tenant", "drink"],
            registry=r,
        )
        self.estimate_error = Histogram(
            "wait_times_estimate_error_seconds",
            "Absolute error of the estimate in force when a completed order's submission was "
            'processed, per tenant (tenants past the cap: tenant="_other")',
            ["tenant"],
            buckets=ESTIMATE_ERROR_BUCKETS,
            registry=r,
        )
        self.estimate_over_p90 = Counter(
            "wait_times_estimate_over_p90",
            "Scored orders whose wait exceeded their estimate's p90, per tenant: over "
            "wait_times_estimate_error_seconds_count, the share over p90 (about 0.1 when "
            "the p90 is right)",
            ["tenant"],
            registry=r,
        )
        self.estimate_unscored = Counter(
            "wait_times_estimate_unscored",
            "Completed orders with no estimate to score, per tenant and reason: no_estimate "
            "(none in force for the drink at submission), completed_first (the completion "
            "processed before or with the submission), moved (its estimate was another "
            "tenant's: that one scored it)",
            ["tenant", "reason"],
            registry=r,
        )
        self.tenant_orders_dropped = Counter(
            "wait_times_tenant_orders_dropped",
            f"Orders dropped, oldest first, by a tenant state at its cap ({MAX_TENANT_ORDERS} "
            "orders): that tenant's open count and estimate are approximate from then on",
            registry=r,
        )
        self._tenants: set[str] = set()
        self._estimate_drinks: dict[str, set[str]] = {}  # exported estimate keys by tenant
        self._estimate_keys = 0

    def tenant_label(self, tenant: str) -> str:
        """The tenant's label on the scoring series: its own while within the tenant cap
        (a tenant is admitted when first heard of), else ``OTHER_TENANT``."""
        return tenant if self._admit(tenant) else OTHER_TENANT

    def observe_estimate(self, estimate: Estimate) -> None:
        """Export a tenant's view: open orders, as-of, and each drink's estimate and p90
        (a drink no longer in the view: NaN), within the tenant and key caps."""
        tenant = estimate.tenant
        if not self._admit(tenant):
            self.series_dropped.inc(1 + len(estimate.drinks))
            return
        self.open_orders.labels(tenant).set(estimate.open_orders)
        self.estimate_as_of.labels(tenant).set(estimate.as_of)
        exported = self._estimate_drinks.setdefault(tenant, set())
        for drink in exported - estimate.drinks.keys():
            self.estimate.labels(tenant, drink).set(float("nan"))
            self.estimate_p90.labels(tenant, drink).set(float("nan"))
        for drink, (value, p90) in sorted(estimate.drinks.items()):
            if drink not in exported:
                if self._estimate_keys >= self.max_average_series:
                    self.series_dropped.inc()
                    continue
                exported.add(drink)
                self._estimate_keys += 1
            self.estimate.labels(tenant, drink).set(value)
            self.estimate_p90.labels(tenant, drink).set(p90)

    def _admit(self, tenant: str) -> bool:
        """Whether the tenant has series of its own; admits it, its scoring series at zero,
        while fewer than the cap are."""
        if tenant in self._tenants:
            return True
        if len(self._tenants) >= self.max_average_series:
            return False
        self._tenants.add(tenant)
        self.estimate_error.labels(tenant)
        self.estimate_over_p90.labels(tenant)
        for reason in UNSCORED_REASONS:
            self.estimate_unscored.labels(tenant, reason)
        return True


class PrometheusObserver:
    """The ``Observer`` port on Prometheus series and the readiness endpoint."""

    def __init__(self, metrics: Metrics, health: Health[Metrics]) -> None:
        self.metrics = metrics
        self.health = health

    def flush_started(self, messages: int, redelivered: int) -> None:
        """Count a flush's messages (those of all its receives) and its size."""
        self.metrics.flush_messages.observe(messages)
        self.metrics.messages_received.inc(messages)
        self.metrics.messages_redelivered.inc(redelivered)

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
        """Count what a flush did and how long it took (its receives excluded); its success
        also means the dependencies answer."""
        m = self.metrics
        m.messages_processed.inc(processed)
        m.messages_ignored.inc(ignored)
        m.messages_deleted.inc(deleted)
        m.flush_seconds.observe(seconds)
        m.windows_tracked.set(windows_tracked)
        m.tenants_tracked.set(tenants_tracked)
        self.dependencies_ok()

    def poison(self, reason: str) -> None:
        """Count a message on its way to the dead-letter queue."""
        self.metrics.messages_failed.labels(reason).inc()

    def anomaly(self, kind: str) -> None:
        """Count an order whose wait is never averaged."""
        self.metrics.anomalies.labels(kind).inc()

    def late_half(self, count: int) -> None:
        """Count halves that came after their order's record expired."""
        self.metrics.expired_halves.inc(count)

    def average_published(self, key: WindowKey, duration: float | None, samples: int) -> None:
        """Export a key's average (within the series cap)."""
        self.metrics.observe_average(key, duration, samples)

    def tenant_estimate(self, estimate: Estimate) -> None:
        """Export a tenant's current view (within the caps)."""
        self.metrics.estimates.observe_estimate(estimate)

    def estimate_scored(self, tenant: str, error_seconds: float, over_p90: bool) -> None:
        """Count a scored order: its absolute error, and whether it was over the p90."""
        label = self.metrics.estimates.tenant_label(tenant)
        self.metrics.estimates.estimate_error.labels(label).observe(error_seconds)
        over = self.metrics.estimates.estimate_over_p90.labels(label)  # at 0 until one is over
        if over_p90:
            over.inc()

    def estimate_unscored(self, tenant: str, reason: str) -> None:
        """Count a completed order with nothing to score, by reason."""
        self.metrics.estimates.estimate_unscored.labels(
            self.metrics.estimates.tenant_label(tenant), reason
        ).inc()

    def tenant_orders_dropped(self, count: int) -> None:
        """Count orders a tenant state's cap dropped."""
        self.metrics.estimates.tenant_orders_dropped.inc(count)

    def visibility_extended(self) -> None:
        """Count a heartbeat of a slow flush (one for all its messages)."""
        self.metrics.visibility_extensions.inc()

    def aws_call(self, service: str, operation: str) -> None:
        """Count an API request sent."""
        self.metrics.aws_calls.labels(service, operation).inc()

    def items(self, operation: str, count: int) -> None:
        """Count DynamoDB items written or read."""
        self.metrics.dynamodb_items.labels(operation).inc(count)

    def window_conflict(self) -> None:
        """Count a lost window race."""
        self.metrics.window_conflicts.inc()

    def events_published(self, accepted: int, refused: int) -> None:
        """Count PutEvents entries accepted and refused."""
        self.metrics.events_published.inc(accepted)
        self.metrics.publish_failures.inc(refused)

    def queue_depth(self, queue: str, depth: QueueDepth) -> None:
        """Export a watched queue's depth, and when it was read."""
        self.metrics.queue_messages.labels(queue, "visible").set(depth.visible)
        self.metrics.queue_messages.labels(queue, "in_flight").set(depth.in_flight)
        self.metrics.queue_read.labels(queue).set_to_current_time()

    def retrying(self, stage: str, error: WaitTimesError) -> None:
        """A dependency failed: count the retry by operation and kind of error; not ready."""
        operation = getattr(error, "operation", "") or stage
        code = getattr(error, "code", "") or type(error).__name__
        # Throttling is decided where the error is made (service.aws.errors), not here.
        kind = getattr(error, "kind", "") or code
        self.metrics.aws_retries.labels(operation, kind[:40]).inc()
        if getattr(error, "unreachable", False):
            self.health.set_ready(False, "AWS endpoint unreachable")
        else:
            self.health.set_ready(False, f"{operation} failing: {code}")

    def dependencies_ok(self) -> None:
        """Dependencies answered: ready."""
        if not self.health.ready:
            self.health.set_ready(True)
