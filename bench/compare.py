"""Old against new in one run: the same bench part on another commit and on this tree.

Run: ``python -m bench.compare REV [ROUNDS] [PART]`` (PART: a part's module, such as
``calls``, or words of its name; all by default). REV is checked out into a temporary git
worktree (nothing here changes) and the bench modules of CARRIED copied into it; then,
ROUNDS times, each part of PARTS (calls per completed order at 1,000 orders of history and
at issue 20's 400 orders, replay and `replay --estimates` against parse time on the clean
and messy streams of 300,000 events, latency over the
forwarder, peak RSS at issue 20's scale, a worker's CPU per consumed event from ``bench
throughput`` on moto) runs on REV and on this tree, alternating which
goes first, each in a fresh process with this tree's virtual environment. Two separate runs of ``bench cost`` vary by
more than the change being measured (flush sizes follow timing), so only ratios taken in
the same run, on the same machine, mean anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT

PARTS = {
    # part, its arguments, the JSON key read from its report (``key#n``: its n-th value,
    # from 0), the target for new/old
    "calls per completed order": (
        "bench.cost",
        ["1000"],
        "service_calls_per_completed_order",
        1.10,
    ),
    "replay / parse time": ("bench.core", ["300000"], "ratio", None),
    "replay / parse time, messy": ("bench.core", ["300000"], "ratio#1", None),
    "replay --estimates / parse time, clean, first 20,000 lines": (
        "bench.core",
        ["300000"],
        "ratio#2",
        None,
    ),
    "replay --estimates / parse time, messy, first 20,000 lines": (
        "bench.core",
        ["300000"],
        "ratio#3",
        None,
    ),
    "calls per completed order, 400 orders at once (issue 20)": (
        "bench.calls",
        [],
        "calls_per_completed_order#0",
        None,
    ),
    "calls per completed order, 400 orders at 20 events/s": (
        "bench.calls",
        [],
        "calls_per_completed_order#1",
        None,
    ),
    "latency p50, completion -> average, over the forwarder": (
        "bench.latency",
        ["200"],
        "worker_over_forwarder_p50",
        None,
    ),
    "peak RSS (MB) at issue 20's memory scale": ("bench.memory", [], "loaded_worker_peak_mb", None),
    "worker CPU per consumed event (us), 1 worker on moto, start-up excluded": (
        "bench.throughput",
        ["1000", "moto"],
        "worker_cpu_us_per_consumed_event",
        1.05,
    ),
}
# Bench modules newer than some trees: copied into the old tree when it lacks them or
# holds an older version (they only use what every version of the service has; settings
# an older service does not know, such as the batch window, are ignored by it).
CARRIED = (
    "bench/baseline.py",
    "bench/core.py",
    "bench/calls.py",
    "bench/messy.py",
    "bench/latency.py",
    "bench/memory.py",
    "bench/throughput.py",
)


def run_module(tree: Path, module: str, args: list[str]) -> str:
    """One run of a bench part in ``tree``; what it printed."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout


def value_of(printed: str, key: str, where: str) -> float:
    """The value of ``key`` (``name#n``: its n-th occurrence) in a part's JSON report."""
    name, _, index = key.partition("#")
    values = [float(v) for v in re.findall(rf'"{name}": ([0-9.]+)', printed)]
    if len(values) <= int(index or 0):
        raise SystemExit(f"{where} printed no {key!r}:\n{printed[-2000:]}")
    return values[int(index or 0)]


def carry(old: Path) -> None:
    """The bench modules of ``CARRIED`` copied into the old tree, so both run the same."""
    for path in CARRIED:
        shutil.copyfile(ROOT / path, old / path)


GIT = shutil.which("git") or "git"


def main() -> int:
    rev = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    only = sys.argv[3] if len(sys.argv) > 3 else ""
    parts = {name: part for name, part in PARTS.items() if only in part[0] or only in name}
    with tempfile.TemporaryDirectory() as folder:
        old = Path(folder) / "old"
        subprocess.run(
            [GIT, "worktree", "add", "--detach", "-q", str(old), rev], cwd=ROOT, check=True
        )
        carry(old)
        try:
            report: dict[str, dict[str, list[float]]] = {
                name: {"old": [], "new": []} for name in parts
            }
            # Each module runs once per tree and round; every figure read from that run.
            modules = {(module, tuple(args)) for module, args, _, _ in parts.values()}
            for module, args in sorted(modules):
                for round_ in range(rounds):
                    order = [("old", old), ("new", ROOT)]
                    for label, tree in order if round_ % 2 == 0 else order[::-1]:
                        printed = run_module(tree, module, list(args))
                        for name, (m, a, key, _) in parts.items():
                            if (m, tuple(a)) == (module, args):
                                value = value_of(printed, key, f"{module} in {tree}")
                                report[name][label].append(value)
                                print(f"  {name}: {label} round {round_ + 1}: {value}", flush=True)
        finally:
            subprocess.run([GIT, "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    print(f"\nold = {rev}, new = this tree, {rounds} rounds each, alternating")
    summary = {}
    for name, seen in report.items():
        # Medians: one round disturbed by a neighbour on a shared machine moves a mean.
        old_median, new_median = statistics.median(seen["old"]), statistics.median(seen["new"])
        target = PARTS[name][3]
        ratio = new_median / old_median
        verdict = (
            ""
            if target is None
            else f" (target <= {target}: {'met' if ratio <= target else 'MISSED'})"
        )
        print(
            f"  {name}: median old {old_median:.3f}, new {new_median:.3f}, "
            f"new/old {ratio:.3f}{verdict}"
        )
        summary[name] = {"old": seen["old"], "new": seen["new"], "new_over_old": round(ratio, 3)}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
