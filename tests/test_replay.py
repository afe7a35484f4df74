"""Replay's hot loop: its shortcuts count every line as ``parse_envelope`` would, and it
leaves the cyclic collector as it found it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import service.tools.replay as replay_module
from service.core.orders import OrderEvent, Role
from service.core.pairing import OrderRecord, join_event
from service.errors import PoisonMessageError
from service.tools.replay import ReplayResult, estimate_changes, replay
from tests.envelopes import envelope, iso

pytestmark = pytest.mark.unit

AT = 1_790_000_000


def test_lines_of_ignored_types_are_counted_as_parse_envelope_decides() -> None:
    """The loop skips a line of a known ignored type without calling parse_envelope; a
    line it cannot classify that way still goes there, and is refused as before."""
    ignored = envelope(detail_type="Validator.NewOrder", detail={"orderId": "a"}, at=AT)
    unclassified = envelope(detail_type="Something.New", detail={}, at=AT)
    envelopes: list[Any] = [
        ignored,
        ignored,  # the same object twice: counted twice
        unclassified,
        {**ignored, "detail": "not a dict"},  # an ignored type is never validated
        {**ignored, "detail-type": ["Validator.NewOrder"]},
        {"detail": {}},
        ["not", "an", "envelope"],
        PoisonMessageError("not_json", "line 9"),
        envelope("submitted", None, at=AT),  # no orderId, twice: unprocessable each time
        envelope("submitted", None, at=AT),
        envelope("submitted", "a", at=AT),
        envelope("completed", "a", at=AT + 60),
    ]
    result = replay(envelopes, wall_clock=AT)
    assert (result.events, result.ignored) == (12, 4)
    assert result.poison == {"not_an_envelope": 3, "not_json": 1, "missing_order_id": 2}
    assert [row["samples"] for row in result.as_rows()] == [1]


def test_an_ignored_type_is_ignored_from_any_source_and_a_consumed_one_only_from_its_own() -> None:
    ignored = envelope(detail_type="Validator.NewOrder", detail={}, at=AT, source="other")
    foreign = envelope("submitted", "a", at=AT, source="other")
    result = replay([ignored, foreign], wall_clock=AT, source="mine")
    assert (result.events, result.ignored, result.poison) == (2, 2, {})


def test_a_duplicate_after_its_order_expired_is_a_late_half_each_time() -> None:
    submitted = envelope("submitted", "a", at=AT)
    later = envelope("submitted", "b", at=AT + 200)
    result = replay([submitted, later, submitted, submitted], ttl_seconds=100, wall_clock=AT)
    assert result.late_halves == 2


@pytest.mark.parametrize("enabled", [True, False])
def test_replay_leaves_the_collector_as_it_found_it(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        replay([envelope("submitted", "a", at=AT), PoisonMessageError("not_json", "x")])
        assert gc.isenabled() is enabled
        assert gc.get_freeze_count() == 0
    finally:
        (gc.enable if was else gc.disable)()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_cycles_made_while_replaying_are_collected_every_few_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The collector is off while replaying, but after poison lines (whose tracebacks may
    hold cycles) what is new is collected every ``COLLECT_EVERY_LINES`` lines, before it is
    frozen: garbage stays bounded."""
    monkeypatch.setattr(replay_module, "COLLECT_EVERY_LINES", 10)
    alive: list[weakref.ref[_Cycle]] = []

    def lines() -> Iterator[Any]:
        for number in range(60):
            cycle = _Cycle()
            alive.append(weakref.ref(cycle))
            del cycle
            # At the same time: an event time that never moves, so no second sweep.
            yield envelope("submitted", f"order-{number}", at=AT)
            yield PoisonMessageError("not_json", f"line {number}")
        assert sum(ref() is not None for ref in alive) <= 12

    result = replay(lines(), wall_clock=AT)
    assert result.poison == {"not_json": 60}


def _every_clean_shape() -> Iterator[Any]:
    """Every path a line without poison takes: ignored types, fast and validated parses
    (a time with milliseconds, padded names), duplicates, cancellations, an anomaly,
    hourly sweeps that settle expired records, and late halves of expired orders."""
    yield envelope(detail_type="Validator.NewOrder", detail={"orderId": "x"}, at=AT)
    for number in range(300):
        at = AT + number * 600  # ten minutes apart: records expire and sweeps settle them
        order = f"order-{number}"
        yield envelope("submitted", order, at=at, tenant=("NYC", " LDN ")[number % 2])
        yield envelope("completed", order, at=at + 120)
        yield envelope("completed", order, at=at + 120)  # a duplicate
        if number % 7 == 0:
            yield envelope("cancelled", order, at=at + 130)
    yield envelope("submitted", "slow", at=AT, drink=" Mocha ")
    yield envelope("completed", "slow", at=iso(AT + 9000).replace("Z", ".250Z"))  # anomalous
    yield envelope("completed", "order-0", at=AT + 300 * 600)  # a late half


