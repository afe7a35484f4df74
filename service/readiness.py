"""Readiness: whether the worker's AWS dependencies answer, as ``/readyz`` reports it and
``wait_times_ready`` exports it.

The observer (``service.metrics.PrometheusObserver``) changes it: not ready while a step
is retried, ready again once a dependency answers; the endpoints (``service.endpoints``)
read it.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import structlog
from prometheus_client import Gauge

log = structlog.get_logger(__name__)


class ReadyGauge(Protocol):
    """Where readiness is exported: the series holding ``wait_times_ready`` (``Metrics``)."""

    ready: Gauge


M = TypeVar("M", bound=ReadyGauge)


class Health(Generic[M]):
    """Liveness and readiness as the HTTP endpoints report them, over the worker's series
    (``metrics``, whose ``wait_times_ready`` follows them)."""

    def __init__(self, metrics: M) -> None:
        self.metrics = metrics
        self.ready = False
        self.reason = "starting"
        self.port: int | None = None  # where /metrics, /healthz and /readyz listen

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Change readiness, logging each transition once."""
        if ready != self.ready:
            log.info("readiness_changed", ready=ready, reason=reason or None)
        self.ready = ready
        self.reason = reason
        self.metrics.ready.set(1 if ready else 0)
