"""1. Core throughput: ``replay`` over 1,000,000 generated events vs merely parsing them.

Run alone: ``python -m bench.core [EVENTS]``. The files are generated once (seeded, so
every run reads the same bytes) under bench/out/: the clean stream, and a messy one made
from it (``bench.messy``: half the lines of ignored types, 10% delivered twice, delivery
jittered). Both timings read the same file the same way (line by line, in one process,
best of three), so the ratio isolates the work replay does beyond JSON parsing with the
fastest parser installed (orjson). ``replay --estimates`` (``estimate_changes`` and
``estimate_json`` to /dev/null, as the CLI) is measured on each stream's first
``ESTIMATE_LINES`` lines (docs/performance.md, "13. Replay and its backtest, leaner").
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import messy
from bench.common import LOAD_BARISTAS, LOAD_CAP
from service.tools.player import TrafficGenerator
from service.tools.replay import read_events, replay
from tests.envelopes import envelope

OUT = Path(__file__).resolve().parent / "out"
TENANTS = ("NYC", "LDN", "SYD", "BER", "TYO", "SFO")
TARGET_RATIO = 2.5
TARGET_ESTIMATES_RATIO = 3.5
ESTIMATE_LINES = 20_000


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


def measure(path: Path) -> dict[str, Any]:
    """Replay against the parse of the same file, best of three each."""
    parse_s, count = best_of(3, lambda: parse_only(path))
    replay_s, result = best_of(3, lambda: replay(read_events(path)))
    ratio = replay_s / parse_s
    return {
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


def measure_estimates(path: Path) -> dict[str, Any]:
    """``replay --estimates`` (output to /dev/null) against the parse, on the file's first
    lines, best of three each."""
    head = path.with_name(f"{path.stem}-head{ESTIMATE_LINES}.jsonl")
    with path.open("rb") as source, head.open("wb") as out:
        for number, line in enumerate(source):
            if number >= ESTIMATE_LINES:
                break
            out.write(line)
    parse_s, count = best_of(3, lambda: parse_only(head))
    estimates_s, details = best_of(3, lambda: estimates_to_null(head))
    ratio = estimates_s / parse_s
    return {
        "events": count,
        "details": details,
        "parse_only_s": round(parse_s, 4),
        "estimates_s": round(estimates_s, 3),
        "ratio": round(ratio, 1),
        "target_ratio": TARGET_ESTIMATES_RATIO,
        "met": ratio <= TARGET_ESTIMATES_RATIO,
    }


def estimates_to_null(path: Path) -> int:
    """What ``wait-times replay --estimates FILE > /dev/null`` does, start-up aside: every
    changed estimate encoded as its JSON line and written. Returns how many. On a tree
    from before ``estimate_changes`` (``bench.compare``), what its CLI did: each detail
    built as the model and dumped."""
    details = 0
    try:
        from service.tools.replay import estimate_changes  # noqa: PLC0415

        try:
            from service.core.published import estimate_json  # noqa: PLC0415
        except ImportError:  # a tree whose events were one module
            from service.core.events import estimate_json  # type: ignore[import-untyped,no-redef]  # noqa: PLC0415
    except ImportError:
        from service.tools.replay import replay_estimates  # noqa: PLC0415

        with open(os.devnull, "w", encoding="utf-8") as text:
            for detail in replay_estimates(read_events(path), wall_clock=4e9):
                text.write(detail.model_dump_json() + "\n")
                details += 1
        return details
    with open(os.devnull, "wb") as out:
        for found in estimate_changes(read_events(path), wall_clock=4e9):
            out.write(estimate_json(found.estimate, found.version) + b"\n")
            details += 1
    return details


def run(report: dict[str, Any], events: int = 1_000_000) -> None:
    """Measure and fill ``report["core"]`` (the clean stream, as before), ``core_messy``
    and ``core_estimates``."""
    OUT.mkdir(exist_ok=True)
    clean = OUT / f"events-{events}.jsonl"
    if not clean.exists():
        started = time.perf_counter()
        generate(clean, events)
        print(f"generated {clean.name} in {time.perf_counter() - started:.1f}s")
    dirty = OUT / f"messy-{events}.jsonl"
    if not dirty.exists():
        messy.generate(clean, dirty)
    report["core"] = measure(clean)
    report["core_messy"] = measure(dirty)
    report["core_estimates"] = {
        "clean": measure_estimates(clean),
        "messy": measure_estimates(dirty),
    }
    for name, part in (("clean", report["core"]), ("messy", report["core_messy"])):
        print(
            f"core, {name}: {part['events']:,} events ({part['file_mb']} MB,"
            f" {part['consumed_events']:,} consumed, {part['windows']} windows)\n"
            f"  parse only (orjson): {part['parse_only_s']:.2f}s ="
            f" {part['parse_events_per_s']:,} events/s\n"
            f"  replay:              {part['replay_s']:.2f}s ="
            f" {part['replay_events_per_s']:,} events/s\n"
            f"  ratio replay/parse:  {part['ratio']:.2f} (target <= {TARGET_RATIO}: "
            f"{'met' if part['met'] else 'MISSED'})"
        )
    for name, part in report["core_estimates"].items():
        print(
            f"core, replay --estimates, {name}, first {part['events']:,} lines:"
            f" {part['estimates_s']:.2f}s against a parse of {part['parse_only_s']:.3f}s,"
            f" ratio {part['ratio']} (target <= {TARGET_ESTIMATES_RATIO}:"
            f" {'met' if part['met'] else 'MISSED'}), {part['details']:,} details"
        )


if __name__ == "__main__":
    report: dict[str, Any] = {}
    run(report, int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
    print(json.dumps(report, indent=2))
