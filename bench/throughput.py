"""5. Throughput of 1 and 2 worker processes on one queue, on moto and on LocalStack.

Entry point: ``run(report)`` is a plain (synchronous) function; it starts its own event loop
with ``anyio.run``, prints as it goes and fills ``report["throughput"]``. Run alone:
``python -m bench.throughput [EVENTS]``.

``python -m bench.throughput EVENTS SETUPS`` (SETUPS: comma-separated, ``moto`` or
``localstack``) measures only those. The report's ``worker_cpu_us_per_consumed_event`` is
one worker process's CPU per consumed event, its start-up excluded, on the first setup
measured: the figure ``bench.compare`` holds old against new.

Two setups in the same run: everything on moto, and SQS and EventBridge on LocalStack with
DynamoDB on moto (``Settings.dynamodb_endpoint_url``; the workers get
``AWS_ENDPOINT_URL_DYNAMODB``). moto serves every request in one GIL-bound process and is
the bottleneck; LocalStack shows what the worker does when the emulator is not.

For each setup and worker count N, on reset and freshly provisioned emulators: seeded
realistic traffic is put on the bus until EVENTS (default 1,000) order events sit on the
queue (only the detail-types the rule routes are put; the rule would drop the others
anyway), then N ``wait-times run --burst`` processes start together and the clock runs
until all have exited (``--burst``: each exits once the queue is drained and nothing is in
flight).

Where the time goes: CPU seconds of each emulator process (utime + stime from
/proc/<pid>/stat, before and after) and of each worker (rusage from wait4), wall time,
the emulators' share of the CPU used, and how busy the machine's cores were. A worker's
start-up (imports, clients, the resource check) is measured on its own on an empty queue
and reported beside the figures, since ``--burst`` wall time includes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from bench.common import (
    LOAD_BARISTAS,
    LOAD_CAP,
    bench_settings,
    cpu_seconds,
    dummy_credentials,
    load_average,
    machine_cpu_seconds,
    peak_rss_mb,
    peak_wrapped,
    print_machine,
    quiet_logs,
    spawn,
    wait_times_command,
    worker_env,
)
from service.aws.clients import AwsClients, open_clients
from service.aws.provision import provision

try:
    from service.core.consumed import role_of
except ImportError:  # an older tree (bench.compare carries this module into it)
    from service.core.events import role_of  # type: ignore[import-untyped,no-redef]
from service.settings import Settings
from service.tools.emulator import Emulator
from service.tools.player import TrafficGenerator, put_entries, to_entry
from testing.localstack import LocalStack

SETUPS = ("moto", "localstack")
WORKER_COUNTS = (1, 2)
# (consumer, processes) in the order run on each setup; 0 processes: one on an empty
# queue, for its start-up. The forwarder (bench/forwarder.py) is the CPU baseline.
RUNS = (
    ("worker", 0),
    *(("worker", n) for n in WORKER_COUNTS),
    ("forwarder", 0),
    ("forwarder", 1),
)
QUEUE = "bench-throughput"


def order_entries(bus: str, count: int) -> list[Any]:
    """The first ``count`` consumed events of seeded traffic (several tenants, all fates)."""
    generator = TrafficGenerator(
        seed=5, rate=2.0, start=time.time() - 7200, baristas=LOAD_BARISTAS, cap=LOAD_CAP
    )
    entries = []
    for event in generator.events(None):
        if role_of(event.detail_type) is None:
            continue
        entries.append(to_entry(event, bus))
        if len(entries) >= count:
            return entries
    return entries


async def queue_counts(clients: AwsClients, url: str) -> tuple[int, int]:
    attributes = (
        await clients.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def _log_times(path: Path, event: str) -> list[float]:
    """Epoch times of a structlog event in a worker's JSON log."""
    times = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            times.append(datetime.fromisoformat(record["timestamp"]).timestamp())
    return times


FORWARDER = [sys.executable, "-m", "bench.forwarder"]


