"""Helpers every bench part that runs the service shares (bench.latency, bench.memory,
bench.throughput).

* the machine: ``machine``/``print_machine`` (nproc, CPU model, Python), ``load_average``,
  CPU seconds of a process (``cpu_seconds``) and of the whole machine
  (``machine_cpu_seconds``) from /proc;
* the emulator's side: ``dummy_credentials`` (moto takes any, real ones are never picked
  up), ``bench_settings`` (one part's resources, names prefixed so parts never mix);
* worker processes: ``worker_env`` (the environment of a ``wait-times`` child agreeing with
  a Settings, through ``Settings.to_environ``), ``wait_times_command``, ``spawn``,
  ``peak_wrapped``/``peak_rss_mb`` (a child's peak RSS), ``free_port``, ``scrape`` (its
  /metrics), ``wait_ready`` and ``wait_processed``;
* figures: ``percentile``, ``summary_ms``, ``envelope_time``; ``quiet_logs`` for the service
  code running in the bench process itself.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# The load benchmarks play orders per second, not a bar's evening: a bar that large (waits
# are about a drink's preparation, few give up) keeps their figures what they measured
# before the player simulated a queue. bench/accuracy.py plays real-sized bars.
LOAD_BARISTAS, LOAD_CAP = 200, 1000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    """nproc, CPU model and Python version, printed once per part."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def print_machine() -> dict[str, Any]:
    info = machine()
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}")
    return info


def dummy_credentials() -> None:
    """moto accepts any credentials; never pick up real ones."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


def quiet_logs() -> None:
    """Warnings and errors only from the service code running in this process."""
    from service.logs import configure_logging  # noqa: PLC0415

    configure_logging("console", "warning")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bench_settings(url: str, name: str, **overrides: Any) -> Settings:
    """Settings for one bench's resources on the emulator (names prefixed, so parts never mix)."""
    values: dict[str, Any] = {
        "endpoint_url": url,
        "region": "us-east-1",
        "queue_name": name,
        "table_name": name,
        "rule_name": f"{name}-orders",
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
    }
    values.update(overrides)
    return Settings(**values)


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment of a ``wait-times`` child process agreeing with ``settings``."""
    # No endpoint inherited: only those ``settings`` name (as the standard variables).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WAIT_TIMES_", "AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED"))
    }
    env.update(
        {
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        }
    )
    env.update(settings.to_environ())
    env.update(
        {
            "WAIT_TIMES_METRICS_HOST": "127.0.0.1",
            "WAIT_TIMES_LOG_FORMAT": "json",
            "WAIT_TIMES_LOG_LEVEL": "warning",
        }
    )
    env.update(extra)
    return env


def wait_times_command(*args: str) -> list[str]:
    """The console script next to this interpreter (as deployed), else ``-m service.cli``."""
    script = Path(sys.executable).with_name("wait-times")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "service.cli", *args]


def spawn(command: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[Any]:
    """A child process in the repository root (output discarded unless redirected)."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    return subprocess.Popen(command, env=env, cwd=ROOT, **kwargs)


# Runs a command and reports its peak RSS. Linux hands a child that forks (or vforks)
# and execs the parent's RSS high-water mark in ru_maxrss, so wait4 on a child of this
# (large) bench process over-reports; a small interpreter in between keeps it honest.
_PEAK_WRAPPER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.write(f"\\nPEAK_RSS_KB {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_wrapped(command: list[str]) -> list[str]:
    """``command`` run under the wrapper that prints ``PEAK_RSS_KB n`` on stderr at exit."""
    return [sys.executable, "-I", "-c", _PEAK_WRAPPER, *command]


def peak_rss_mb(stderr_text: str) -> float:
    for line in stderr_text.splitlines():
        if line.startswith("PEAK_RSS_KB "):
            return round(int(line.split()[1]) / 1024, 1)
    raise ValueError("no PEAK_RSS_KB line")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have used (busy jiffies of /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def load_average() -> float:
    """The 1-minute load average (this machine is shared: other work skews timings)."""
    return os.getloadavg()[0]


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics as {series: value} (labels kept in the name)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


async def wait_ready(port: int, process: subprocess.Popen[bytes], within: float = 60) -> None:
    """Until the worker's /readyz answers 200."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited early with {process.returncode}")
        try:
            await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{port}/readyz")
        except OSError:
            await anyio.sleep(0.1)
        else:
            return
    raise TimeoutError("worker not ready")


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
        response.read()


async def wait_processed(port: int, count: float, within: float = 300) -> None:
    """Until the worker's messages_processed counter reaches ``count``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        metrics = await anyio.to_thread.run_sync(scrape, port)
        if metrics.get("wait_times_messages_processed_total", 0) >= count:
            return
        await anyio.sleep(0.2)
    raise TimeoutError(f"worker did not process {count} messages")


def envelope_time(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p90_ms": round(percentile(values, 90) * 1000, 2),
        "p99_ms": round(percentile(values, 99) * 1000, 2),
        "min_ms": round(min(values) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def order_item(record: Any, expires_at: int) -> dict[str, Any]:
    """The whole item ``service.aws.items.order_update`` leaves for ``record`` (an
    ``OrderRecord``) where none was: the layout the service writes, for writing a history
    straight into a table (the cost and memory benchmarks; the service itself only updates)."""
    import json  # noqa: PLC0415

    from service.aws import items  # noqa: PLC0415

    def text(half: tuple[int, str, str]) -> str:
        return json.dumps(list(half), ensure_ascii=False, separators=(",", ":"))

    item: dict[str, Any] = {
        items.KEY: {"S": items.order_pk(record.order_id)},
        items.EXPIRES_AT: {"N": str(expires_at)},
    }
    if record.submissions:
        item[items.SUBMISSIONS] = {"SS": sorted(text(half) for half in record.submissions)}
    if record.completions:
        item[items.COMPLETIONS] = {"NS": sorted(str(at) for at in record.completions)}
    if record.cancelled:
        item[items.CANCELLED] = {"BOOL": True}
    if record.cancellations:
        item[items.CANCELLATIONS] = {"NS": sorted(str(at) for at in record.cancellations)}
    return item
