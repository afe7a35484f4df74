"""EventBridge publisher of ``OrderManager.DrinkAverageTime``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import structlog

from service.aws.retry import Backoff, call_with_retry
from service.aws.store import WindowState
from service.core.events import AVERAGE_DETAIL_TYPE, DrinkAverageTime
from service.core.window import WindowKey
from service.errors import DependencyError

log = structlog.get_logger(__name__)

PUT_EVENTS_LIMIT = 10
MAX_FAILED_ENTRY_ROUNDS = 6


def average_event(key: WindowKey, state: WindowState, window_size: int) -> DrinkAverageTime:
    """The published detail for a key's window."""
    tenant, drink = key
    return DrinkAverageTime(
        eventId=tenant,
        drink=drink,
        duration=state.window.duration,
        samples=state.window.samples,
        window=window_size,
        version=state.version,
        updatedAt=datetime.now(UTC).replace(microsecond=0),
    )


class EventBridgePublisher:
    """Puts averages on the bus, ten entries per call, retrying refused entries."""

    def __init__(
        self,
        client: Any,
        bus_name: str,
        source: str,
        *,
        on_retry: Callable[[str, BaseException], None] | None = None,
        on_success: Callable[[], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        on_refused: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.bus_name = bus_name
        self.source = source
        self._on_retry = on_retry
        self._on_success = on_success
        self._on_published = on_published
        self._on_refused = on_refused

    async def publish(self, details: Sequence[DrinkAverageTime]) -> None:
        """Publish every detail or raise DependencyError; nothing is silently dropped."""
        entries = [
            {
                "EventBusName": self.bus_name,
                "Source": self.source,
                "DetailType": AVERAGE_DETAIL_TYPE,
                "Detail": detail.model_dump_json(),
            }
            for detail in details
        ]
        for start in range(0, len(entries), PUT_EVENTS_LIMIT):
            await self._put(entries[start : start + PUT_EVENTS_LIMIT])

    async def _put(self, entries: list[dict[str, Any]]) -> None:
        backoff = Backoff()
        for attempt in range(MAX_FAILED_ENTRY_ROUNDS):
            batch = entries
            response = await call_with_retry(
                "events.put_events",
                partial(self.client.put_events, Entries=batch),
                on_retry=self._on_retry,
                on_success=self._on_success,
            )
            results = response.get("Entries", [])
            refused = [
                entry
                for entry, result in zip(entries, results, strict=False)
                if "ErrorCode" in result
            ]
            if len(results) < len(entries):  # a short answer: treat the rest as refused
                refused.extend(entries[len(results) :])
            if self._on_published is not None:
                self._on_published(len(entries) - len(refused))
            if not refused:
                return
            codes = sorted({r.get("ErrorCode", "?") for r in results if "ErrorCode" in r})
            if self._on_refused is not None:
                self._on_refused(len(refused))
            log.warning("put_events_partial_failure", refused=len(refused), codes=codes)
            entries = refused
            await anyio.sleep(backoff.delay(attempt))
        raise DependencyError(f"PutEvents refused {len(entries)} entries after retries")
