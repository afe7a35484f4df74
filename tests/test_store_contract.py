"""One contract for both stores: the same cases against ``FakeStore`` and ``DynamoStore``.

The fake drives most worker tests; the real adapter runs on moto (DynamoDB on both
emulators is moto). Both commit windows with the one window rule
(``service.core.commit.WindowCommit``); these cases hold them to the same observable
behaviour, so they cannot drift apart silently: order records joined and read back, the
expiry set once, windows written at version + 1 only when they change, a lost race re-read
and joined, anomalies marked once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

from service.aws.provision import ensure_table
from service.aws.store import DynamoStore
from service.core.estimators.registry import estimate_options
from service.core.orders import OrderEvent, Role
from service.core.pairing import InForce, OrderRecord
from service.core.window import WindowKey
from service.ports import Committed, TenantChange, WindowChange
from tests.fakes import FakeStore, RecordingObserver
from tests.helpers import DYNAMODB_ONLY, Aws

pytestmark = pytest.mark.integration

KEY: WindowKey = ("NYC", "Latte")
TTL = 86400
MAX_WAIT = 7200


def submitted(order_id: str, at: int, tenant: str = "NYC", drink: str = "Latte") -> OrderRecord:
    return OrderRecord(order_id).merge(OrderEvent(Role.SUBMITTED, order_id, at, tenant, drink))


def completed(order_id: str, at: int) -> OrderRecord:
    return OrderRecord(order_id).merge(OrderEvent(Role.COMPLETED, order_id, at))


def paired(order_id: str, at: int, wait: int) -> OrderRecord:
    return submitted(order_id, at).join(completed(order_id, at + wait))


@dataclass
class Subject:
    """A store under contract, a second writer on the same durable state, its observer."""

    store: FakeStore | DynamoStore
    other: Callable[[WindowKey, Sequence[OrderRecord], int], Awaitable[None]]
    observer: RecordingObserver
    other_tenant: Callable[[str, Sequence[OrderRecord], int], Awaitable[None]]


@pytest.fixture(params=["fake", "dynamodb"])
async def subject(request: pytest.FixtureRequest, aws: Aws) -> AsyncIterator[Subject]:
    """Each store in turn (``aws``, freshly provisioned moto: only the real adapter uses it)."""
    observer = RecordingObserver()
    if request.param == "fake":
        fake = FakeStore(ttl_seconds=TTL, estimates=estimate_options(MAX_WAIT), observer=observer)

        async def bump(key: WindowKey, records: Sequence[OrderRecord], now: int) -> None:
            fake.bump(key, records)

        async def bump_tenant(tenant: str, records: Sequence[OrderRecord], now: int) -> None:
            fake.bump_tenant(tenant, records, now)

        yield Subject(fake, bump, observer, bump_tenant)
        return

    def dynamo(observer: RecordingObserver | None) -> DynamoStore:
        return DynamoStore(
            aws.clients.dynamodb,
            aws.settings.table_name,
            window_size=10,
            ttl_seconds=TTL,
            estimates=estimate_options(MAX_WAIT),
            observer=observer,
        )

    second = dynamo(None)

    async def merge(key: WindowKey, records: Sequence[OrderRecord], now: int) -> None:
        await second.commit({key: list(records)}, {}, now)

    async def commit_tenant(tenant: str, records: Sequence[OrderRecord], now: int) -> None:
        await second.commit({}, {tenant: list(records)}, now)

    yield Subject(dynamo(observer), merge, observer, commit_tenant)


def only(changes: list[WindowChange]) -> WindowChange:
    assert len(changes) == 1
    return changes[0]


@DYNAMODB_ONLY
async def test_records_are_joined_and_read_back_with_the_first_expiry(subject: Subject) -> None:
    store = subject.store
    assert await store.apply_all([], now=1000) == {}
    first = await store.apply_all([submitted("a", 100)], now=1000)
    assert first["a"].submissions == ((100, "NYC", "Latte"),)
    assert first["a"].expires_at == 1000 + TTL
    again = await store.apply_all([completed("a", 160)], now=5000)
    assert again["a"].submissions == ((100, "NYC", "Latte"),)
    assert again["a"].completions == (160,)
    assert again["a"].expires_at == 1000 + TTL  # set once, by the first writer


@DYNAMODB_ONLY
async def test_many_records_at_once_take_the_same_join(subject: Subject) -> None:
    """Two orders take single updates in DynamoStore, more a transaction: same result."""
    store = subject.store
    ids = [f"o{i}" for i in range(5)]
    await store.apply_all([submitted(o, 100 + i) for i, o in enumerate(ids)], now=1000)
    both = await store.apply_all([completed(o, 200) for o in ids], now=1001)
    assert sorted(both) == ids
    for i, order_id in enumerate(ids):
        assert both[order_id].submitted_at == 100 + i and both[order_id].completed_at == 200
        assert both[order_id].expires_at == 1000 + TTL


@DYNAMODB_ONLY
async def test_a_window_is_written_at_the_next_version_only_when_it_changes(
    subject: Subject,
) -> None:
    store = subject.store
    first = only((await store.commit({KEY: [paired("a", 100, 60)]}, {}, now=1000)).windows)
    assert first.changed and first.state.version == 1
    assert first.state.window.duration == 60.0 and first.state.window.samples == 1
    same = only((await store.commit({KEY: [paired("a", 100, 60)]}, {}, now=1001)).windows)
    assert not same.changed and same.state.version == 1
    second = only((await store.commit({KEY: [paired("b", 200, 30)]}, {}, now=1002)).windows)
    assert second.changed and second.state.version == 2
    assert second.state.window.duration == 45.0


@DYNAMODB_ONLY
async def test_a_lost_race_is_read_again_and_joined(subject: Subject) -> None:
    store = subject.store
    only((await store.commit({KEY: [paired("a", 100, 60)]}, {}, now=1000)).windows)
    await subject.other(KEY, [paired("b", 200, 20)], 1000)  # behind this store's cache
    change = only((await store.commit({KEY: [paired("c", 300, 40)]}, {}, now=1000)).windows)
    assert change.changed and change.state.version == 3
    assert sorted(e.order_id for e in change.state.window.entries) == ["a", "b", "c"]
    assert subject.observer.counts["window_conflict"] == 1


@DYNAMODB_ONLY
async def test_every_submission_key_hears_of_an_order_and_the_earliest_counts(
    subject: Subject,
) -> None:
    """An order submitted twice under two drinks belongs to the earliest submission's key;
    the other key's state holds it and shows nothing."""
    other_key: WindowKey = ("NYC", "Mocha")
    record = submitted("a", 100).join(submitted("a", 110, drink="Mocha")).join(completed("a", 160))
    changes = (
        await subject.store.commit({KEY: [record], other_key: [record]}, {}, now=1000)
    ).windows
    by_key = {change.key: change for change in changes}
    assert by_key[KEY].state.window.duration == 60.0
    assert by_key[other_key].state.window.samples == 0