async def run_workers(
    settings: Settings,
    count: int,
    emulator_pids: dict[str, int],
    logs: Path,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Start ``count`` burst workers (or ``command``: the forwarder) together; wall and CPU
    until all have exited."""
    # debug: the store logs each lost conditional window write (window_conflict).
    env = worker_env(settings, WAIT_TIMES_LOG_LEVEL="debug")
    emulators_before = {name: cpu_seconds(pid) for name, pid in emulator_pids.items()}
    machine_before = machine_cpu_seconds()
    bench_before = time.process_time()
    spawned = time.time()
    started = time.perf_counter()
    processes = []
    for index in range(count):
        log_path = logs / f"worker-{count}-{index}.jsonl"
        with log_path.open("wb") as log:
            processes.append(
                (
                    spawn(
                        peak_wrapped(command or wait_times_command("run", "--burst")),
                        env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    log_path,
                )
            )
    workers_cpu = 0.0
    peak_mb = 0.0
    codes = []
    for process, log_path in processes:
        # The wrapper's rusage includes the worker it waited for (CPU of both; the
        # wrapper's own is ~0.03 s); the worker's peak RSS is on the wrapper's stderr.
        _, status, usage = await anyio.to_thread.run_sync(os.wait4, process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        codes.append(process.returncode)
        workers_cpu += usage.ru_utime + usage.ru_stime
        peak_mb = max(peak_mb, peak_rss_mb(log_path.read_text()))
    wall = time.perf_counter() - started
    emulators_cpu = {
        name: cpu_seconds(pid) - emulators_before[name] for name, pid in emulator_pids.items()
    }
    emulator_cpu = sum(emulators_cpu.values())
    machine_cpu = machine_cpu_seconds() - machine_before
    bench_cpu = time.process_time() - bench_before
    first_ready = min(t for _, path in processes for t in _log_times(path, "worker_started"))
    last_stop = max(t for _, path in processes for t in _log_times(path, "worker_stopped"))
    conflicts = sum(len(_log_times(path, "window_conflict")) for _, path in processes)
    if any(codes):
        raise RuntimeError(f"burst workers exited with {codes}; logs in {logs}")
    return {
        "machine_cpu_s": machine_cpu,
        "others_cpu_s": max(0.0, machine_cpu - emulator_cpu - workers_cpu - bench_cpu),
        "window_conflicts": conflicts,
        "wall_s": wall,
        "startup_s": first_ready - spawned,
        "processing_s": last_stop - first_ready,
        "emulator_cpu_s": emulator_cpu,
        "emulators_cpu_s": emulators_cpu,
        "workers_cpu_s": workers_cpu,
        "worker_peak_rss_mb": peak_mb,
    }


async def measure(report: dict[str, Any], events: int, setups: tuple[str, ...] = SETUPS) -> None:
    dummy_credentials()
    nproc = os.cpu_count() or 1
    print(
        f"throughput: {events:,} order events pre-loaded, then N `wait-times run --burst` "
        f"processes on one queue ({nproc} CPUs on this machine), on moto and on LocalStack "
        "(SQS, EventBridge; DynamoDB on moto)"
    )
    rows: list[dict[str, Any]] = []
    startups: dict[str, Any] = {}
    for setup in setups:
        rows.extend(await measure_setup(setup, events, startups))
    print_table(rows)
    one_worker = next(r for r in rows if r["consumer"] == "worker" and r["workers"] == 1)
    report["throughput"] = {
        "events": events,
        "worker_cpu_us_per_consumed_event": one_worker["workers_cpu_us_per_event_excl_startup"],
        "nproc": nproc,
        "worker_startup": startups,
        "runs": rows,
        "note": (
            "moto serves every request in one Python process (GIL-bound; DynamoDB requests "
            "serialized by service/tools/emulator.py), so it saturates about one core; on "
            "LocalStack only DynamoDB is moto's"
        ),
    }


def start_localstack() -> LocalStack:
    """The pinned LocalStack (installed on first use by dev.py), SQS and EventBridge only."""
    import dev  # noqa: PLC0415 - the repository's dev.py owns the .tools installs

    python = dev.ensure_localstack()
    localstack = LocalStack(
        Path(python), dev.ROOT / ".tools" / "localstack-run", services=("sqs", "events")
    )
    localstack.start()
    return localstack


async def measure_setup(setup: str, events: int, startups: dict[str, Any]) -> list[dict[str, Any]]:
    """Every worker count on one setup (its emulators started here, stopped at the end)."""
    moto = Emulator()
    moto.start()
    localstack = start_localstack() if setup == "localstack" else None
    assert moto.server_pid is not None
    pids = {"moto": moto.server_pid}
    if localstack is not None:
        assert localstack.server_pid is not None
        pids["localstack"] = localstack.server_pid
    rows: list[dict[str, Any]] = []
    nproc = os.cpu_count() or 1
    try:
        settings = bench_settings(
            localstack.url if localstack else moto.url,
            QUEUE,
            receive_wait_seconds=20,
            dynamodb_endpoint_url=moto.url if localstack else None,
        )
        entries = order_entries(settings.event_bus, events)
        with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
            logs = Path(tmp)
            for consumer, count in RUNS:
                command = FORWARDER if consumer == "forwarder" else None
                moto.reset()
                if localstack is not None:
                    localstack.reset()
                async with AsyncExitStack() as stack:
                    clients = await open_clients(settings, stack)
                    provisioned = await provision(settings, clients)
                    load_started = time.perf_counter()
                    await put_entries(clients.events, entries if count else [])
                    load_s = time.perf_counter() - load_started
                    queued, _ = await queue_counts(clients, provisioned.queue_url)
                    if queued != (len(entries) if count else 0):
                        raise RuntimeError(f"{queued} messages queued, expected {len(entries)}")
                    figures = await run_workers(settings, max(count, 1), pids, logs, command)
                    left = await queue_counts(clients, provisioned.queue_url)
                    dead, _ = await queue_counts(clients, provisioned.dlq_url)
                if count == 0:
                    startup = {
                        "wall_s": round(figures["wall_s"], 2),
                        "load_average": round(load_average(), 2),
                        "to_ready_s": round(figures["startup_s"], 2),
                        "worker_cpu_s": round(figures["workers_cpu_s"], 2),
                    }
                    startups[setup if consumer == "worker" else f"{setup}, forwarder"] = startup
                    print(
                        f"  [{setup}] start-up of one burst {consumer} on an empty queue: ready after "
                        f"{startup['to_ready_s']}s, exited after {startup['wall_s']}s, "
                        f"{startup['worker_cpu_s']} CPU s"
                    )
                    continue
                if left != (0, 0) or dead:
                    raise RuntimeError(f"queue not drained: {left}, {dead} in the DLQ")
                cpu = figures["emulator_cpu_s"] + figures["workers_cpu_s"]
                steady_workers_cpu = figures["workers_cpu_s"] - count * startup["worker_cpu_s"]
                row = {
                    "emulator": setup,
                    "consumer": consumer,
                    "workers": count,
                    "events": queued,
                    "load_s": round(load_s, 2),
                    "wall_s": round(figures["wall_s"], 2),
                    "events_per_s": round(queued / figures["wall_s"], 1),
                    "processing_s": round(figures["processing_s"], 2),
                    "events_per_s_after_startup": round(queued / figures["processing_s"], 1),
                    "emulator_cpu_s": round(figures["emulator_cpu_s"], 2),
                    "emulator_cpu_s_by_process": {
                        name: round(value, 2) for name, value in figures["emulators_cpu_s"].items()
                    },
                    "workers_cpu_s": round(figures["workers_cpu_s"], 2),
                    "emulator_share": round(figures["emulator_cpu_s"] / cpu, 3),
                    "emulator_cpu_ms_per_event": round(figures["emulator_cpu_s"] / queued * 1e3, 2),
                    "workers_cpu_ms_per_event": round(figures["workers_cpu_s"] / queued * 1e3, 2),
                    "workers_cpu_ms_per_event_excl_startup": round(
                        steady_workers_cpu / queued * 1e3, 2
                    ),
                    "workers_cpu_us_per_event_excl_startup": round(
                        steady_workers_cpu / queued * 1e6, 1
                    ),
                    "emulator_bound_ceiling_events_per_s": round(
                        queued / figures["emulator_cpu_s"], 1
                    ),
                    "window_conflicts": figures["window_conflicts"],
                    "cores_busy": round(cpu / figures["wall_s"], 2),
                    "machine_cores_busy": round(figures["machine_cpu_s"] / figures["wall_s"], 2),
                    "other_processes_cores": round(figures["others_cpu_s"] / figures["wall_s"], 2),
                    "load_average_after": round(load_average(), 2),
                    "worker_peak_rss_mb": round(figures["worker_peak_rss_mb"], 1),
                }
                rows.append(row)
                by_process = ", ".join(
                    f"{name} {value}s" for name, value in row["emulator_cpu_s_by_process"].items()
                )
                print(
                    f"  [{setup}] {count} {consumer}(s): {queued} events in {row['wall_s']}s wall = "
                    f"{row['events_per_s']} events/s ({row['events_per_s_after_startup']}/s "
                    f"between the first worker ready and the last exit); CPU: emulator "
                    f"{row['emulator_cpu_s']}s ({by_process}), workers {row['workers_cpu_s']}s "
                    f"-> emulator share {row['emulator_share']:.0%}; per event: emulator "
                    f"{row['emulator_cpu_ms_per_event']} ms, workers "
                    f"{row['workers_cpu_ms_per_event_excl_startup']} ms (start-up excluded); "
                    f"{row['window_conflicts']} window conflicts; cores busy: ours "
                    f"{row['cores_busy']}, other processes on the machine "
                    f"{row['other_processes_cores']} of {nproc}",
                    flush=True,
                )
    finally:
        if localstack is not None:
            localstack.stop()
        moto.stop()
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The side-by-side table docs/performance.md shows."""
    print(
        "\n| emulator | consumer | processes | events/s | events/s after start-up | CPU per event "
        "(start-up excluded) | emulator CPU per event | emulator share of CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        by_process = " + ".join(
            f"{name} {value}s" for name, value in row["emulator_cpu_s_by_process"].items()
        )
        print(
            f"| {row['emulator']} | {row['consumer']} | {row['workers']} | {row['events_per_s']} | "
            f"{row['events_per_s_after_startup']} | "
            f"{row['workers_cpu_ms_per_event_excl_startup']} ms | "
            f"{row['emulator_cpu_ms_per_event']} ms ({by_process}) | "
            f"{row['emulator_share']:.0%} |"
        )


def run(report: dict[str, Any], events: int = 1000, setups: tuple[str, ...] = SETUPS) -> None:
    """Measure and fill ``report["throughput"]`` (synchronous; starts its own event loop)."""
    quiet_logs()
    report.setdefault("machine", print_machine())
    anyio.run(measure, report, events, setups)


if __name__ == "__main__":
    results: dict[str, Any] = {}
    run(
        results,
        int(sys.argv[1]) if len(sys.argv) > 1 else 1000,
        tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else SETUPS,
    )
    print(json.dumps(results, indent=2))
