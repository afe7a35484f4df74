"""Bad input, one verdict: ``replay``, ``replay --estimates`` and the worker's triage read
the same hostile lines the same way.

Mutated envelopes of every consumed detail-type (and of an ignored one): truncated lines,
every field given a value of the wrong type, huge values, deeply nested JSON, out-of-range
and non-RFC 3339 times. Each line is given to the worker's ``triage`` as a message body,
and written to a JSON Lines file that ``read_events`` reads for both replay modes, as the
CLI does. Per line, the three give the same verdict (accepted, ignored, or unprocessable
with the same reason); over all the lines, the same counts in the summary (and the two
replay modes the same anomalies and late halves); nothing raises anything else. All in
process: the pure functions, no subprocess.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.consumed import (
    COMPLETED,
    LEGACY_CANCELLED_DETAIL_TYPE,
    LEGACY_COMPLETED_DETAIL_TYPE,
    MAX_BODY_BYTES,
    ORDER_FINISHED,
    ORDER_FINISHED_DETAIL_TYPE,
    SUBMITTED_DETAIL_TYPE,
    TIMED_OUT_DETAIL_TYPE,
    consumed_event_pattern,
    role_of,
)
from service.flush import triage
from service.ports import Message
from service.settings import DEFAULT_SOURCE, WorkerOptions
from service.tools.replay import ReplayResult, estimate_changes, read_events, replay
from tests.envelopes import envelope

pytestmark = pytest.mark.unit

AT = 1_790_000_000
NOW = AT + 3600  # the wall clock of all three: a later time is refused by all three
TTL = 600
MAX_WAIT = 300
IGNORED_TYPE = "OrderProcessor.WorkflowStarted"
# Stand-ins, replaced once a line is serialized (so a failing example prints short): deeply
# nested JSON text, and strings past the body limit in ASCII and in two-byte characters.
NESTED = "\x00nested\x00"
HUGE = {
    "\x00huge ascii\x00": "x" * (MAX_BODY_BYTES + 10),
    "\x00huge utf-8\x00": "\u00e9" * (MAX_BODY_BYTES // 2 + 10),
    "\x00a little under\x00": "x" * (MAX_BODY_BYTES - 2000),
}


def _order(detail_type: str, order_id: str, at: int, tenant: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"orderId": order_id, "eventId": tenant}
    if detail_type == SUBMITTED_DETAIL_TYPE:
        detail["drinkOrder"] = {"drink": "Latte"}
    return envelope(detail_type=detail_type, detail=detail, at=at, id=f"{order_id}-{at}")


# Every detail-type the service consumes under either completion option, and one it never does.
DETAIL_TYPES = [
    SUBMITTED_DETAIL_TYPE,
    "OrderManager.OrderNYC-COMPLETED",
    "OrderManager.OrderNYC-CANCELLED",
    LEGACY_COMPLETED_DETAIL_TYPE,
    LEGACY_CANCELLED_DETAIL_TYPE,
    TIMED_OUT_DETAIL_TYPE,
    ORDER_FINISHED_DETAIL_TYPE,
    IGNORED_TYPE,
]

FIELDS: list[tuple[str, ...]] = [
    ("time",),
    ("source",),
    ("id",),
    ("account",),
    ("detail-type",),
    ("detail",),
    ("detail", "orderId"),
    ("detail", "eventId"),
    ("detail", "state"),
    ("detail", "drinkOrder"),
    ("detail", "drinkOrder", "drink"),
]

TIMES = [
    "0001-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "10000-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-10-14T24:00:00Z",
    "2026-10-14T12:52:21",
    "2026-W41-5T12:52:21Z",
    "2026-10-14 12:52:21+14:00",
    "2026-10-14T12:52:21.999999-23:59",
    "12345",
    "1790000000",
    "",
    "2026-10-14T12:52Z",
    "2026-10-14T12:52:21+0000",
    "2026-10-14T12:52:21.Z",
    "2026-10-14t12:52:21z",
]

wrong_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),  # past 64 bits too (orjson reads those as floats)
    st.floats(allow_nan=True, allow_infinity=True),  # NaN and infinity are not JSON
    st.text(max_size=20),
    st.sampled_from(TIMES),
    st.sampled_from([*HUGE, "N" * 129]),
    st.sampled_from([" Latte", "Caffe\u0300", "\u00a0", "o" * 128, "o" * 129]),
    st.just(NESTED),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)


@st.composite
def hostile_line(draw: st.DrawFn) -> str:
    """One line: an order event of any detail-type, mutated, serialized, maybe truncated."""
    detail_type = draw(st.sampled_from(DETAIL_TYPES))
    order_id = draw(st.sampled_from(["a", "b", "c"]))
    at = AT + draw(st.integers(-2 * TTL, 2 * TTL))
    body = _order(detail_type, order_id, at, draw(st.sampled_from(["NYC", "LDN", ""])))
    if draw(st.booleans()):
        body["source"] = "elsewhere"
    for _ in range(draw(st.integers(0, 3))):
        *path, name = draw(st.sampled_from(FIELDS))
        holder: Any = body
        for step in path:
            holder = holder.get(step) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            continue
        if draw(st.booleans()):
            holder.pop(name, None)
        else:
            holder[name] = draw(wrong_values)
    line = json.dumps(body, ensure_ascii=draw(st.booleans()))
    depth = draw(st.sampled_from([1, 100, 1000, 1100]))  # orjson refuses past 1024
    line = line.replace(json.dumps(NESTED), "[" * depth + "]" * depth)
    if draw(st.integers(0, 4)) == 0:
        line = line[: draw(st.integers(1, len(line) - 1))]
    return line


def _expanded(line: str) -> str:
    for stand_in, value in HUGE.items():
        line = line.replace(stand_in, value).replace(json.dumps(stand_in)[1:-1], value)
    return line


Verdict = tuple[str, str]  # ("accepted" | "ignored", "") or ("unprocessable", reason)


def _verdict(result: ReplayResult) -> Verdict:
    """The verdict of a replay of one line."""
    if result.poison:
        [reason] = result.poison
        return ("unprocessable", reason)
    return ("ignored", "") if result.ignored else ("accepted", "")


def _summary(result: ReplayResult) -> tuple[int, int, dict[str, int]]:
    return (result.events, result.ignored, result.poison)


def _replay(items: list[Any], completion: str) -> ReplayResult:
    return replay(
        items,
        window_size=3,
        max_wait_seconds=MAX_WAIT,
        ttl_seconds=TTL,
        source=DEFAULT_SOURCE,
        wall_clock=NOW,
        completion=completion,
    )


def _estimates(items: list[Any], completion: str) -> ReplayResult:
    result = ReplayResult({})
    for _ in estimate_changes(
        items,
        max_wait_seconds=MAX_WAIT,
        ttl_seconds=TTL,
        source=DEFAULT_SOURCE,
        wall_clock=NOW,
        completion=completion,
        result=result,
    ):
        pass
    return result


def _read(lines: list[str]) -> list[Any]:
    """The lines as ``read_events`` yields them from a JSON Lines file: one item per line.
    A good line first, as any real file starts: a file of which nothing decodes is not
    read at all (``NotEventsError``), which the triage of single messages cannot mirror."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "events.jsonl")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return list(read_events(path))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(hostile_line(), min_size=1, max_size=8), st.sampled_from([COMPLETED, ORDER_FINISHED])
)
def test_replay_its_estimates_and_the_worker_give_one_verdict_per_line(
    hostile: list[str], completion: str
) -> None:
    _check_one_verdict(list(map(_expanded, hostile)), completion)


