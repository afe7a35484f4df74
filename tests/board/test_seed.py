"""What the board shows at start is what the worker published: each tenant item keeps the
estimate published at its version, written in the same put as the tenant's state, and the
board's seed reads that (service/board/seed.py), never the worker's model."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest

from service.aws import items
from service.aws.store import DynamoStore
from service.board.seed import current_values, value_of
from service.core.estimators.registry import estimate_options
from service.core.published import DrinkAverageTime, WaitEstimate
from service.flush import Flush
from service.ports import Message
from service.settings import Settings, worker_options
from tests.envelopes import envelope
from tests.fakes import Fakes
from tests.helpers import Aws

pytestmark = pytest.mark.integration

START = 1_790_000_000
MAX_WAIT = 7200


async def no_retry(step: str, call: Any) -> Any:
    return await call()


async def publish_in_two_tenants(aws: Aws) -> Fakes:
    """Orders of 60 s, one at a time, in two tenants, flushed by the worker into the table:
    the fakes that kept what it published."""
    fakes = Fakes.create()
    store = DynamoStore(
        aws.clients.dynamodb,
        aws.settings.table_name,
        window_size=aws.settings.window_size,
        ttl_seconds=aws.settings.pending_ttl_seconds,
        estimates=estimate_options(MAX_WAIT),
    )
    now = float(START)
    options = worker_options(
        Settings(max_wait_seconds=MAX_WAIT, max_clock_skew_seconds=60), redrive_limit=3
    )
    flush = Flush(fakes.queue, store, fakes.publisher, fakes.observer, options, clock=lambda: now)
    count = 0
    # Each tenant gets estimates and averages, version by version.
    for index in range(6):
        roles: tuple[tuple[Literal["submitted", "completed"], int], ...] = (
            ("submitted", 0),
            ("completed", 60),
        )
        for role, offset in roles:
            now = START + 90 * index + offset
            bodies = [
                envelope(
                    role,
                    f"{tenant}{index}",
                    at=int(now),
                    tenant=tenant,
                    id=f"{role}{tenant}{index}",
                )
                for tenant in ("NYC", "LDN")
            ]
            messages = []
            for body in bodies:
                count += 1
                messages.append(Message(f"m{count}", f"r{count}", json.dumps(body), 1))
            await flush.run(messages, no_retry)
    return fakes


async def test_the_seeded_estimates_are_the_ones_published(aws: Aws) -> None:
    fakes = await publish_in_two_tenants(aws)
    latest: dict[str, WaitEstimate] = {}
    for detail in fakes.publisher.estimates:
        latest[detail.eventId] = detail
    assert sorted(latest) == ["LDN", "NYC"] and all(d.drinks for d in latest.values())

    seeded = await current_values(
        aws.clients.dynamodb, aws.settings.table_name, window_size=aws.settings.window_size
    )
    estimates = {d.eventId: d for d in seeded if isinstance(d, WaitEstimate)}
    assert estimates == latest


def test_a_tenant_item_written_before_the_view_was_kept_shows_nothing() -> None:
    """The previous version's tenant item (its orders, no ``pv``): nothing until the
    tenant's estimate changes and the worker writes the item again (docs/deploying.md)."""
    old: dict[str, Any] = {
        items.KEY: {"S": items.tenant_pk("NYC")},
        items.TENANT: {"S": "NYC"},
        items.VERSION: {"N": "4"},
        items.TENANT_ORDERS: {"B": items.encode_tenant_orders({})},
    }
    assert value_of(old, 10) is None


async def test_the_seeded_averages_are_the_ones_published(aws: Aws) -> None:
    """A window item's view (``e``) at its version is the average the worker published
    there: the board reads it without decoding the window's live records."""
    fakes = await publish_in_two_tenants(aws)
    latest: dict[tuple[str, str], DrinkAverageTime] = {}
    for detail in fakes.publisher.published:
        latest[detail.eventId, detail.drink] = detail
    assert sorted(t for t, _ in latest) == ["LDN", "NYC"]

    seeded = await current_values(
        aws.clients.dynamodb, aws.settings.table_name, window_size=aws.settings.window_size
    )
    averages = {(d.eventId, d.drink): d for d in seeded if isinstance(d, DrinkAverageTime)}
    assert sorted(averages) == sorted(latest)
    for key, published in latest.items():
        # updatedAt: when the item was written, stamped a moment before the publish.
        seen = averages[key]
        assert abs((seen.updatedAt - published.updatedAt).total_seconds()) <= 5
        assert seen.model_copy(update={"updatedAt": published.updatedAt}) == published
