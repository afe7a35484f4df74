"""``python -m bench [core|calls|cost|light|latency|memory|throughput|accuracy|flood ...]``.

With no part named, every part but the long ones (``LONG``: ``flood``, the 50,000-tenant
flood with its 30-minute budget) runs; a long part runs only when named
(``python3 dev.py bench flood``; its own options: ``python -m bench.flood --help``).
``python -m bench --help`` prints this text.

Prints each figure as it is measured, then issue 20's table (``bench.table``: each figure
beside its baseline from the same run), and writes them all to bench/out/results.json, with
the machine they ran on. Nothing here asserts: the targets are reported met or missed.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from bench import table

PARTS = ("core", "calls", "cost", "light", "latency", "memory", "throughput", "accuracy", "flood")
LONG = ("flood",)
DEFAULT_PARTS = tuple(part for part in PARTS if part not in LONG)
OUT = Path(__file__).resolve().parent / "out"


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main() -> int:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        return 0
    chosen = sys.argv[1:] or list(DEFAULT_PARTS)
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        print(f"unknown part(s) {unknown}; choose from {PARTS}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"machine": machine()}
    print(f"machine: {report['machine']}")
    for part in chosen:
        module = __import__(f"bench.{part}", fromlist=["run"])
        started = time.perf_counter()
        print(f"\n== {part} ==", flush=True)
        if inspect.iscoroutinefunction(module.run):
            anyio.run(module.run, report)
        else:
            module.run(report)
        report.setdefault("seconds", {})[part] = round(time.perf_counter() - started, 1)
    report["table"] = table.rows(report)
    print("\n== issue 20's table ==\n" + table.render(report["table"]))
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {OUT / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
