"""The worker publishes each tenant's estimate (``OrderManager.WaitEstimate``) and scores it.

On the fakes (the unit tier): the rules of docs/design.md, "The wait estimate" — at most
one estimate per tenant per flush, only when it changed in whole seconds, in the same
PutEvents call as the averages, the current version again on redelivery; the worker and
``replay --estimates`` publishing the same sequence for a stream delivered in time order,
one message per flush; each completed order scored once, against the estimate in force
when its submission was processed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from service.core.consumed import parse_envelope
from service.core.published import WaitEstimate
from service.flush import Flush
from service.ports import Message
from service.settings import Settings, worker_options
from service.tools.coffeebar import Rush, TrafficGenerator
from service.tools.replay import replay_estimates
from tests.envelopes import envelope
from tests.fakes import Fakes

pytestmark = pytest.mark.unit

T = TypeVar("T")
START = 1_790_000_000
MAX_WAIT = 7200


async def no_retry(step: str, call: Callable[[], Awaitable[T]]) -> T:
    return await call()


class Clocked:
    """A flush whose clock is set before each run (the time an event arrives)."""

    def __init__(self, fakes: Fakes) -> None:
        self.now = float(START)
        options = worker_options(
            Settings(max_wait_seconds=MAX_WAIT, max_clock_skew_seconds=60),
            redrive_limit=3,
        )
        self.flush = Flush(
            fakes.queue, fakes.store, fakes.publisher, fakes.observer, options, clock=self.clock
        )
        self.count = 0

    def clock(self) -> float:
        return self.now

    async def deliver(self, *bodies: dict[str, Any], at: float, receive_count: int = 1) -> None:
        """One flush of these envelopes, at ``at``."""
        self.now = at
        messages = []
        for body in bodies:
            self.count += 1
            messages.append(
                Message(f"m{self.count}", f"r{self.count}", json.dumps(body), receive_count)
            )
        await self.flush.run(messages, no_retry)


def submitted(order: str, at: int, drink: str = "Latte", tenant: str = "NYC") -> dict[str, Any]:
    return envelope("submitted", order, at=at, tenant=tenant, drink=drink, id=f"s-{order}")


def completed(order: str, at: int, tenant: str = "NYC") -> dict[str, Any]:
    return envelope("completed", order, at=at, tenant=tenant, id=f"c-{order}")


def without_version(detail: WaitEstimate) -> dict[str, Any]:
    return detail.model_dump(mode="json", exclude={"version"})


async def train(bar: Clocked, orders: int = 8, *, tenant: str = "NYC") -> int:
    """Orders of 60 s, one at a time, as their events arrive: the tenant gets estimates."""
    at = START
    for index in range(orders):
        await bar.deliver(submitted(f"t{index}", at, tenant=tenant), at=at)
        await bar.deliver(completed(f"t{index}", at + 60, tenant=tenant), at=at + 60)
        at += 90
    return at


async def test_one_estimate_per_tenant_per_flush_beside_the_averages() -> None:
    fakes = Fakes.create()
    bar = Clocked(fakes)
    await bar.deliver(
        submitted("a", START),
        submitted("b", START + 1, "Mocha"),
        submitted("c", START + 2, tenant=""),
        at=START + 5,
    )
    assert sorted(
        (d.eventId, d.openOrders, d.drinks, d.version) for d in fakes.publisher.estimates
    ) == [
        ("", 1, {}, 1),
        ("NYC", 2, {}, 1),
    ]
    await bar.deliver(completed("a", START + 60), at=START + 61)
    call = fakes.publisher.calls[-1]  # the average and the estimate in one PutEvents call
    assert [type(d).__name__ for d in call] == ["DrinkAverageTime", "WaitEstimate"]
    assert fakes.publisher.estimates[-1].openOrders == 1


async def test_no_estimate_when_nothing_changed_in_whole_seconds() -> None:
    fakes = Fakes.create()
    bar = Clocked(fakes)
    await bar.deliver(submitted("a", START), at=START)
    published = len(fakes.publisher.estimates)
    # A duplicate changes nothing: no event, although the flush ran at a later time.
    await bar.deliver(submitted("a", START), at=START + 30)
    assert len(fakes.publisher.estimates) == published


async def test_a_redelivery_republishes_the_current_version() -> None:
    fakes = Fakes.create()
    bar = Clocked(fakes)
    await bar.deliver(submitted("a", START), at=START)
    current = fakes.publisher.estimates[-1]
    await bar.deliver(submitted("a", START), at=START + 40, receive_count=2)
    assert fakes.publisher.estimates[-1] == current  # the same version, again


async def test_estimates_appear_once_the_tenant_has_completed_orders() -> None:
    fakes = Fakes.create()
    bar = Clocked(fakes)
    at = await train(bar)
    latest = fakes.publisher.estimates[-1]
    assert latest.drinks["Latte"].estimate == pytest.approx(60, abs=1)
    assert latest.drinks["Latte"].p90 >= latest.drinks["Latte"].estimate
    assert "Mocha" not in latest.drinks  # never completed: no estimate for it
    await bar.deliver(submitted("x", at), at=at)
    assert fakes.publisher.estimates[-1].openOrders == 1


async def test_each_completed_order_is_scored_once_against_the_estimate_in_force() -> None:
    fakes = Fakes.create()
    bar = Clocked(fakes)
    at = await train(bar)
    # The first orders had no estimate in force: counted apart.
    assert ("NYC", "no_estimate") in fakes.observer.unscored
    scored_before = len(fakes.observer.scored)
    in_force = fakes.publisher.estimates[-1].drinks["Latte"]
    await bar.deliver(submitted("z", at), at=at)
    await bar.deliver(completed("z", at + 200), at=at + 200)
    await bar.deliver(completed("z", at + 200), at=at + 260, receive_count=2)  # redelivered
    scored = fakes.observer.scored[scored_before:]
    assert len(scored) == 1
    tenant, error, over = scored[0]
    assert (tenant, over) == ("NYC", in_force.p90 < 200)
    assert error == pytest.approx(abs(200 - in_force.estimate))


async def test_an_order_completed_before_its_submission_was_processed_is_counted_apart() -> None:
    fakes = Fakes.create()
    bar = Clocked(fakes)
    at = await train(bar)
    unscored = len(fakes.observer.unscored)
    await bar.deliver(completed("late", at + 50), at=at + 50)
    await bar.deliver(submitted("late", at), at=at + 51)
    assert fakes.observer.unscored[unscored:] == [("NYC", "completed_first")]


async def test_the_gauges_hear_every_committed_tenant() -> None:
    fakes = Fakes.create()
    bar = Clocked(fakes)
    await bar.deliver(submitted("a", START), submitted("b", START, tenant="LDN"), at=START)
    assert {t: e.open_orders for t, e in fakes.observer.estimates.items()} == {"NYC": 1, "LDN": 1}


async def test_worker_and_replay_publish_the_same_estimates_for_a_stream_in_time_order() -> None:
    """A rush and a steady stretch, several tenants, cancellations and timeouts: one event
    per flush, each delivered when it happened."""
    generator = TrafficGenerator(
        seed=7, rate=0.05, start=START, rush=Rush(every=1800, length=400, factor=5)
    )
    envelopes = [
        envelope(detail_type=p.detail_type, detail=p.detail, at=p.at) for p in generator.events(400)
    ]
    # Delivered in time order, ties as replay breaks them (order id, then role); the
    # types the service ignores are left out, as the bus's rule leaves them out.
    timed = []
    for body in envelopes:
        event = parse_envelope(body)
        if event is not None:
            timed.append(((event.time, event.order_id, event.role.value), body))
    timed.sort(key=lambda pair: pair[0])
    fakes = Fakes.create()
    bar = Clocked(fakes)
    for (at, _, _), body in timed:
        await bar.deliver(body, at=at)
    worker = [without_version(d) for d in fakes.publisher.estimates]
    replayed = [
        without_version(d)
        for d in replay_estimates(
            envelopes, max_wait_seconds=MAX_WAIT, ttl_seconds=86400, wall_clock=START + 10**6
        )
    ]
    assert len(worker) > 100
    assert any(d["drinks"] for d in worker)
    assert worker == replayed
    versions: dict[str, int] = {}
    for detail in fakes.publisher.estimates:  # versions rise with every change
        assert detail.version > versions.get(detail.eventId, 0)
        versions[detail.eventId] = detail.version


async def test_past_its_cap_a_tenant_drops_its_oldest_orders_and_says_so() -> None:
    fakes = Fakes.create()
    fakes.store.tenant_cap = 3
    bar = Clocked(fakes)
    await bar.deliver(*(submitted(f"o{i}", START + i) for i in range(5)), at=START + 5)
    assert fakes.observer.tenant_dropped == 2
    assert fakes.publisher.estimates[-1].openOrders == 3  # approximate from then on