@DYNAMODB_ONLY
async def test_records_settle_when_they_expire_and_still_count(subject: Subject) -> None:
    record = paired("a", 100, 60)._replace(expires_at=1500)
    first = only((await subject.store.commit({KEY: [record]}, {}, now=1000)).windows)
    assert first.state.window.duration == 60.0
    later = paired("b", 1600, 20)._replace(expires_at=90000)
    change = only((await subject.store.commit({KEY: [later]}, {}, now=2000)).windows)
    assert change.changed and change.state.version == 2
    assert [e.order_id for e in change.state.window.entries] == ["b", "a"]


@DYNAMODB_ONLY
async def test_an_anomaly_is_marked_once(subject: Subject) -> None:
    store = subject.store
    await store.apply_all([submitted("a", 100).join(completed("a", 90))], now=1000)
    assert await store.mark_anomalies({"a": "negative_wait"}) == {"a"}
    assert await store.mark_anomalies({"a": "negative_wait"}) == set()
    stored = await store.apply_all([completed("a", 90)], now=1001)
    assert stored["a"].anomaly_reported


# -- tenants -------------------------------------------------------------------------------


def tenant_only(committed: Committed) -> TenantChange:
    assert len(committed.tenants) == 1
    return committed.tenants[0]


@DYNAMODB_ONLY
async def test_a_tenant_is_committed_at_the_next_version_only_when_it_changes(
    subject: Subject,
) -> None:
    store = subject.store
    assert await store.tenant_views(["NYC", ""], now=1000) == {"NYC": None, "": None}
    first = tenant_only(await store.commit({}, {"NYC": [submitted("a", 100)]}, now=1000))
    assert (first.version, first.changed, first.counted) == (1, True, ())
    assert first.estimate is not None and first.estimate.open_orders == 1
    assert first.estimate.as_of == 100
    same = tenant_only(await store.commit({}, {"NYC": [submitted("a", 100)]}, now=1001))
    assert (same.version, same.changed) == (1, False)
    second = tenant_only(
        await store.commit({}, {"NYC": [submitted("b", 110), paired("c", 90, 10)]}, now=1002)
    )
    assert second.version == 2 and second.changed and second.counted == ("c",)
    assert second.estimate is not None and second.estimate.open_orders == 2
    views = await store.tenant_views(["NYC"], now=1003)
    assert views["NYC"] == second.estimate


