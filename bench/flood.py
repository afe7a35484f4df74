"""The tenant flood (issue 20): 50,000 tenants' orders through the bus to two workers.

Entry point: ``run(report)`` is a plain (synchronous) function that fills
``report["flood"]``. Not in the default set of ``python3 dev.py bench`` (it takes up to
its 30-minute budget): ask for it, ``python3 dev.py bench flood``, or run it alone with
its options, ``python -m bench.flood [--tenants N] [--orders N] [--budget-minutes M]``.

The setup is the reliability tests' (``tests.helpers.Cloud``): SQS and EventBridge on
LocalStack in host mode, DynamoDB on moto. The emulators, not the workers, take most of
the CPU (at 50,000 tenants LocalStack about 6 ms and moto about 3 ms per event, the two
workers together under 3 ms; docs/reliability.md, "The tenant flood"). The resources are
those ``provision`` creates (``wait-times provision`` runs the same function): the bus,
the rule, the queue with its DLQ, the table. Two real ``wait-times run`` processes
consume the queue, each with the service's default caches
(``WAIT_TIMES_MAX_TENANTS_IN_MEMORY`` 50,000 and ``WAIT_TIMES_MAX_WINDOWS_IN_MEMORY``
100,000; ``--max-tenants-in-memory`` and ``--max-windows-in-memory`` change them).

The traffic (``flood_traffic``): every tenant places at least one order (the tenant is
``detail.eventId``, the current shape); a tenth of them, the regulars, place the orders
beyond one each (by default 1.2 orders a tenant: 60,000 orders, about 111,000 events),
on two or three favourite drinks. About 15% of the orders are left open (submitted,
never completed), 4% cancelled, the rest completed. The events are put on the bus in
time order, ten per PutEvents call, by a few concurrent putters, while the workers
consume.

Measured: the put rate (events over the time the putters took), events/s end to end
(first put to the queue drained and both workers idle, their counters still over two
samples), each worker's RSS sampled as the traffic is processed (at 25/50/75/100% of it)
and its peak (VmHWM from /proc), the tenant and window caches' sizes (the workers'
gauges), CPU seconds of the workers and the emulators (where the time went) and the AWS
calls the workers made. Checked, reported as numbers (nothing asserts): the DLQ's
ApproximateNumberOfMessages, every key's final window in DynamoDB and every tenant's (as
of, open orders) against the reference model (``tests.reliability.reference``). The
deadline (30 minutes from the start) stops the putting and the wait for the drain where
they are, and the run reports how far it got; a check that starts gets what is left of
the budget, and at least five minutes (at 50,000 tenants its two full scans of the moto
table take four).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio

from bench.common import (
    ROOT,
    bench_settings,
    cpu_seconds,
    dummy_credentials,
    free_port,
    load_average,
    print_machine,
    quiet_logs,
    scrape,
    wait_ready,
    worker_env,
)
from bench.throughput import start_localstack
from service.aws.clients import open_clients
from service.aws.provision import provision
from service.settings import Settings
from service.tools.emulator import Emulator
from service.tools.player import envelope_to_entry, put_entries
from tests.envelopes import envelope
from tests.helpers import Aws, Cloud
from tests.reliability.harness import (
    WorkerProcess,
    open_order_mismatches,
    queue_counts,
    reference_windows,
    window_mismatches,
)
from tests.reliability.traffic import DRINKS

OUT = ROOT / "bench" / "out"
NAME = "bench-flood"
TENANTS = 50_000
ORDERS_PER_TENANT = 1.2
BUDGET_MINUTES = 30.0
WORKERS = 2
PUTTERS = 4
PUT_BATCH = 10
REGULAR_SHARE = 0.10
OPEN_SHARE = 0.15
CANCELLED_SHARE = 0.04
TRAFFIC_SPAN_SECONDS = 2 * 3600
SAMPLE_EVERY_SECONDS = 2.0
CHECK_AT_LEAST_SECONDS = 300.0
MARKS = (25, 50, 75, 100)


@dataclass
class Flood:
    """The event set of a flood (every envelope once, in bus order) and what it holds."""

    envelopes: list[dict[str, Any]] = field(default_factory=list)
    tenants: int = 0
    orders: int = 0
    open_orders: int = 0
    cancelled: int = 0
    regulars: int = 0


def order_owners(rng: random.Random, tenants: list[str], orders: int) -> list[str]:
    """The tenant of each order: every tenant once, the orders beyond that among the
    regulars (a tenth of the tenants), shuffled."""
    regulars = rng.sample(tenants, max(1, math.ceil(len(tenants) * REGULAR_SHARE)))
    owners = list(tenants) + [rng.choice(regulars) for _ in range(orders - len(tenants))]
    rng.shuffle(owners)
    return owners


def flood_traffic(tenants: int, orders: int, *, seed: int, now: float) -> Flood:
    """``orders`` orders of ``tenants`` tenants over two hours ending an hour before
    ``now``, reproducible for a seed (times aside): submissions, completions after about a
    drink's preparation, some orders cancelled and some never ended."""
    if orders < tenants:
        raise ValueError(f"{orders} orders cannot give each of {tenants} tenants one")
    rng = random.Random(seed)
    names = [f"flood-{number:05d}" for number in range(tenants)]
    favourites = {name: rng.sample(list(DRINKS), rng.randint(2, 3)) for name in names}
    flood = Flood(tenants=tenants, orders=orders)
    flood.regulars = max(1, math.ceil(tenants * REGULAR_SHARE))
    start = now - 3600 - TRAFFIC_SPAN_SECONDS
    planned: list[tuple[int, int, dict[str, Any]]] = []

    def add(kind: Any, order_id: str, at: float, tenant: str, drink: str) -> None:
        event = envelope(kind, order_id, at=at, tenant=tenant, drink=drink, id=event_id(rng))
        planned.append((int(at), len(planned), event))

    for tenant in order_owners(rng, names, orders):
        drink = rng.choice(favourites[tenant])
        order_id = event_id(rng)
        submitted = start + rng.uniform(0, TRAFFIC_SPAN_SECONDS)
        add("submitted", order_id, submitted, tenant, drink)
        fate = rng.random()
        if fate < OPEN_SHARE:
            flood.open_orders += 1
        elif fate < OPEN_SHARE + CANCELLED_SHARE:
            flood.cancelled += 1
            add("cancelled", order_id, submitted + rng.uniform(10, 120), tenant, drink)
        else:
            wait = max(5.0, rng.gauss(DRINKS[drink], DRINKS[drink] * 0.3))
            add("completed", order_id, submitted + wait, tenant, drink)
    flood.envelopes = [event for _, _, event in sorted(planned, key=lambda item: item[:2])]
    return flood


