"""4. Memory: peak RSS of a worker with full caches (issue 20): 100,000 windows each holding
N = WINDOW_SIZE live records, and 50,000 tenants whose states hold 1,000,000 open orders.

Entry point: ``run(report)`` is a plain (synchronous) function; it starts its own event loop
with ``anyio.run``, prints as it goes and fills ``report["memory"]``. Run alone:
``python -m bench.memory``.

Pushing a million orders through moto (~30 messages/s) would take days, so the state is
built honestly inside a real worker process instead:

* A child process (``python -m bench.memory --child MODE``) starts the real worker
  (``service.app.run_worker`` against a provisioned emulator, its metrics server and AWS
  clients included) and reads its RSS once it is idle.
* ``loaded``: it then fills the very structures the worker keeps for that load, through
  the worker's own code paths, up to the caches' bounds (``WAIT_TIMES_MAX_WINDOWS_IN_MEMORY``
  100,000 and ``WAIT_TIMES_MAX_TENANTS_IN_MEMORY`` 50,000: the whole load fits). Each
  order's record is the one the store hands a flush (``items.record_from_item`` of its
  item: names parsed per record, as from DynamoDB). Windows: 12,500 tenants x the 8 drinks
  of the menu, each committed from empty with ``WindowCommit`` (the store's rule) from
  WINDOW_SIZE completed orders (uuid4 ids, realistic times and waits, expiring a TTL
  later: all live), then put in ``DynamoStore.cache`` (what a commit does) and their
  averages observed by the metrics (the series cap applies). Tenants: 50,000, between 1
  and 39 open orders each (1,000,000 in all, uuid4 ids, submitted in the last hour),
  committed with ``TenantCommit`` and put in ``DynamoStore.tenants``, their views observed.
  RSS is read after each, so the cost per window and per open order is reported; so is
  the CPU of using a packed (least recently used) window or tenant again.
* Both modes then process a few hundred real messages from the queue (submissions and
  completions on keys of the filled windows), so the peak includes real flushes on top
  of the state. The peak is the child's VmHWM (its RSS high-water mark).

Until 2026-12-02 the part filled 10,000 windows without live records and 100,000 open
orders; that scale is replaced by this one.

Also measured: the peak RSS of ``wait-times replay`` over 100,000 open orders
(submissions only), the path that really holds every open order's record in memory.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import random
import subprocess
import sys
import time
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson

from bench.common import (
    LOAD_BARISTAS,
    LOAD_CAP,
    ROOT,
    bench_settings,
    dummy_credentials,
    order_item,
    peak_rss_mb,
    peak_wrapped,
    print_machine,
    quiet_logs,
    spawn,
    wait_times_command,
    worker_env,
)
from service.aws.clients import open_clients
from service.aws.provision import provision
from service.settings import DEFAULT_SOURCE
from service.tools.emulator import Emulator
from service.tools.player import MENU, TrafficGenerator, put_entries
from tests.envelopes import envelope

OUT = Path(__file__).resolve().parent / "out"
OPEN_ORDERS = 1_000_000
TENANTS = 50_000
WINDOWS = 100_000
REPLAY_OPEN_ORDERS = 100_000
REAL_ORDERS = 150  # 300 real messages through the worker
TARGET_MB = 250
BATCH = 500  # keys or tenants per commit while filling
TOUCHES = 2000  # packed windows and tenants used again, to time it
MARK = "BENCH "
BASE_TIME = 1_790_000_000


def _status_mb() -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak so far) of this process, in MB."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, kb, _ = line.split()
                values[name.rstrip(":")] = round(int(kb) / 1024, 1)
    return values


def keys() -> list[tuple[str, str]]:
    """100,000 (tenant, drink) keys: 12,500 tenants x the 8 drinks of the menu."""
    drinks = list(MENU)
    return [(tenant_name(t), drink) for t in range(WINDOWS // len(drinks)) for drink in drinks]


def tenant_name(index: int) -> str:
    return f"T{index:05d}"


def _order_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def open_counts(rng: random.Random) -> list[int]:
    """Open orders per tenant: between 1 and 39 each, OPEN_ORDERS in all."""
    counts = [rng.randint(1, 39) for _ in range(TENANTS)]
    step = 1 if sum(counts) < OPEN_ORDERS else -1
    while (left := OPEN_ORDERS - sum(counts)) != 0:
        for index in rng.sample(range(TENANTS), min(abs(left), TENANTS)):
            if 1 <= counts[index] + step <= 39:
                counts[index] += step
    return counts


def stored_record(
    order_id: str, tenant: str, drink: str, submitted: int, completed: int | None, expires: int
) -> Any:
    """An order's record as the store hands it to a flush: parsed from its item."""
    from service.aws import items  # noqa: PLC0415
    from service.core.pairing import OrderRecord  # noqa: PLC0415

    completions = () if completed is None else (completed,)
    record = OrderRecord(order_id, ((submitted, tenant, drink),), completions, False, None)
    return items.record_from_item(order_id, order_item(record, expires))