@DYNAMODB_ONLY
async def test_a_tenant_write_that_lost_a_race_is_reread_and_joined(subject: Subject) -> None:
    store = subject.store
    await store.commit({}, {"": [submitted("a", 100, tenant="")]}, now=1000)
    await subject.other_tenant("", [submitted("b", 105, tenant="")], 1000)  # behind our cache
    after = tenant_only(await store.commit({}, {"": [submitted("c", 110, tenant="")]}, now=1001))
    assert after.version == 3  # ours at 1, theirs at 2, ours again at 3
    assert after.estimate is not None and after.estimate.open_orders == 3
    assert subject.observer.counts["window_conflict"] == 1


@DYNAMODB_ONLY
async def test_an_order_is_counted_by_exactly_one_commit(subject: Subject) -> None:
    store = subject.store
    await store.commit({}, {"NYC": [submitted("a", 100)]}, now=1000)
    await subject.other_tenant("NYC", [paired("a", 100, 60)], 1000)
    again = tenant_only(await store.commit({}, {"NYC": [paired("a", 100, 60)]}, now=1001))
    assert again.counted == ()  # the other writer counted it
    assert again.estimate is not None and again.estimate.open_orders == 0
    fresh = tenant_only(await store.commit({}, {"NYC": [paired("b", 200, 30)]}, now=1002))
    assert fresh.counted == ("b",)
    repeat = tenant_only(await store.commit({}, {"NYC": [paired("b", 200, 30)]}, now=1003))
    assert repeat.counted == ()


@DYNAMODB_ONLY
async def test_windows_and_tenants_commit_together(subject: Subject) -> None:
    store = subject.store
    record = paired("a", 100, 60)
    done = await store.commit({KEY: [record]}, {"NYC": [record]}, now=1000)
    assert only(done.windows).state.window.samples == 1
    assert tenant_only(done).counted == ("a",)


@DYNAMODB_ONLY
async def test_the_estimate_in_force_is_kept_once_with_the_order(subject: Subject) -> None:
    store = subject.store
    told = InForce(300.0, 420.0, "NYC")
    kept = await store.apply_all([submitted("a", 100)._replace(in_force=told)], now=1000)
    assert kept["a"].in_force == told
    later = await store.apply_all(
        [completed("a", 400)._replace(in_force=InForce(5.0, 6.0, "LDN"))], now=1001
    )
    assert later["a"].in_force == told  # the first kept wins
    assert later["a"].completions == (400,)