def event_id(rng: random.Random) -> str:
    """A reproducible uuid4 (an envelope's id, an order's id)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a live process, in MB, from /proc/<pid>/status."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, kb, _ = line.split()
                values[name.rstrip(":")] = round(int(kb) / 1024, 1)
    return values


@dataclass
class Worker:
    """One ``wait-times run`` process of the flood and its /metrics port."""

    process: WorkerProcess
    port: int

    @property
    def pid(self) -> int:
        """The worker's process id (the console script execs its interpreter)."""
        return self.process.process.pid

    def figures(self) -> dict[str, float]:
        """Its RSS now and at peak, and the counters and cache sizes it exports."""
        metrics = scrape(self.port)
        return {
            **status_mb(self.pid),
            "received": metrics.get("wait_times_messages_received_total", 0.0),
            "processed": metrics.get("wait_times_messages_processed_total", 0.0),
            "tenants_cached": metrics.get("wait_times_tenants_tracked", 0.0),
            "windows_cached": metrics.get("wait_times_windows_tracked", 0.0),
        }

    def aws_calls(self) -> dict[str, float]:
        """The AWS requests it sent so far, by operation (``sqs.ReceiveMessage``)."""
        calls = {}
        for series, value in scrape(self.port).items():
            if series.startswith("wait_times_aws_calls_total{"):
                labels = dict(
                    part.split("=", 1) for part in series[series.index("{") + 1 : -1].split(",")
                )
                name = f"{labels['service'].strip(chr(34))}.{labels['operation'].strip(chr(34))}"
                calls[name] = value
        return calls


async def start_workers(settings: Settings) -> list[Worker]:
    """``WORKERS`` real ``wait-times run`` processes on the flood's queue, once ready."""
    workers = []
    for _ in range(WORKERS):
        port = free_port()
        env = worker_env(settings, WAIT_TIMES_METRICS_PORT=str(port))
        workers.append(Worker(WorkerProcess(env), port))
    for worker in workers:
        await wait_ready(worker.port, worker.process.process)  # type: ignore[arg-type]
    return workers