def fill_windows(worker: Any, rng: random.Random) -> None:
    """WINDOWS windows of WINDOW_SIZE live records each, committed and cached as a flush's."""
    from service.core.commit import StoredKey, WindowCommit  # noqa: PLC0415

    size = worker.options.window_size
    store = worker.flush.store
    all_keys = keys()
    for start in range(0, len(all_keys), BATCH):
        by_key = {}
        for tenant, drink in all_keys[start : start + BATCH]:
            completed = BASE_TIME
            records = []
            for _ in range(size):
                completed -= rng.randint(30, 400)
                wait = max(5, round(rng.gauss(MENU[drink], MENU[drink] * 0.25)))
                records.append(
                    stored_record(
                        _order_id(rng),
                        tenant,
                        drink,
                        completed - wait,
                        completed,
                        BASE_TIME + store.ttl_seconds,
                    )
                )
            by_key[records[0].key] = records
        commit = WindowCommit(
            by_key,
            {key: StoredKey.empty(key, size) for key in by_key},
            now=BASE_TIME,
            max_wait_seconds=store.max_wait_seconds,
        )
        commit.landed(commit.proposals())
        for committed in commit.result():
            assert len(committed.stored.state.live) == size
            store.cache.put(committed.key, committed.stored)
            view = committed.stored.view
            worker.observer.average_published(committed.key, view.duration, view.samples)
    assert store.cached_windows == WINDOWS, store.cached_windows


def fill_tenants(worker: Any, rng: random.Random) -> None:
    """TENANTS tenant states holding OPEN_ORDERS open orders, committed and cached."""
    try:  # (carried by bench.compare into older trees, before the tenant module)
        from service.core.tenant import StoredTenant, TenantCommit  # noqa: PLC0415
    except ImportError:
        from service.core.queueing import StoredTenant, TenantCommit  # type: ignore[no-redef,import-untyped]  # noqa: PLC0415

    store = worker.flush.store
    estimates = getattr(store, "estimates", None)
    options: dict[str, Any] = (
        {"options": estimates}
        if estimates is not None
        else {"max_wait_seconds": store.max_wait_seconds}
    )
    drinks = list(MENU)
    counts = open_counts(rng)
    for start in range(0, TENANTS, BATCH):
        by_tenant = {}
        for index in range(start, min(start + BATCH, TENANTS)):
            tenant = tenant_name(index)
            records = [
                stored_record(
                    _order_id(rng),
                    tenant,
                    rng.choice(drinks),
                    BASE_TIME - rng.randint(0, 3600),
                    None,
                    BASE_TIME + store.ttl_seconds,
                )
                for _ in range(counts[index])
            ]
            by_tenant[records[0].tenant] = records
        commit = TenantCommit(
            by_tenant,
            {tenant: StoredTenant.empty(tenant) for tenant in by_tenant},
            now=BASE_TIME,
            **options,
        )
        commit.landed(commit.proposals())
        for committed in commit.result():
            store.tenants.put(committed.tenant, committed.stored)
            if committed.stored.view is not None:
                worker.observer.tenant_estimate(committed.stored.view)
    assert store.cached_tenants == TENANTS, store.cached_tenants


