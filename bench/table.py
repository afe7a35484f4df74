"""Issue 20's table from one run's report: each figure beside its baseline and its target.

``rows(report)`` reads what the parts that ran put in the report (a part that did not run
gives no row) and returns one row a figure: what was measured, the baseline measured in
the same run, their ratio where the target is one, the target, and met or missed. The
driver (``python -m bench``) prints them last and writes them to ``results.json`` under
``"table"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _row(
    figure: str, value: float, baseline: str, target: float | None, unit: str = ""
) -> dict[str, Any]:
    """One figure; ``target`` None: reported beside its baseline, with no target."""
    return {
        "figure": figure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "target": target,
        "met": None if target is None else value <= target,
    }


def _replay(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for name, key in (("clean", "core"), ("messy", "core_messy")):
        if key in report:
            part = report[key]
            yield _row(
                f"replay / parse, {name}, {part['events']:,} events",
                part["ratio"],
                f"orjson parse {part['parse_only_s']} s, replay {part['replay_s']} s",
                part["target_ratio"],
                "x",
            )
    for name, part in report.get("core_estimates", {}).items():
        yield _row(
            f"replay --estimates / parse, {name}, first {part['events']:,} lines",
            part["ratio"],
            f"orjson parse {part['parse_only_s']} s, --estimates {part['estimates_s']} s",
            part["target_ratio"],
            "x",
        )


def _calls(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "calls" not in report:
        return
    part = report["calls"]
    original = part["original_design"]["calls_per_completed_order"]
    for name, case in part["cases"].items():
        yield _row(
            f"calls per completed order, {part['orders']} orders, {name}",
            case["calls_per_completed_order"],
            f"original design {original}; SQS floor {case['sqs_floor_per_completed_order']}; "
            f"{case['messages_per_flush']} messages a flush",
            part["target"] if name in part["targeted"] else None,
        )


def _latency(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "latency" not in report:
        return
    part = report["latency"]
    forwarder = part["forwarder"]["p50_ms"]
    for name, key, ratio in (
        ("the average", "worker", "worker_over_forwarder_p50"),
        ("the WaitEstimate", "worker_estimate", "estimate_over_forwarder_p50"),
    ):
        yield _row(
            f"latency p50, a completion -> {name}, over a do-nothing forwarder",
            part[ratio],
            f"worker {part[key]['p50_ms']} ms, forwarder {forwarder} ms",
            part["target_over_forwarder"],
            "x",
        )


def _cpu(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    runs = [
        r for r in report.get("throughput", {}).get("runs", []) if r["emulator"] == "localstack"
    ]
    forwarder = next((r for r in runs if r.get("consumer") == "forwarder"), None)
    for row in runs:
        if row.get("consumer", "worker") != "worker":
            continue
        baseline = (
            "no forwarder in this run"
            if forwarder is None
            else f"do-nothing forwarder {forwarder['workers_cpu_ms_per_event_excl_startup']} ms"
        )
        yield _row(
            f"worker CPU per consumed event, LocalStack + moto, {row['workers']} worker(s)",
            row["workers_cpu_ms_per_event_excl_startup"],
            f"{baseline}; emulators {row['emulator_cpu_ms_per_event']} ms",
            0.30,
            " ms",
        )


def _memory(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "memory" not in report:
        return
    part = report["memory"]
    yield _row(
        f"peak RSS, one worker, {part['windows']:,} windows of {part['live_records_per_window']} live records"
        f" and {part['open_orders']:,} open orders in {part['tenants']:,} tenants",
        part["loaded_worker_peak_mb"],
        f"idle worker {part['idle_worker_after_messages_peak_mb']} MB",
        part["target_mb"],
        "MB",
    )


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure of issue 20's table the report holds."""
    return [row for part in (_replay, _calls, _latency, _cpu, _memory) for row in part(report)]


def render(table: list[dict[str, Any]]) -> str:
    """The table as Markdown, as docs/performance.md shows it."""
    lines = ["| figure | measured | baseline, same run | target | |", "|---|---|---|---|---|"]
    for row in table:
        if row["target"] is None:
            target, verdict = "reported", ""
        else:
            target = f"≤ {row['target']}{row['unit']}"
            verdict = "met" if row["met"] else "**missed**"
        lines.append(
            f"| {row['figure']} | {row['value']}{row['unit']} | {row['baseline']} | "
            f"{target} | {verdict} |"
        )
    return "\n".join(lines)