def _stand_in(field: str, value: str, detail_type: str = SUBMITTED_DETAIL_TYPE) -> str:
    body = _order(detail_type, "a", AT + 60, "NYC")
    body[field] = value
    return _expanded(json.dumps(body).replace(json.dumps(NESTED), "[" * 1100 + "]" * 1100))


def _numeric_time(detail_type: str, at: object) -> str:
    body = _order(detail_type, "o", AT, "NYC")
    body["time"] = at
    return json.dumps(body)


@pytest.mark.parametrize(
    "hostile",
    [
        # The pair: a submission and a completion stamped with the number 12345.
        [
            _numeric_time(SUBMITTED_DETAIL_TYPE, 12345),
            _numeric_time("OrderManager.OrderNYC-COMPLETED", 12345),
        ],
        [_numeric_time(TIMED_OUT_DETAIL_TYPE, 12345.5), _numeric_time(IGNORED_TYPE, "12345")],
        [_stand_in("time", "\x00huge ascii\x00"), _stand_in("pad", "\x00huge utf-8\x00")],
        [_stand_in("pad", "\x00a little under\x00"), _stand_in("detail", NESTED)],
        [json.dumps(_order(SUBMITTED_DETAIL_TYPE, "b", AT, "NYC"))[:77], '{"time": NaN}'],
        # Stamped a TTL and more before its partner, delivered after it: late in neither mode.
        [
            json.dumps(_order(SUBMITTED_DETAIL_TYPE, "c", AT + 2 * TTL, "NYC")),
            json.dumps(_order("OrderManager.OrderNYC-COMPLETED", "c", AT, "NYC")),
        ],
    ],
    ids=["numeric-times", "float-and-digits", "huge", "nested", "truncated-nan", "out-of-order"],
)
def test_the_named_hostile_lines_have_one_verdict(hostile: list[str]) -> None:
    for completion in (COMPLETED, ORDER_FINISHED):
        _check_one_verdict(hostile, completion)


