"""4. Memory: peak RSS of a worker holding 100,000 open orders and 10,000 windows.

Entry point: ``run(report)`` is a plain (synchronous) function; it starts its own event loop
with ``anyio.run``, prints as it goes and fills ``report["memory"]``. Run alone:
``python -m bench.memory``.

Pushing 100,000 orders through moto (~30 messages/s) would take about two hours, so the
state is built honestly inside a real worker process instead:

* A child process (``python -m bench.memory --child MODE``) starts the real worker
  (``service.app.run_worker`` against a provisioned emulator, its metrics server and AWS
  clients included) and reads its RSS once it is idle.
* ``loaded``: it then fills the very structures the worker keeps for that load, through
  the worker's own code paths: 10,000 full windows (WINDOW_SIZE=10 entries of uuid4 order
  ids, realistic times and waits) go into the store's window cache with
  ``DynamoStore.cache.put`` (what ``merge_all`` does after every write), their averages go to
  the metrics with ``Metrics.observe_average`` (what a publish does; the series cap
  applies), and 100,000 open orders (uuid4 ids) over ``TENANTS`` tenants go into the
  store's tenant cache as tenant states (``DynamoStore.tenants.put``, what a commit does),
  their views to the metrics with ``Observer.tenant_estimate``.
* Both modes then process a few hundred real messages from the queue (submissions and
  completions on keys of the filled windows), so the peak includes real flushes on top
  of the state. The peak is the child's VmHWM (its RSS high-water mark).

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
OPEN_ORDERS = 100_000
WINDOWS = 10_000
REAL_ORDERS = 150  # 300 real messages through the worker
TARGET_MB = 150
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
    """10,000 (tenant, drink) keys: 1,250 tenants x the 8 drinks of the menu."""
    drinks = list(MENU)
    return [(f"T{t:04d}", drink) for t in range(WINDOWS // len(drinks)) for drink in drinks]


def _order_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def fill(worker: Any, rng: random.Random) -> None:
    """The state of 10,000 windows and 100,000 open orders, through the worker's own code."""
    from service.core.commit import StoredKey  # noqa: PLC0415
    from service.core.pairing import KeyState, OrderRecord, top  # noqa: PLC0415
    from service.core.queueing import StoredTenant, TenantState  # noqa: PLC0415
    from service.core.window import Window, WindowEntry  # noqa: PLC0415

    size = worker.options.window_size
    store = worker.flush.store
    all_keys = keys()
    for key in all_keys:
        completed = BASE_TIME
        entries = []
        for _ in range(size):
            completed -= rng.randint(30, 400)
            wait = max(5, round(rng.gauss(MENU[key[1]], MENU[key[1]] * 0.25)))
            entries.append(WindowEntry(completed, _order_id(rng), wait))
        window = Window(size, top(entries, size))
        assert len(window.entries) == size
        # Orders older than the expiry horizon: the key's state holds them settled.
        state = KeyState(key, size, {}, window.entries)
        store.cache.put(key, StoredKey(state, window, 1))
        worker.observer.average_published(key, window.duration, window.samples)
    by_tenant: dict[str, list[OrderRecord]] = {}
    for _ in range(OPEN_ORDERS):
        tenant, drink = rng.choice(all_keys)
        submitted = BASE_TIME - rng.randint(0, 3600)
        by_tenant.setdefault(tenant, []).append(
            OrderRecord.of(_order_id(rng), tenant, drink, submitted)
        )
    max_wait = worker.options.max_wait_seconds
    for tenant, records in by_tenant.items():
        tenant_state = TenantState(tenant).add(records)
        stored = StoredTenant.of(tenant_state, 1, now=BASE_TIME, max_wait_seconds=max_wait)
        store.tenants.put(tenant, stored)
        if stored.view is not None:
            worker.observer.tenant_estimate(stored.view)
    assert store.cached_windows == WINDOWS, store.cached_windows
    assert store.cached_tenants == len(by_tenant), store.cached_tenants


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
            started = time.perf_counter()
            fill(worker, random.Random(7))
            gc.collect()
            stages["filled"] = _status_mb()
            stages["fill_s"] = round(time.perf_counter() - started, 2)
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


def open_orders_file(count: int = OPEN_ORDERS) -> Path:
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


async def measure(report: dict[str, Any]) -> None:
    dummy_credentials()
    print(
        f"memory: worker holding {OPEN_ORDERS:,} open orders and {WINDOWS:,} windows "
        f"(state filled in the real worker, then {2 * REAL_ORDERS} real messages)"
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
    print(
        f"  loaded worker: idle RSS {loaded['idle']['VmRSS']} MB, after filling "
        f"{loaded['cached_windows']:,} windows + {loaded['open_orders']:,} open orders in "
        f"{loaded['cached_tenants']:,} tenant states "
        f"({loaded['fill_s']}s) RSS {loaded['filled']['VmRSS']} MB, after "
        f"{int(loaded['messages_processed'])} real messages ({loaded['messages_s']}s) RSS "
        f"{loaded['processed']['VmRSS']} MB; peak {loaded['peak_mb']} MB "
        f"(target <= {TARGET_MB} MB: {'met' if loaded['peak_mb'] <= TARGET_MB else 'MISSED'})"
    )
    path = open_orders_file()
    replayed = replay_peak(path)
    print(
        f"  wait-times replay of {replayed['events']:,} open orders (submissions only): peak "
        f"{replayed['peak_mb']} MB in {replayed['wall_s']}s ({replayed['summary']})"
    )
    report["memory"] = {
        "open_orders": OPEN_ORDERS,
        "windows": WINDOWS,
        "window_size": 10,
        "method": (
            "real worker process (run_worker on the emulator); windows put in the store's "
            "cache with DynamoStore.cache.put, averages observed with Metrics.observe_average, "
            "100,000 open orders (uuid4 ids) in tenant states put in DynamoStore.tenants; then "
            f"{2 * REAL_ORDERS} real messages processed from SQS; peak = VmHWM of the child"
        ),
        "idle_worker_rss_mb": baseline["idle"]["VmRSS"],
        "idle_worker_after_messages_peak_mb": baseline["peak_mb"],
        "loaded_worker_rss_filled_mb": loaded["filled"]["VmRSS"],
        "loaded_worker_rss_after_messages_mb": loaded["processed"]["VmRSS"],
        "loaded_worker_peak_mb": loaded["peak_mb"],
        "state_cost_mb": round(loaded["peak_mb"] - baseline["peak_mb"], 1),
        "target_mb": TARGET_MB,
        "met": loaded["peak_mb"] <= TARGET_MB,
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
