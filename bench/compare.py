"""Old against new in one run: the same bench part on another commit and on this tree.

Run: ``python -m bench.compare REV [ROUNDS] [cost|core]``. REV is checked out into a temporary git
worktree (nothing here changes); then, ROUNDS times, ``bench.cost`` (calls per completed
order at 1,000 orders of history) and ``bench.core`` (replay against parse time on 300,000
events) run on REV and on this tree, alternating which goes first, each in a fresh
process with this tree's virtual environment. Two separate runs of ``bench cost`` vary by
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
    # part, its arguments, the JSON key read from its report, the target for new/old
    "calls per completed order": (
        "bench.cost",
        ["1000"],
        "service_calls_per_completed_order",
        1.10,
    ),
    "replay / parse time": ("bench.core", ["300000"], "ratio", None),
}


def run_part(tree: Path, module: str, args: list[str], key: str) -> float:
    """One run of a bench part in ``tree``; the value of ``key`` in its JSON report."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    values = [float(v) for v in re.findall(rf'"{key}": ([0-9.]+)', result.stdout)]
    if not values:
        raise SystemExit(f"{module} in {tree} printed no {key!r}:\n{result.stdout[-2000:]}")
    return values[0]


GIT = shutil.which("git") or "git"


def main() -> int:
    rev = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    only = sys.argv[3] if len(sys.argv) > 3 else ""
    parts = {name: part for name, part in PARTS.items() if only in part[0]}
    with tempfile.TemporaryDirectory() as folder:
        old = Path(folder) / "old"
        subprocess.run(
            [GIT, "worktree", "add", "--detach", "-q", str(old), rev], cwd=ROOT, check=True
        )
        try:
            report: dict[str, dict[str, list[float]]] = {}
            for name, (module, args, key, _) in parts.items():
                seen: dict[str, list[float]] = {"old": [], "new": []}
                for round_ in range(rounds):
                    order = [("old", old), ("new", ROOT)]
                    for label, tree in order if round_ % 2 == 0 else order[::-1]:
                        value = run_part(tree, module, args, key)
                        seen[label].append(value)
                        print(f"  {name}: {label} round {round_ + 1}: {value}", flush=True)
                report[name] = seen
        finally:
            subprocess.run([GIT, "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    print(f"\nold = {rev}, new = this tree, {rounds} rounds each, alternating")
    summary = {}
    for name, seen in report.items():
        old_mean, new_mean = statistics.mean(seen["old"]), statistics.mean(seen["new"])
        target = PARTS[name][3]
        ratio = new_mean / old_mean
        verdict = (
            ""
            if target is None
            else f" (target <= {target}: {'met' if ratio <= target else 'MISSED'})"
        )
        print(f"  {name}: old {old_mean:.3f}, new {new_mean:.3f}, new/old {ratio:.3f}{verdict}")
        summary[name] = {"old": seen["old"], "new": seen["new"], "new_over_old": round(ratio, 3)}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
