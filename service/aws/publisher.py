"""EventBridge adapter of the EventPublisher port, and the one PutEvents helper.

``put_events`` is shared by the publisher and the event player: ten entries per call,
entries EventBridge refuses (a partial failure, ``FailedEntryCount``) sent again after a
short backoff, a bounded number of rounds. A failed call itself is raised as the service's
error; the caller decides whether to try again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import anyio
import structlog

from service.aws.errors import call
from service.backoff import CONTENTION
from service.core.published import (
    AVERAGE_DETAIL_TYPE,
    ESTIMATE_DETAIL_TYPE,
    DrinkAverageTime,
    Published,
)
from service.errors import DependencyError
from service.ports import Observer

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_events.type_defs import PutEventsRequestEntryTypeDef

log = structlog.get_logger(__name__)

PUT_EVENTS_LIMIT = 10
MAX_REFUSED_ROUNDS = 6


async def put_events(
    client: EventBridgeClient,
    entries: Sequence[PutEventsRequestEntryTypeDef],
    *,
    on_result: Callable[[int, int], None] | None = None,
    rounds: int = MAX_REFUSED_ROUNDS,
) -> list[PutEventsRequestEntryTypeDef]:
    """Put entries, ten per call, sending refused ones again up to ``rounds`` times.

    ``on_result(accepted, refused)`` is told after every call. Returns the entries still
    refused after the last round (empty when all went out).
    """
    left: list[PutEventsRequestEntryTypeDef] = []
    for start in range(0, len(entries), PUT_EVENTS_LIMIT):
        chunk = list(entries[start : start + PUT_EVENTS_LIMIT])
        for round_ in range(rounds):
            response = await call("events.PutEvents", partial(client.put_events, Entries=chunk))
            results = response.get("Entries", [])
            refused = [e for e, r in zip(chunk, results, strict=False) if "ErrorCode" in r]
            if len(results) < len(chunk):  # a short answer: treat the rest as refused
                refused.extend(chunk[len(results) :])
            if on_result is not None:
                on_result(len(chunk) - len(refused), len(refused))
            if not refused:
                break
            codes = sorted({r.get("ErrorCode", "?") for r in results if "ErrorCode" in r})
            log.warning("put_events_partial_failure", refused=len(refused), codes=codes)
            chunk = refused
            if round_ + 1 < rounds:
                await anyio.sleep(CONTENTION.delay(round_))
        else:
            left.extend(chunk)
    return left


class EventBridgePublisher:
    """Puts averages and estimates on the bus, in the same calls; raises when EventBridge
    keeps refusing some."""

    def __init__(
        self,
        client: EventBridgeClient,
        bus_name: str,
        source: str,
        *,
        observer: Observer | None = None,
    ) -> None:
        self.client = client
        self.bus_name = bus_name
        self.source = source
        self.observer = observer

    async def publish(self, details: Sequence[Published]) -> None:
        """Publish every detail or raise DependencyError; nothing is silently dropped."""
        entries: list[PutEventsRequestEntryTypeDef] = [
            {
                "EventBusName": self.bus_name,
                "Source": self.source,
                "DetailType": (
                    AVERAGE_DETAIL_TYPE
                    if isinstance(detail, DrinkAverageTime)
                    else ESTIMATE_DETAIL_TYPE
                ),
                "Detail": detail.model_dump_json(),
            }
            for detail in details
        ]
        observer = self.observer
        refused = await put_events(
            self.client,
            entries,
            on_result=None if observer is None else observer.events_published,
        )
        if refused:
            raise DependencyError(
                f"PutEvents refused {len(refused)} entries after retries",
                operation="events.PutEvents",
                code="RefusedEntries",
            )