def touch_cost(worker: Any, rng: random.Random) -> dict[str, Any]:
    """Microseconds to use again a packed window and a packed tenant state (a cache hit
    on one the caches hold packed: unpacked, and the least recently used hot one packed)."""
    store = worker.flush.store
    found: dict[str, Any] = {}
    for name, cache in (("window", store.cache), ("tenant", store.tenants)):
        hot = getattr(cache, "hot_capacity", 0)  # (an unpacked Lru: every entry is hot)
        names = list(cache)
        picked = rng.sample(names[: len(names) - hot], TOUCHES)
        started = time.process_time()
        for key in picked:
            assert cache.get(key) is not None
        found[f"{name}_us"] = round((time.process_time() - started) / TOUCHES * 1e6, 1)
        found[f"{name}s_packed"] = getattr(cache, "packed", 0)
    return found


async def child(mode: str, expected: int) -> None:
    """Inside the child: the real worker, optionally filled, then real messages."""
    from service.app import run_worker  # noqa: PLC0415
    from service.logs import configure_logging  # noqa: PLC0415
    from service.metrics import Metrics  # noqa: PLC0415
    from service.settings import load_settings  # noqa: PLC0415

    configure_logging("json", "warning")
    settings = load_settings()
    metrics = Metrics(settings.max_metric_series)
    stages: dict[str, Any] = {}
    async with anyio.create_task_group() as group:
        worker = await group.start(
            functools.partial(run_worker, settings, install_signals=False, metrics=metrics)
        )
        await anyio.sleep(1)
        gc.collect()
        stages["idle"] = _status_mb()
        if mode == "loaded":
            rng = random.Random(7)
            started = time.perf_counter()
            fill_windows(worker, rng)
            gc.collect()
            stages["windows_filled"] = _status_mb()
            fill_tenants(worker, rng)
            gc.collect()
            stages["filled"] = _status_mb()
            stages["fill_s"] = round(time.perf_counter() - started, 2)
            stages["touch"] = touch_cost(worker, rng)
            stages["open_orders"] = OPEN_ORDERS
            stages["cached_tenants"] = worker.flush.store.cached_tenants
            stages["cached_windows"] = worker.flush.store.cached_windows
        print(MARK + "ready", flush=True)
        processed = "wait_times_messages_processed_total"
        started = time.perf_counter()
        while (metrics.registry.get_sample_value(processed) or 0) < expected:  # noqa: ASYNC110 - a counter, not an event
            await anyio.sleep(0.1)
        stages["messages_s"] = round(time.perf_counter() - started, 1)
        stages["processed"] = _status_mb()
        stages["messages_processed"] = metrics.registry.get_sample_value(processed)
        stages["windows_after"] = worker.flush.store.cached_windows
        worker.stop()
    # VmHWM: this process image's RSS high-water mark. Not ru_maxrss: Linux carries the
    # spawning process's high-water mark across fork/exec into it (it would report the
    # bench's own size if that were larger).
    stages["peak_mb"] = _status_mb()["VmHWM"]
    print(MARK + json.dumps(stages), flush=True)


def real_events(rng: random.Random, bus: str) -> list[Any]:
    """Submissions and completions of REAL_ORDERS orders on keys of the filled windows."""
    all_keys = keys()
    entries = []
    now = int(time.time())
    for i in range(REAL_ORDERS):
        tenant, drink = rng.choice(all_keys)
        order_id = _order_id(rng)
        submitted = now - 3600 + 10 * i
        completed = submitted + rng.randint(40, 200)
        common = {"orderId": order_id, "userId": "bench", "eventId": tenant}
        for detail_type, detail, at in (
            (
                "OrderManager.WaitingCompletion",
                {
                    **common,
                    "state": f"{tenant}-CREATED",
                    "drinkOrder": {"drink": drink, "modifiers": []},
                },
                submitted,
            ),
            (
                f"OrderManager.Order{tenant}-COMPLETED",
                {**common, "ORDERSTATE": f"{tenant}-COMPLETED"},
                completed,
            ),
        ):
            entries.append(
                {
                    "EventBusName": bus,
                    "Source": DEFAULT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "Time": datetime.fromtimestamp(at, UTC),
                }
            )
    return entries