def _check_one_verdict(hostile: list[str], completion: str) -> None:
    """The three verdicts per line, and the summaries over all the lines, agree."""
    good = json.dumps(_order(SUBMITTED_DETAIL_TYPE, "a", AT, "NYC"))
    lines = [good, *hostile]
    items = _read(lines)
    assert len(items) == len(lines)
    options = WorkerOptions(
        completion_event=completion, max_wait_seconds=MAX_WAIT, pending_ttl_seconds=TTL
    )
    messages = [Message(str(n), f"r{n}", line, 1) for n, line in enumerate(lines)]
    for message, item in zip(messages, items, strict=True):
        sorted_out = triage([message], options, now=NOW)
        by_worker: Verdict = (
            ("unprocessable", sorted_out.poison[0][1].reason)
            if sorted_out.poison
            else ("accepted", "")
            if sorted_out.orders
            else ("ignored", "")
        )
        by_replay = _verdict(_replay([item], completion))
        by_estimates = _verdict(_estimates([item], completion))
        assert by_replay == by_estimates == by_worker, message.body[:300]

    sorted_out = triage(messages, options, now=NOW)
    poison: dict[str, int] = {}
    for _, exc in sorted_out.poison:
        poison[exc.reason] = poison.get(exc.reason, 0) + 1
    by_worker_summary = (len(messages), sorted_out.ignored, poison)
    windows = _replay(items, completion)
    estimates = _estimates(items, completion)
    assert _summary(windows) == _summary(estimates) == by_worker_summary
    assert (windows.anomalies, windows.late_halves) == (estimates.anomalies, estimates.late_halves)
    assert len(sorted_out.orders) == len(lines) - sorted_out.ignored - len(sorted_out.poison)


def test_every_consumed_detail_type_is_mutated() -> None:
    """The strategy's detail-types cover what the rule routes, under both options."""
    for completion in (COMPLETED, ORDER_FINISHED):
        routed = consumed_event_pattern(DEFAULT_SOURCE, completion)["detail-type"]
        exact = {t for t in routed if isinstance(t, str)}
        assert exact <= set(DETAIL_TYPES)
        consumed = {t for t in DETAIL_TYPES if role_of(t, completion) is not None}
        assert {"OrderManager.OrderNYC-CANCELLED"} <= consumed
    assert role_of(IGNORED_TYPE, COMPLETED) is role_of(IGNORED_TYPE, ORDER_FINISHED) is None