@DYNAMODB_ONLY
async def test_an_order_that_moved_to_another_tenant_leaves_a_state_behind_our_cache(
    subject: Subject,
) -> None:
    """Its earlier submission names another tenant: the state that held it must stop
    counting it (it keeps a tombstone),
    although this process's cache of that state never held it (found by the two-workers
    race of tests/test_order_independence.py)."""
    store = subject.store
    await store.commit({}, {"LDN": [submitted("l", 100, tenant="LDN")]}, now=1000)
    await subject.other_tenant("LDN", [submitted("x", 120, tenant="LDN")], 1000)
    moved = submitted("x", 110, tenant="NYC").join(submitted("x", 120, tenant="LDN"))
    done = await store.commit({}, {"NYC": [moved], "LDN": [moved]}, now=1001)
    views = {change.tenant: change for change in done.tenants}
    ldn = views["LDN"].estimate
    assert ldn is not None and ldn.open_orders == 1 and views["LDN"].version == 3
    nyc = views["NYC"].estimate
    assert nyc is not None and nyc.open_orders == 1
    # The same records again: LDN keeps the moved order as a tombstone, so its cached state
    # already holds everything the records say: nothing is written anywhere.
    again = await store.commit({}, {"NYC": [moved], "LDN": [moved]}, now=1002)
    assert {c.tenant: (c.version, c.changed) for c in again.tenants} == {
        "NYC": (1, False),
        "LDN": (3, False),
    }


async def test_a_store_commits_from_its_packed_states_as_from_objects(aws: Aws) -> None:
    """Two stores on two tables take the same merges and commits, alternating over three
    keys and three tenants: one keeps every cached state as objects, the other only the
    one used last (``hot_windows`` / ``hot_tenants`` 1), so each merge or commit of the
    second starts from a state it packed and unpacks. Their answers are the same."""
    await ensure_table(aws.clients.dynamodb, "wait-times-packed")

    observers = RecordingObserver(), RecordingObserver()

    def store(table: str, hot: int, observer: RecordingObserver) -> DynamoStore:
        return DynamoStore(
            aws.clients.dynamodb,
            table,
            window_size=10,
            ttl_seconds=TTL,
            estimates=estimate_options(MAX_WAIT),
            observer=observer,
            hot_windows=hot,
            hot_tenants=hot,
        )

    objects = store(aws.settings.table_name, 1024, observers[0])
    packed = store("wait-times-packed", 1, observers[1])
    keys: list[WindowKey] = [("NYC", "Latte"), ("NYC", "Mocha"), ("LDN", "Latte")]
    for step in range(12):
        key, now = keys[step % 3], 1000 + step
        records = [paired(f"o{step}", 100 + 10 * step, 60 + step), submitted(f"p{step}", 200)]
        windows = [(await s.commit({key: records}, {}, now)).windows for s in (objects, packed)]
        assert windows[0] == windows[1]
        tenant = ("NYC", "LDN", "SYD")[step % 3]
        orders = [submitted(f"t{step}", 300 + step, tenant), paired(f"u{step}", 250, 40)]
        tenants = [await s.commit({}, {tenant: orders}, now) for s in (objects, packed)]
        assert tenants[0].tenants == tenants[1].tenants
    views = [await s.tenant_views(["NYC", "LDN", "SYD"], now=2000) for s in (objects, packed)]
    assert views[0] == views[1] and all(v is not None for v in views[0].values())
    # The same items written and read: no state came back wrong and had to be read again.
    assert observers[0].calls == observers[1].calls
    assert packed.cache.packed == 2 and packed.tenants.packed == 2
    assert objects.cache.packed == 0 and objects.tenants.packed == 0
