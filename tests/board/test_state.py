"""The board's pure parts: highest version wins, bounded memory, served tenants, poison,
and JSON that cannot end the script element it is embedded in."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from service.board.feed import Board
from service.board.seed import value_of
from service.board.server import script_json
from service.board.state import BoardState, Outcome, read_published, served_tenants
from service.board.streams import Streams
from service.core.estimators.registry import estimate_options
from service.core.events import (
    AVERAGE_DETAIL_TYPE,
    ESTIMATE_DETAIL_TYPE,
    DrinkAverageTime,
    DrinkWait,
    WaitEstimate,
)
from service.errors import PoisonMessageError
from service.ports import Message

pytestmark = pytest.mark.unit
AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def average(tenant: str, drink: str, duration: float, version: int) -> DrinkAverageTime:
    return DrinkAverageTime(
        eventId=tenant,
        drink=drink,
        duration=duration,
        samples=3,
        window=10,
        version=version,
        updatedAt=AT,
    )


def estimate(tenant: str, drinks: dict[str, float], version: int, ahead: int = 2) -> WaitEstimate:
    return WaitEstimate(
        eventId=tenant,
        asOf=AT,
        openOrders=ahead,
        drinks={d: DrinkWait(estimate=e, p90=e * 2) for d, e in drinks.items()},
        version=version,
    )


def body(detail_type: str, detail: Any) -> str:
    return json.dumps({"detail-type": detail_type, "source": "s", "detail": detail})


def test_the_highest_version_wins_whatever_the_order() -> None:
    state = BoardState(100)
    assert state.take(average("NYC", "Latte", 30, 2)).outcome is Outcome.KEPT
    assert state.take(average("NYC", "Latte", 10, 1)).outcome is Outcome.STALE
    assert state.take(average("NYC", "Latte", 99, 2)).outcome is Outcome.STALE
    assert state.take(estimate("NYC", {"Latte": 60}, 5)).outcome is Outcome.KEPT
    assert state.take(estimate("NYC", {"Latte": 1}, 4)).outcome is Outcome.STALE
    view = state.view("NYC")
    assert view["openOrders"] == 2
    assert view["drinks"] == [
        {
            "drink": "Latte",
            "estimate": 60,
            "p90": 120,
            "average": 30,
            "samples": 3,
            "window": 10,
            "updatedAt": "2026-05-01T12:00:00Z",
        }
    ]
    assert state.take(average("NYC", "Latte", 40, 3)).outcome is Outcome.KEPT
    assert state.view("NYC")["drinks"][0]["average"] == 40


def test_a_drink_known_by_one_event_only_shows_the_other_as_pending() -> None:
    state = BoardState(100)
    state.take(average("NYC", "Mocha", 30, 1))
    state.take(estimate("NYC", {"Latte": 60}, 1))
    rows = {row["drink"]: row for row in state.view("NYC")["drinks"]}
    assert rows["Mocha"]["estimate"] is None and rows["Mocha"]["average"] == 30
    assert rows["Latte"]["average"] is None and rows["Latte"]["estimate"] == 60
    assert state.view("LDN") == {"tenant": "LDN", "openOrders": None, "asOf": None, "drinks": []}


def test_memory_is_bounded_and_the_index_follows_what_is_dropped() -> None:
    state = BoardState(3)
    for index in range(10):
        state.take(average(f"T{index}", "Latte", 30, 1))
    assert len(state.averages) == 3
    assert state.tenants() == ["T7", "T8", "T9"]
    assert not state.knows("T0")
    for index in range(5):
        state.take(estimate(f"E{index}", {}, 1))
    assert len(state.estimates) == 3
    assert state.tenants() == ["E2", "E3", "E4", "T7", "T8", "T9"]


def test_served_tenants_limit_what_is_kept_and_what_has_a_page() -> None:
    served = served_tenants(" NYC, ,LDN ")
    assert served == frozenset({"NYC", "LDN"})
    assert served_tenants("") is None
    state = BoardState(100, served)
    assert state.take(average("SYD", "Latte", 30, 1)).outcome is Outcome.NOT_SERVED
    assert state.tenants() == ["LDN", "NYC"]  # named: a page even before any value
    assert state.knows("LDN") and not state.knows("SYD")
    assert state.take(average("NYC", "Latte", 30, 1)).new_tenant


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not_json"),
        ("[1, 2]", "not_an_envelope"),
        (json.dumps({"detail": {}}), "not_an_envelope"),
        (body(AVERAGE_DETAIL_TYPE, {"eventId": "NYC"}), "invalid_detail"),
        (body(ESTIMATE_DETAIL_TYPE, "a string"), "invalid_detail"),
        (
            body(AVERAGE_DETAIL_TYPE, average("N" * 129, "Latte", 1, 1).model_dump(mode="json")),
            "invalid_name",
        ),
    ],
)
def test_malformed_messages_are_poison_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(PoisonMessageError) as caught:
        read_published(raw)
    assert caught.value.reason == reason


def test_published_events_read_back_and_others_are_ignored() -> None:
    sent = estimate("NYC", {"Latte": 60}, 7)
    assert read_published(body(ESTIMATE_DETAIL_TYPE, sent.model_dump(mode="json"))) == sent
    assert read_published(body("Something.Else", {})) is None


def test_a_receive_keeps_the_good_and_leaves_the_malformed() -> None:
    board = Board(BoardState(100), Streams(2))
    good = average("NYC", "Latte", 30, 1).model_dump(mode="json")
    messages = [
        Message("1", "r1", body(AVERAGE_DETAIL_TYPE, good), 1),
        Message("2", "r2", "{broken", 1),
        Message("3", "r3", body("Other", {}), 1),
    ]
    found = board.take(messages, redrive_limit=3)
    assert [m.message_id for m in found.done] == ["1", "3"]
    assert [m.message_id for m, _ in found.malformed] == ["2"]
    assert board.state.view("NYC")["drinks"][0]["average"] == 30
    counted = {
        s.labels["outcome"]: s.value
        for s in next(iter(board.messages.collect())).samples
        if s.name.endswith("_total")
    }
    assert counted == {"kept": 1, "malformed": 1, "ignored": 1}


def test_streams_are_bounded_and_woken_by_their_tenant() -> None:
    streams = Streams(2)
    nyc, index = streams.open("NYC"), streams.open(None)
    assert nyc is not None and index is not None
    assert streams.open("LDN") is None  # past the bound: the server answers 503
    streams.notify("LDN")
    assert not nyc.changed.is_set() and not index.changed.is_set()
    streams.notify("NYC")
    assert nyc.changed.is_set() and not index.changed.is_set()
    streams.notify("SYD", everyone=True)
    assert index.changed.is_set()
    streams.close(nyc)
    assert streams.open("LDN") is not None


def test_embedded_json_cannot_end_its_script_element() -> None:
    hostile = {"name": "</script><script>alert(1)</script><!-- & \u2028 \u2029 '\""}
    text = script_json(hostile)
    assert "<" not in text and ">" not in text and "&" not in text
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == hostile


def test_an_unreadable_table_item_is_left_out_not_fatal() -> None:
    """A tenant item whose orders blob is not zlib (or a window of another layout) is
    logged and left out: the board still starts with everything else."""
    corrupt: dict[str, Any] = {
        "pk": {"S": "T#NYC"},
        "tenant": {"S": "NYC"},
        "v": {"N": "3"},
        "to": {"B": b"not zlib at all"},
    }
    with capture_logs() as logs:
        assert value_of(corrupt, 10, estimate_options(7200), 2_000_000_000) is None
    assert [entry["event"] for entry in logs] == ["board_item_unreadable"]
