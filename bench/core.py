"""1. Core throughput: ``replay`` over 1,000,000 generated events vs merely parsing them.

Run alone: ``python -m bench.core [EVENTS]``. The file is generated once (seeded, so every
run reads the same bytes) under bench/out/. Both timings read the same file the same way
(line by line, in one process, best of three), so the ratio isolates the work replay does
beyond JSON parsing with the fastest parser installed (orjson).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import LOAD_BARISTAS, LOAD_CAP
from service.tools.player import TrafficGenerator
from service.tools.replay import read_events, replay
from tests.envelopes import envelope

OUT = Path(__file__).resolve().parent / "out"
TENANTS = ("NYC", "LDN", "SYD", "BER", "TYO", "SFO")
TARGET_RATIO = 3.0


def generate(path: Path, events: int) -> None:
    """Seeded realistic traffic as JSON Lines of full EventBridge envelopes."""
    generator = TrafficGenerator(
        seed=42,
        rate=3.0,
        tenants=TENANTS,
        start=1_790_000_000,
        baristas=LOAD_BARISTAS,
        cap=LOAD_CAP,
    )
    written = 0
    with path.open("wb") as out:
        for event in generator.events(None):
            body = envelope(
                detail_type=event.detail_type,
                detail=event.detail,
                at=event.at,
                id=f"{written:08d}-bench",
            )
            out.write(orjson.dumps(body) + b"\n")
            written += 1
            if written >= events:
                return


def parse_only(path: Path) -> int:
    """The baseline: decode every line with orjson and do nothing else."""
    loads = orjson.loads
    count = 0
    with path.open("rb") as handle:
        for line in handle:
            loads(line)
            count += 1
    return count


def best_of(runs: int, work: Any) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def run(report: dict[str, Any], events: int = 1_000_000) -> None:
    """Measure and fill ``report["core"]``."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"events-{events}.jsonl"
    if not path.exists():
        started = time.perf_counter()
        generate(path, events)
        print(f"generated {path.name} in {time.perf_counter() - started:.1f}s")
    parse_s, count = best_of(3, lambda: parse_only(path))
    replay_s, result = best_of(3, lambda: replay(read_events(path)))
    ratio = replay_s / parse_s
    figures = {
        "events": count,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "consumed_events": count - result.ignored - sum(result.poison.values()),
        "windows": len(result.windows),
        "parse_only_s": round(parse_s, 3),
        "replay_s": round(replay_s, 3),
        "parse_events_per_s": round(count / parse_s),
        "replay_events_per_s": round(count / replay_s),
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
    }
    report["core"] = figures
    print(
        f"core: {count:,} events ({figures['file_mb']} MB, {figures['consumed_events']:,} consumed,"
        f" {len(result.windows)} windows)\n"
        f"  parse only (orjson): {parse_s:.2f}s = {figures['parse_events_per_s']:,} events/s\n"
        f"  replay:              {replay_s:.2f}s = {figures['replay_events_per_s']:,} events/s\n"
        f"  ratio replay/parse:  {ratio:.2f} (target <= {TARGET_RATIO}: "
        f"{'met' if figures['met'] else 'MISSED'})"
    )


if __name__ == "__main__":
    report: dict[str, Any] = {}
    run(report, int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
    print(json.dumps(report, indent=2))
