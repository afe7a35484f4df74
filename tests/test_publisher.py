"""PutEvents: ten entries per call, and retry of refused entries (FailedEntryCount)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from service.aws.publisher import EventBridgePublisher
from service.backoff import Backoff
from service.core.published import DrinkAverageTime, average_event, estimate_event
from service.core.window import Window, WindowEntry
from service.errors import DependencyError
from tests.helpers import Aws, latest_by_key, latest_by_tenant


class RefusingEvents:
    """An EventBridge stand-in that refuses the first entry of each of the first calls.

    The real service (and moto) only refuse entries for reasons a test cannot provoke on
    demand (internal failures, throttling per entry), so this one case is a stand-in.
    """

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls: list[list[dict[str, Any]]] = []

    async def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Entries)
        results: list[dict[str, Any]] = [
            {"EventId": f"e{len(self.calls)}-{i}"} for i in range(len(Entries))
        ]
        if self.refusals > 0:
            self.refusals -= 1
            results[0] = {"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}
        return {"FailedEntryCount": int(self.refusals >= 0), "Entries": results}


def details(count: int) -> list[DrinkAverageTime]:
    window = Window(10, (WindowEntry(100, "o", 60),))
    return [average_event((f"T{i}", "Latte"), window, 1, 10) for i in range(count)]


class Counted:
    """Records what the publisher reports (the part of the Observer port it uses)."""

    def __init__(self) -> None:
        self.accepted: list[int] = []
        self.refused: list[int] = []

    def events_published(self, accepted: int, refused: int) -> None:
        self.accepted.append(accepted)
        self.refused.append(refused)


@pytest.mark.unit
async def test_entries_go_in_tens_and_refused_ones_are_retried() -> None:
    events = RefusingEvents(refusals=2)
    counted = Counted()
    publisher = EventBridgePublisher(events, "bus", "src", observer=counted)  # type: ignore[arg-type]
    await publisher.publish(details(23))
    sizes = [len(call) for call in events.calls]
    assert sizes == [10, 1, 1, 10, 3]
    assert sum(counted.accepted) == 23
    assert sum(counted.refused) == 2
    tenants = [json.loads(e["Detail"])["eventId"] for call in events.calls for e in call]
    assert sorted(set(tenants)) == sorted(f"T{i}" for i in range(23))


@pytest.mark.unit
async def test_an_entry_refused_every_time_is_an_error_not_a_silent_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("service.aws.publisher.CONTENTION", Backoff(base=0.0, cap=0.0))
    publisher = EventBridgePublisher(RefusingEvents(refusals=100), "bus", "src")  # type: ignore[arg-type]
    with pytest.raises(DependencyError):
        await publisher.publish(details(1))


@pytest.mark.integration
async def test_published_event_shape_on_the_real_bus(aws: Aws) -> None:
    publisher = EventBridgePublisher(
        aws.clients.events, aws.settings.event_bus, aws.settings.source
    )
    await publisher.publish(details(12))
    published = await aws.published()
    assert len(published) == 12
    assert set(published[0]) == {
        "eventId",
        "drink",
        "duration",
        "samples",
        "window",
        "version",
        "updatedAt",
    }
    assert published[0]["duration"] == 60.0
    assert published[0]["updatedAt"].endswith("Z")


@pytest.mark.integration
async def test_the_capture_queue_sorts_averages_from_estimates(aws: Aws) -> None:
    # What the worker will put in one PutEvents call: both detail-types, through the
    # capture rule (published_event_pattern), sorted by the test harness.
    publisher = EventBridgePublisher(
        aws.clients.events, aws.settings.event_bus, aws.settings.source
    )
    nyc = estimate_event("NYC", 1_790_000_000, 3, {"Latte": (240.0, 330.0)}, 4)
    newer = estimate_event("NYC", 1_790_000_060, 2, {"Latte": (180.0, 250.0)}, 5)
    await publisher.publish([*details(3), nyc, estimate_event("LDN", 1_790_000_000, 1, {}, 1)])
    averages = await arrived(aws.published, 3)
    assert sorted(d["eventId"] for d in averages) == ["T0", "T1", "T2"]
    assert [row["drink"] for row in latest_by_key(averages)] == ["Latte"] * 3
    await publisher.publish([newer, *details(1)])
    # The estimates drained by the first call wait; the new average waits for published().
    estimates = await arrived(aws.estimates, 3)
    assert sorted((d["eventId"], d["version"]) for d in estimates) == [
        ("LDN", 1),
        ("NYC", 4),
        ("NYC", 5),
    ]
    assert latest_by_tenant(list(reversed(estimates))) == {
        "LDN": estimate_event("LDN", 1_790_000_000, 1, {}, 1).model_dump(mode="json"),
        "NYC": newer.model_dump(mode="json"),
    }
    assert [d["eventId"] for d in await arrived(aws.published, 1)] == ["T0"]
    assert await aws.estimates() == []
    assert await aws.published() == []


async def arrived(
    take: Callable[[], Awaitable[list[dict[str, Any]]]], count: int
) -> list[dict[str, Any]]:
    """What successive ``take()`` calls return until ``count`` details came (the bus delivers
    to the capture queue asynchronously)."""
    found: list[dict[str, Any]] = []
    with anyio.fail_after(30):
        while len(found) < count:
            found += await take()
            if len(found) < count:
                await anyio.sleep(0.1)
    return found