def batches(entries: list[Any]) -> Iterator[list[Any]]:
    """The PutEvents batches, in bus order."""
    for start in range(0, len(entries), PUT_BATCH):
        yield entries[start : start + PUT_BATCH]


@dataclass
class Progress:
    """How far the flood got, shared by the putters, the sampler and the report."""

    events: int
    put: int = 0
    put_seconds: float | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    marks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def processed(self) -> float:
        """Messages the workers applied, in the latest sample."""
        return self.samples[-1]["processed"] if self.samples else 0.0


async def put_all(aws: Aws, entries: list[Any], progress: Progress, deadline: float) -> None:
    """Put ``entries`` in tens with ``PUTTERS`` concurrent putters; stops at the deadline."""
    pending = batches(entries)
    started = time.perf_counter()

    async def putter() -> None:
        for batch in pending:
            if time.monotonic() > deadline:
                return
            accepted = await put_entries(aws.clients.events, batch)
            progress.put += accepted

    async with anyio.create_task_group() as group:
        for _ in range(PUTTERS):
            group.start_soon(putter)
    progress.put_seconds = time.perf_counter() - started


async def sample(workers: list[Worker], progress: Progress, started: float) -> dict[str, Any]:
    """One sample of both workers (RSS, counters, caches), recorded in ``progress``."""
    figures = [await anyio.to_thread.run_sync(worker.figures) for worker in workers]
    row = {
        "s": round(time.perf_counter() - started, 1),
        "put": progress.put,
        "processed": sum(f["processed"] for f in figures),
        "received": sum(f["received"] for f in figures),
        "workers": figures,
    }
    progress.samples.append(row)
    return row


async def sample_marks(workers: list[Worker], progress: Progress, started: float) -> None:
    """Sample every ``SAMPLE_EVERY_SECONDS``; keep the first sample past each 25% of the
    traffic as that mark's (until cancelled)."""
    while True:
        row = await sample(workers, progress, started)
        for mark in MARKS[:-1]:
            if str(mark) not in progress.marks and row["processed"] >= progress.events * mark / 100:
                progress.marks[str(mark)] = row
                print(f"  {mark}% processed at {row['s']}s: {rss_line(row)}", flush=True)
        await anyio.sleep(SAMPLE_EVERY_SECONDS)


def rss_line(row: dict[str, Any]) -> str:
    """Both workers' RSS and caches in one sample, for the console."""
    return ", ".join(
        f"worker {n}: RSS {w['VmRSS']} MB (peak {w['VmHWM']}), {int(w['tenants_cached']):,} "
        f"tenants, {int(w['windows_cached']):,} windows cached"
        for n, w in enumerate(row["workers"])
    )


async def wait_drained(
    aws: Aws, workers: list[Worker], progress: Progress, started: float, deadline: float
) -> bool:
    """Until the queue is empty, nothing is in flight and both workers' counters stood
    still over two samples; False if the deadline came first."""
    still = 0
    previous: tuple[float, float] | None = None
    while time.monotonic() < deadline:
        if await queue_counts(aws) == (0, 0):
            row = await sample(workers, progress, started)
            counters = (row["received"], row["processed"])
            still = still + 1 if counters == previous else 0
            previous = counters
            if still >= 2:
                return True
        await anyio.sleep(SAMPLE_EVERY_SECONDS)
    return False


async def check(aws: Aws, flood: Flood, settings: Settings) -> dict[str, Any]:
    """The DLQ's depth and the reference's verdict on every key and every tenant."""
    dead, dead_in_flight = await queue_counts(aws, aws.resources.dlq_url)
    started = time.perf_counter()
    expected = reference_windows(flood.envelopes, settings)
    reference_s = time.perf_counter() - started
    wrong_windows = await window_mismatches(aws, expected)
    windows_s = time.perf_counter() - started - reference_s
    open_checked, wrong_tenants = await open_order_mismatches(aws, flood.envelopes, settings)
    return {
        "dlq_messages": dead + dead_in_flight,
        "keys_checked": len(expected),
        "window_mismatches": len(wrong_windows),
        "tenants_checked": open_checked.tenants,
        "open_orders_expected": open_checked.open_orders,
        "open_order_mismatches": len(wrong_tenants),
        "first_mismatches": (wrong_windows + wrong_tenants)[:5],
        "check_s": round(time.perf_counter() - started, 1),
        "reference_windows_s": round(reference_s, 1),
        "windows_scan_s": round(windows_s, 1),
    }