def test_a_clean_replay_makes_no_cyclic_garbage() -> None:
    """What ``settled_heap`` relies on: without poison lines the collector never runs
    while replaying, so replay's own path must leave nothing only it could free."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        result = replay(_every_clean_shape(), ttl_seconds=3600, wall_clock=AT + 10**6)
        assert (result.late_halves, result.anomalies, result.ignored) == (1, 1, 1)
        assert not result.poison
        assert gc.collect() == 0
    finally:
        (gc.enable if was else gc.disable)()


events = st.builds(
    OrderEvent,
    st.sampled_from(list(Role)),
    st.sampled_from(["a", "b"]),
    st.integers(0, 5),
    st.sampled_from(["", "NYC"]),
    st.sampled_from([None, "", "Latte"]),
)


@given(events, st.integers(0, 10))
def test_a_first_record_is_the_empty_record_with_the_event_merged(
    event: OrderEvent, now: int
) -> None:
    built = join_event(None, event, now, 100)
    assert built == OrderRecord(event.order_id).merge(event, now + 100)
    assert type(built) is OrderRecord


@given(st.lists(events, max_size=6))
def test_merging_keeps_every_distinct_half_sorted(sequence: list[OrderEvent]) -> None:
    """Whatever the order and repeats: the sets of submissions, completions and
    cancellation times, sorted, and the expiry of the first merge."""
    record = OrderRecord("a")
    for event in sequence:
        record = record.merge(event._replace(order_id="a"), 50 + len(sequence))
        assert type(record) is OrderRecord
    by_role = {role: [e for e in sequence if e.role is role] for role in Role}
    submitted = {(e.time, e.tenant, e.drink or "") for e in by_role[Role.SUBMITTED]}
    assert record == OrderRecord(
        "a",
        tuple(sorted(submitted)),
        tuple(sorted({e.time for e in by_role[Role.COMPLETED]})),
        bool(by_role[Role.CANCELLED]),
        50 + len(sequence) if sequence else None,
        False,
        tuple(sorted({e.time for e in by_role[Role.CANCELLED]})),
    )


def _both_summaries(lines: list[Any], **options: Any) -> tuple[tuple[object, ...], ...]:
    """The summary counts of ``replay`` and of ``replay --estimates`` for the same lines."""
    windows = replay(lines, wall_clock=AT + 10**6, **options)
    summary = ReplayResult({})
    for _ in estimate_changes(lines, result=summary, wall_clock=AT + 10**6, **options):
        pass
    return tuple(
        (r.events, r.ignored, r.poison, r.anomalies, r.late_halves) for r in (windows, summary)
    )


def test_the_issues_line_is_refused_by_both_modes() -> None:
    """Issue 29: a submission and a completion stamped with the number 12345 gave
    ``1 anomalies, 0 halves after ...`` from replay and ``0 anomalies, 1 halves ...``
    from replay --estimates. The number is no time: both refuse it."""
    lines = [envelope("submitted", "o", at=AT, tenant="NYC"), envelope("completed", "o", at=AT)]
    lines[1]["time"] = 12345
    by_replay, by_estimates = _both_summaries(lines)
    assert by_replay == by_estimates == (2, 0, {"invalid_time": 1}, 0, 0)


def test_a_half_stamped_a_ttl_before_its_partner_but_delivered_after_it_pairs_in_both() -> None:
    """The same disagreement with valid times: in time order the completion comes first
    and the submission looks late; delivered after the submission, it is not late, and
    the order is an anomaly (a negative wait) in both modes."""
    lines = [
        envelope("submitted", "o", at=AT + 200_000, tenant="NYC"),
        envelope("completed", "o", at=AT),
    ]
    by_replay, by_estimates = _both_summaries(lines)
    assert by_replay == by_estimates == (2, 0, {}, 1, 0)


def test_a_duplicate_after_its_order_expired_is_late_in_both_modes() -> None:
    submitted = envelope("submitted", "a", at=AT)
    later = envelope("submitted", "b", at=AT + 200)
    by_replay, by_estimates = _both_summaries(
        [submitted, later, submitted, submitted], ttl_seconds=100
    )
    assert by_replay == by_estimates == (4, 0, {}, 0, 2)


delivered_events = st.lists(
    st.tuples(
        st.sampled_from(["submitted", "completed", "cancelled"]),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 400),
    ),
    max_size=12,
)


@given(delivered_events, st.sampled_from([50, 150, 1000]))
def test_both_modes_count_the_same_anomalies_and_late_halves_in_any_delivery_order(
    sequence: list[tuple[str, str, int]], ttl: int
) -> None:
    """Delivery order matters only through expiry, and both modes read the files' order as
    the delivery order."""
    lines = [envelope(kind, order, at=AT + at, tenant="NYC") for kind, order, at in sequence]  # type: ignore[arg-type]
    by_replay, by_estimates = _both_summaries(lines, ttl_seconds=ttl, max_wait_seconds=40)
    assert by_replay == by_estimates
