"""The catalog's example events: recorded ones read from data files, published ones built here.

The consumed examples are verbatim recorded events shipped as JSON under
``service/tools/catalog/examples/`` (``index.json`` lists them with their role, name,
summary and the recording each copies); only their ``source`` follows the settings. The
published examples (averages and estimates) are what the service puts on the bus, built
from the settings. Nothing here writes anything: the generator (``generator.py``) puts them into the AsyncAPI document.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from service.core.orders import Role
from service.core.published import AVERAGE_DETAIL_TYPE, ESTIMATE_DETAIL_TYPE
from service.settings import Settings

EXAMPLE_ACCOUNT: Final = "123456789012"


@dataclass(frozen=True)
class Example:
    """A named example event; ``recording`` names the recorded event it is a copy of."""

    name: str
    summary: str
    recording: str | None  # path under tests/data/serverlesspresso-events in the repository
    envelope: dict[str, Any]


def _recorded_examples() -> dict[Role, tuple[Example, ...]]:
    """The recorded examples shipped in ``service/tools/catalog/examples/`` (index.json lists them)."""
    folder = resources.files("service.tools.catalog") / "examples"
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    examples: dict[Role, list[Example]] = {role: [] for role in Role}
    for entry in index:
        envelope = json.loads((folder / entry["file"]).read_text(encoding="utf-8"))
        examples[Role(entry["role"])].append(
            Example(entry["name"], entry["summary"], entry["recording"], envelope)
        )
    return {role: tuple(found) for role, found in examples.items()}


RECORDED_EXAMPLES: Final[dict[Role, tuple[Example, ...]]] = _recorded_examples()


def _published(
    settings: Settings, detail_type: str, event_id: str, time: str, detail: dict[str, Any]
) -> dict[str, Any]:
    """A published envelope as the bus delivers it."""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": detail_type,
        "source": settings.source,
        "account": EXAMPLE_ACCOUNT,
        "time": time,
        "region": "us-west-2",
        "resources": [],
        "detail": detail,
    }


def published_examples(settings: Settings) -> list[Example]:
    """Realistic published envelopes; the first is what replaying the recording gives."""

    def envelope(event_id: str, time: str, detail: dict[str, Any]) -> dict[str, Any]:
        full = {**detail, "window": settings.window_size, "updatedAt": time}
        return _published(settings, AVERAGE_DETAIL_TYPE, event_id, time, full)

    return [
        Example(
            "flatWhiteNYC",
            "Two Flat Whites at NYC (21 s and 25 s), as replaying the recorded traffic gives",
            None,
            envelope(
                "0c4a1e55-7b3f-4d8e-9a61-5f2e8d3c7b10",
                "2022-10-14T13:01:55Z",
                {
                    "eventId": "NYC",
                    "drink": "Flat White",
                    "duration": 23.0,
                    "samples": 2,
                    "version": 2,
                },
            ),
        ),
    ]


def estimate_examples(settings: Settings) -> list[Example]:
    """Realistic published ``OrderManager.WaitEstimate`` envelopes; the last is the last
    estimate replaying the recording gives (NYC not trained yet: no drink)."""

    def envelope(event_id: str, time: str, detail: dict[str, Any]) -> dict[str, Any]:
        return _published(settings, ESTIMATE_DETAIL_TYPE, event_id, time, detail)

    return [
        Example(
            "busyNYC",
            "12 orders open at NYC: a Caffe Latte ordered now waits about 7 minutes",
            None,
            envelope(
                "5d1f0b7e-2c4a-4f7e-8b93-1a6e4c2d9f30",
                "2026-12-01T12:00:06Z",
                {
                    "eventId": "NYC",
                    "asOf": "2026-12-01T12:00:05Z",
                    "openOrders": 12,
                    "drinks": {
                        "Caffe Latte": {"estimate": 412.0, "p90": 560.0},
                        "Flat White": {"estimate": 398.0, "p90": 541.0},
                    },
                    "version": 17,
                },
            ),
        ),
        Example(
            "untrainedNYC",
            "Fewer than 5 counted orders: the open count only, no drink yet (the recording's last)",
            None,
            envelope(
                "9b2e6c41-0f3d-4a8e-b7c5-3e1d8a6f2b04",
                "2022-10-14T13:02:13Z",
                {
                    "eventId": "NYC",
                    "asOf": "2022-10-14T13:02:13Z",
                    "openOrders": 23,
                    "drinks": {},
                    "version": 35,
                },
            ),
        ),
    ]


def consumed_examples(role: Role, settings: Settings) -> list[Example]:
    """The recorded examples of a role, on the configured source."""
    return [
        Example(
            example.name,
            example.summary,
            example.recording,
            {**copy.deepcopy(example.envelope), "source": settings.source},
        )
        for example in RECORDED_EXAMPLES[role]
    ]