def cpu_figures(workers: list[Worker], emulators: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each worker and each emulator process."""
    figures = {f"worker_{n}": cpu_seconds(w.pid) for n, w in enumerate(workers)}
    figures.update({name: cpu_seconds(pid) for name, pid in emulators.items()})
    return {name: round(seconds, 1) for name, seconds in figures.items()}


def total_calls(workers: list[Worker]) -> dict[str, int]:
    """The AWS requests both workers sent, by operation, most first."""
    calls: dict[str, float] = {}
    for worker in workers:
        for name, value in worker.aws_calls().items():
            calls[name] = calls.get(name, 0.0) + value
    return {name: int(value) for name, value in sorted(calls.items(), key=lambda kv: -kv[1])}


async def flood_run(
    aws: Aws, flood: Flood, emulators: dict[str, int], deadline: float
) -> dict[str, Any]:
    """Start the workers, put the flood, wait for the drain, measure and check."""
    settings = aws.settings
    entries = [envelope_to_entry(e, settings.event_bus) for e in flood.envelopes]
    workers = await start_workers(settings)
    progress = Progress(events=len(entries))
    result: dict[str, Any] = {"finished": False}
    try:
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            group.start_soon(sample_marks, workers, progress, started)
            await put_all(aws, entries, progress, deadline)
            print(f"  put {progress.put:,} events in {progress.put_seconds:.1f}s", flush=True)
            drained = await wait_drained(aws, workers, progress, started, deadline)
            group.cancel_scope.cancel()
        wall = time.perf_counter() - started
        final = progress.samples[-1]
        progress.marks["100"] = final
        result.update(
            finished=drained and progress.put == len(entries),
            stopped="" if drained else "deadline passed before the queue drained",
            events=len(entries),
            events_put=progress.put,
            events_processed=int(final["processed"]),
            queue_left=list(await queue_counts(aws)),
            wall_s=round(wall, 1),
            events_per_s=round(final["processed"] / wall, 1),
            put_s=round(progress.put_seconds or 0.0, 1),
            put_events_per_s=round(progress.put / (progress.put_seconds or math.inf), 1),
            peak_rss_mb=[w["VmHWM"] for w in final["workers"]],
            rss_mb_at={
                mark: [w["VmRSS"] for w in row["workers"]]
                for mark, row in sorted(progress.marks.items(), key=lambda kv: int(kv[0]))
            },
            caches_at_end=[
                {"tenants": int(w["tenants_cached"]), "windows": int(w["windows_cached"])}
                for w in final["workers"]
            ],
            processed_per_worker=[int(w["processed"]) for w in final["workers"]],
            cpu_s=cpu_figures(workers, emulators),
            aws_calls=total_calls(workers),
            load_average=round(load_average(), 2),
            samples=[
                {
                    "s": row["s"],
                    "put": row["put"],
                    "processed": int(row["processed"]),
                    "rss_mb": [w["VmRSS"] for w in row["workers"]],
                }
                for row in progress.samples
            ],
        )
        print(f"  end: {rss_line(final)}", flush=True)
        if not result["finished"]:
            return result
        with anyio.move_on_after(max(CHECK_AT_LEAST_SECONDS, deadline - time.monotonic())) as scope:
            result["check"] = await check(aws, flood, settings)
        if scope.cancelled_caught:
            result["check"] = {"stopped": "deadline passed during the reference check"}
        return result
    finally:
        for worker in workers:
            worker.process.terminate()
        for worker in workers:
            with anyio.move_on_after(30):
                while worker.process.alive():  # noqa: ASYNC110 - a child process, no event
                    await anyio.sleep(0.2)
            if not worker.process.alive() and worker.process.process.returncode:
                result.setdefault("worker_exits", []).append(worker.process.process.returncode)
            worker.process.close()


async def measure(
    report: dict[str, Any], tenants: int, orders: int, budget_minutes: float, **overrides: Any
) -> None:
    """Emulators up, resources provisioned, the flood run; figures into ``report["flood"]``."""
    dummy_credentials()
    began = time.perf_counter()
    deadline = time.monotonic() + budget_minutes * 60
    flood = flood_traffic(tenants, orders, seed=20, now=time.time())
    print(
        f"flood: {flood.tenants:,} tenants ({flood.regulars:,} regulars), {flood.orders:,} "
        f"orders ({flood.open_orders:,} left open, {flood.cancelled:,} cancelled), "
        f"{len(flood.envelopes):,} events, {WORKERS} workers, budget {budget_minutes:g} min",
        flush=True,
    )
    with Emulator() as moto:
        localstack = start_localstack()
        try:
            cloud = Cloud("localstack", moto, localstack)
            settings = bench_settings(
                cloud.url,
                NAME,
                dynamodb_endpoint_url=moto.url,
                receive_wait_seconds=20,
                **overrides,
            )
            emulators = {"moto": moto.server_pid or 0, "localstack": localstack.server_pid or 0}
            async with AsyncExitStack() as stack:
                clients = await open_clients(settings, stack)
                resources = await provision(settings, clients)
                aws = Aws(settings, clients, resources, cloud)
                result = await flood_run(aws, flood, emulators, deadline)
        finally:
            localstack.stop()
    report["flood"] = {
        "tenants": flood.tenants,
        "orders": flood.orders,
        "regulars": flood.regulars,
        "left_open": flood.open_orders,
        "cancelled": flood.cancelled,
        "workers": WORKERS,
        "putters": PUTTERS,
        "max_tenants_in_memory": settings.max_tenants_in_memory,
        "max_windows_in_memory": settings.max_windows_in_memory,
        "budget_minutes": budget_minutes,
        **result,
        "total_s": round(time.perf_counter() - began, 1),
    }
    print_summary(report["flood"])


def print_summary(figures: dict[str, Any]) -> None:
    """The flood's headline figures, for the console."""
    check_figures = figures.get("check", {})
    print(
        f"  {'finished' if figures['finished'] else 'NOT finished: ' + figures['stopped']}; "
        f"{figures['events_processed']:,}/{figures['events']:,} events in {figures['wall_s']}s "
        f"= {figures['events_per_s']} events/s end to end; put rate "
        f"{figures['put_events_per_s']} events/s; peak RSS {figures['peak_rss_mb']} MB; RSS at "
        f"25/50/75/100%: {figures['rss_mb_at']}"
    )
    print(f"  check: {check_figures}")
    print(f"  CPU s: {figures['cpu_s']}; AWS calls: {figures['aws_calls']}")


def run(
    report: dict[str, Any],
    tenants: int = TENANTS,
    orders: int | None = None,
    budget_minutes: float = BUDGET_MINUTES,
    **overrides: Any,
) -> None:
    """Run the flood and fill ``report["flood"]`` (synchronous; starts its own event loop)."""
    quiet_logs()
    report.setdefault("machine", print_machine())
    chosen = orders if orders is not None else round(tenants * ORDERS_PER_TENANT)
    anyio.run(lambda: measure(report, tenants, chosen, budget_minutes, **overrides))


def arguments(argv: list[str]) -> argparse.Namespace:
    """``--tenants``, ``--orders``, ``--budget-minutes`` and the workers' two cache sizes."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.flood", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tenants", type=int, default=TENANTS, help="distinct tenants (50,000)")
    parser.add_argument(
        "--orders", type=int, default=None, help=f"orders (default {ORDERS_PER_TENANT} a tenant)"
    )
    parser.add_argument(
        "--budget-minutes", type=float, default=BUDGET_MINUTES, help="deadline of the run (30)"
    )
    parser.add_argument(
        "--max-tenants-in-memory",
        type=int,
        default=None,
        help="each worker's tenant cache (default: the service's, 50,000)",
    )
    parser.add_argument(
        "--max-windows-in-memory",
        type=int,
        default=None,
        help="each worker's window cache (default: the service's, 100,000)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = arguments(sys.argv[1:])
    cache = {
        name: getattr(options, name)
        for name in ("max_tenants_in_memory", "max_windows_in_memory")
        if getattr(options, name) is not None
    }
    results: dict[str, Any] = {}
    run(results, options.tenants, options.orders, options.budget_minutes, **cache)
    OUT.mkdir(exist_ok=True)
    capped = "".join(f"-{name.split('_')[1]}{value}" for name, value in cache.items())
    written = OUT / f"flood-{options.tenants}{capped}.json"
    written.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results["flood"].items() if k != "samples"}, indent=2))
    print(f"written to {written}")