async def run_child(mode: str, settings: Any, clients: Any, seed: int) -> dict[str, Any]:
    events = real_events(random.Random(seed), settings.event_bus)
    process = spawn(
        [sys.executable, "-m", "bench.memory", "--child", mode, str(len(events))],
        worker_env(settings),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        result: dict[str, Any] = {}
        while True:
            line = await anyio.to_thread.run_sync(process.stdout.readline)
            if not line:
                raise RuntimeError(f"memory child {mode} ended early ({process.wait()})")
            if not line.startswith(MARK):
                continue
            payload = line[len(MARK) :].strip()
            if payload == "ready":
                await put_entries(clients.events, events)
            else:
                result = json.loads(payload)
                break
    finally:
        process.wait(timeout=60)
    return result


def open_orders_file(count: int = REPLAY_OPEN_ORDERS) -> Path:
    """Seeded JSON Lines of ``count`` submissions (envelopes), none completed: all stay open."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"open-orders-{count}.jsonl"
    if path.exists():
        return path
    # 2 orders/s: 100,000 submissions span ~14 h, inside the 24 h TTL, so none expires.
    generator = TrafficGenerator(
        seed=11, rate=2.0, start=BASE_TIME, baristas=LOAD_BARISTAS, cap=LOAD_CAP
    )
    written = 0
    with path.open("wb") as out:
        for event in generator.events(None):
            if event.detail_type != "OrderManager.WaitingCompletion":
                continue
            body = envelope(
                detail_type=event.detail_type,
                detail=event.detail,
                at=event.at,
                id=f"{written:08d}-open",
            )
            out.write(orjson.dumps(body) + b"\n")
            written += 1
            if written >= count:
                break
    return path


def replay_peak(path: Path) -> dict[str, Any]:
    """Peak RSS of ``wait-times replay FILE`` (wait4's ru_maxrss, taken by a small wrapper)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAIT_TIMES_")}
    started = time.perf_counter()
    done = subprocess.run(
        peak_wrapped(wait_times_command("replay", str(path))),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"replay failed: {done.stderr.strip()}")
    rows = json.loads(done.stdout)
    summary = next(line for line in done.stderr.splitlines() if line.startswith("replayed"))
    return {
        "file": str(path.relative_to(ROOT)),
        "events": sum(1 for _ in path.open("rb")),
        "windows_out": len(rows),
        "peak_mb": peak_rss_mb(done.stderr),
        "wall_s": round(elapsed, 2),
        "summary": summary,
    }


def per_item_bytes(loaded: dict[str, Any]) -> dict[str, int]:
    """Bytes of RSS per cached window and per open order (with its tenant's share)."""
    mb = 1024 * 1024
    idle, windows, filled = (
        loaded[stage]["VmRSS"] for stage in ("idle", "windows_filled", "filled")
    )
    return {
        "bytes_per_window": round((windows - idle) * mb / WINDOWS),
        "bytes_per_open_order": round((filled - windows) * mb / OPEN_ORDERS),
    }


async def measure(report: dict[str, Any]) -> None:
    dummy_credentials()
    print(
        f"memory: worker holding {WINDOWS:,} windows of 10 live records and {OPEN_ORDERS:,} "
        f"open orders in {TENANTS:,} tenant states (state filled in the real worker, then "
        f"{2 * REAL_ORDERS} real messages)"
    )
    emulator = Emulator()
    emulator.start()
    try:
        settings = bench_settings(emulator.url, "bench-memory", receive_wait_seconds=20)
        async with AsyncExitStack() as stack:
            clients = await open_clients(settings, stack)
            await provision(settings, clients)
            baseline = await run_child("idle", settings, clients, seed=1)
            print(
                f"  idle worker (started, nothing processed): RSS {baseline['idle']['VmRSS']} MB;"
                f" after {int(baseline['messages_processed'])} real messages: peak "
                f"{baseline['peak_mb']} MB"
            )
            loaded = await run_child("loaded", settings, clients, seed=2)
    finally:
        emulator.stop()
    per_item = per_item_bytes(loaded)
    touch = loaded["touch"]
    met = loaded["peak_mb"] <= TARGET_MB
    print(
        f"  loaded worker: idle RSS {loaded['idle']['VmRSS']} MB; {loaded['cached_windows']:,} "
        f"windows: RSS {loaded['windows_filled']['VmRSS']} MB "
        f"({per_item['bytes_per_window']:,} bytes a window); + {loaded['open_orders']:,} open "
        f"orders in {loaded['cached_tenants']:,} tenant states: RSS {loaded['filled']['VmRSS']}"
        f" MB ({per_item['bytes_per_open_order']:,} bytes an open order; filled in "
        f"{loaded['fill_s']}s); after {int(loaded['messages_processed'])} real messages "
        f"({loaded['messages_s']}s) RSS {loaded['processed']['VmRSS']} MB; peak "
        f"{loaded['peak_mb']} MB (target <= {TARGET_MB} MB: {'met' if met else 'MISSED'})"
    )
    print(
        f"  packed: {touch['windows_packed']:,} windows, {touch['tenants_packed']:,} tenants; "
        f"using a packed one again: {touch['window_us']} us CPU a window, "
        f"{touch['tenant_us']} us a tenant"
    )
    path = open_orders_file()
    replayed = replay_peak(path)
    print(
        f"  wait-times replay of {replayed['events']:,} open orders (submissions only): peak "
        f"{replayed['peak_mb']} MB in {replayed['wall_s']}s ({replayed['summary']})"
    )
    report["memory"] = {
        "open_orders": OPEN_ORDERS,
        "tenants": TENANTS,
        "windows": WINDOWS,
        "window_size": 10,
        "live_records_per_window": 10,
        "method": (
            "real worker process (run_worker on the emulator); windows committed from empty "
            "with WindowCommit from 10 completed orders each (records parsed from their "
            "items, all live) and put in DynamoStore.cache, averages observed; 1,000,000 "
            "open orders (uuid4 ids, 1-39 a tenant) committed with TenantCommit into 50,000 "
            "tenant states put in DynamoStore.tenants, views observed; then "
            f"{2 * REAL_ORDERS} real messages processed from SQS; peak = VmHWM of the child"
        ),
        "idle_worker_rss_mb": baseline["idle"]["VmRSS"],
        "idle_worker_after_messages_peak_mb": baseline["peak_mb"],
        "loaded_worker_rss_windows_mb": loaded["windows_filled"]["VmRSS"],
        "loaded_worker_rss_filled_mb": loaded["filled"]["VmRSS"],
        "loaded_worker_rss_after_messages_mb": loaded["processed"]["VmRSS"],
        "loaded_worker_peak_mb": loaded["peak_mb"],
        **per_item,
        "packed_touch": touch,
        "state_cost_mb": round(loaded["peak_mb"] - baseline["peak_mb"], 1),
        "target_mb": TARGET_MB,
        "met": met,
        "replay_open_orders": replayed,
        "children": {"idle": baseline, "loaded": loaded},
    }


def run(report: dict[str, Any]) -> None:
    """Measure and fill ``report["memory"]`` (synchronous; starts its own event loop)."""
    quiet_logs()
    report.setdefault("machine", print_machine())
    anyio.run(measure, report)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        anyio.run(child, sys.argv[2], int(sys.argv[3]))
    else:
        results: dict[str, Any] = {}
        run(results)
        print(json.dumps(results, indent=2))
