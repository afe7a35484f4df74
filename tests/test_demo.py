"""`wait-times demo`: what a newcomer runs first, and the table it shows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import anyio
import pytest

from service.aws.publisher import EventBridgePublisher
from service.core.published import (
    AVERAGE_DETAIL_TYPE,
    ESTIMATE_DETAIL_TYPE,
    DrinkAverageTime,
    WaitEstimate,
    average_event,
    estimate_event,
)
from service.core.window import Window, WindowEntry
from service.settings import Settings
from service.tools.catalog.examples import estimate_examples, published_examples
from service.tools.demo import (
    LEGEND,
    NO_DRINK,
    PENDING,
    Board,
    Demo,
    cell_width,
    fit,
    printable,
    render_table,
)
from tests.helpers import Aws, wait_until

WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))
# A row with an average: tenant, drink, avg wait, samples, version, estimate, p90, ahead.
ROW = re.compile(
    r"^(NYC|LDN|SYD)\s+.+?\s+\d+m \d\d\.\ds\s+(\d+)\s+(\d+)"
    rf"\s+({PENDING}|\d+m \d\ds)\s+(-|\d+m \d\ds)\s+(-|\d+)$",
    re.MULTILINE,
)


# --- the table: a pure function -------------------------------------------------------------


def average(tenant: str, drink: str, version: int = 1, waits: tuple[int, ...] = (24,)) -> Any:
    window = Window(10, tuple(WindowEntry(100 + i, f"o{i}", w) for i, w in enumerate(waits)))
    return average_event((tenant, drink), window, version, 10)


def envelope(detail: DrinkAverageTime | WaitEstimate) -> str:
    """A capture-queue message body as EventBridge delivers what the publisher puts."""
    detail_type = (
        AVERAGE_DETAIL_TYPE if isinstance(detail, DrinkAverageTime) else (ESTIMATE_DETAIL_TYPE)
    )
    return json.dumps(
        {
            "version": "0",
            "id": "0c4a1e55-7b3f-4d8e-9a61-5f2e8d3c7b10",
            "detail-type": detail_type,
            "source": "awsserverlessda.serverlesspresso",
            "account": "123456789012",
            "time": "2026-12-01T12:00:06Z",
            "region": "us-east-1",
            "resources": [],
            "detail": json.loads(detail.model_dump_json()),
        }
    )


def rows_of(text: str) -> list[list[str]]:
    """The table's data rows, split on runs of two or more blanks (names have single ones)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("tenant")) + 1
    end = lines.index("", start)
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:end] if line != LEGEND]


@pytest.mark.unit
def test_the_table_shows_each_average_beside_its_estimate() -> None:
    averages = {
        ("NYC", "Caffe Latte"): average("NYC", "Caffe Latte", 3, (21, 27)),
        ("NYC", "Flat White"): average("NYC", "Flat White", 2, (30,)),
    }
    estimates = {
        "NYC": estimate_event(
            "NYC", 1_790_000_000, 12, {"Caffe Latte": (412.0, 560.0), "Espresso": (300, 400.4)}, 7
        )
    }
    text = render_table(averages, estimates, "header", "footer")
    lines = text.splitlines()
    assert lines[0] == "header" and lines[-1] == "footer"
    assert lines[2].split() == [
        "tenant", "drink", "avg", "wait", "samples", "version", "estimate", "p90", "ahead"
    ]  # fmt: skip
    assert rows_of(text) == [
        ["NYC", "Caffe Latte", "0m 24.0s", "2", "3", "6m 52s", "9m 20s", "12"],
        # An estimate for a drink with no average yet, and the reverse: placeholders.
        ["NYC", "Espresso", PENDING, "-", "-", "5m 00s", "6m 40s", "12"],
        ["NYC", "Flat White", "0m 30.0s", "1", "2", PENDING, "-", "12"],
    ]
    assert LEGEND in lines
    assert len({cell_width(line) for line in lines[2:-3]}) == 1, "aligned columns"


@pytest.mark.unit
def test_a_tenant_without_an_estimate_or_a_drink_still_reads() -> None:
    averages = {("LDN", "Mocha"): average("LDN", "Mocha"), ("", "Latte"): average("", "Latte")}
    estimates = {
        "SYD": estimate_event("SYD", 1_790_000_000, 3, {}, 1),  # open orders, no drink yet
        "LDN": estimate_event("LDN", 1_790_000_000, 0, {}, 2),
    }
    assert rows_of(render_table(averages, estimates, "", "")) == [
        ['""', "Latte", "0m 24.0s", "1", "1", PENDING, "-", "-"],  # the 2021 shape's tenant
        ["LDN", "Mocha", "0m 24.0s", "1", "1", PENDING, "-", "0"],
        ["SYD", NO_DRINK, PENDING, "-", "-", PENDING, "-", "3"],
    ]
    empty = render_table({}, {}, "h", "f")
    assert "waiting for the first orders" in empty and LEGEND not in empty


ODD_NAMES = [
    "\x1b[2J\x1b[31mred",  # ANSI escapes: clear the screen, colour
    "two\nlines\tand\rtab",
    "\u202egnp.exe",  # right-to-left override
    "zero\u200bwidth\u200djoin\ufeff",
    "\x00\x07\x7f\x85\ud800",
    "\U000f0000 private",
    "Cafe\u0301 Mo\u0308cha",  # combining marks: no cell of their own
    "東京カフェ本店の特別なブレンドコーヒー",  # wide characters, two cells each
    "☕😀👩\u200d👩\u200d👧 family",
    "x" * 128,
    "",
]


@pytest.mark.unit
@pytest.mark.parametrize("name", ODD_NAMES, ids=range(len(ODD_NAMES)))
def test_odd_names_neither_break_nor_widen_the_table(name: str) -> None:
    drink = name or "Latte"  # a drink is never empty
    averages = {(name, drink): average(name, drink)}
    estimates = {name: estimate_event(name, 1_790_000_000, 4, {drink: (60.0, 90.0)}, 1)}
    text = render_table(averages, estimates, "header", "footer")
    lines = text.splitlines()
    assert len(lines) == 7, text  # header, blank, titles, one row, legend, blank, footer
    for line in lines:
        assert cell_width(line) <= 100, line
        assert all(unicodedata.category(ch)[0] != "C" for ch in line), ascii(line)
    assert cell_width(lines[3]) == cell_width(lines[2]), "the row is as wide as the titles"
    assert lines[3].rstrip().endswith("0m 24.0s       1       1    1m 00s    1m 30s     4")


@pytest.mark.unit
def test_fit_cuts_long_names_with_an_ellipsis_and_pads_by_cells() -> None:
    assert fit("Latte", 8) == "Latte   "
    assert fit("Caramel Macchiato", 8) == "Caramel\u2026"
    assert fit("東京カフェ", 8) == "東京カ\u2026 "  # 3 wide characters and the ellipsis: 7 cells
    assert fit("Cafe\u0301", 5) == "Cafe\u0301 "
    assert fit("ab\u0301cd", 3) == "ab\u0301\u2026"  # a mark stays with its letter
    assert printable("a\x1b[0m\nb\u202ec") == "a\ufffd[0m bc"
    for width in range(1, 12):
        for name in ODD_NAMES:
            assert cell_width(fit(name, width)) == width


# --- the board: what the capture queue brings -------------------------------------------------


@pytest.mark.unit
def test_the_board_keeps_the_highest_version_of_each_from_real_envelopes() -> None:
    board = Board()
    settings = Settings()
    for example in [*published_examples(settings), *estimate_examples(settings)]:
        board.take(json.dumps(example.envelope))
    assert set(board.averages) == {("NYC", "Flat White")}
    assert board.estimates["NYC"].version == 35  # the examples' highest
    assert (board.received, board.estimates_received) == (1, 2)

    newer = estimate_event("NYC", 1_790_000_000, 5, {"Flat White": (200.0, 260.0)}, 36)
    stale = estimate_event("NYC", 1_790_000_100, 9, {"Latte": (1.0, 2.0)}, 20)
    for detail in (newer, stale, average("NYC", "Flat White", 1), newer):
        board.take(envelope(detail))
    assert board.estimates["NYC"] == newer
    assert board.averages[("NYC", "Flat White")].version == 2  # the example's, not 1
    assert (board.received, board.estimates_received, board.unreadable) == (2, 5, 0)
    assert rows_of(board.render("", "")) == [
        ["NYC", "Flat White", "0m 23.0s", "2", "2", "3m 20s", "4m 20s", "5"]
    ]


@pytest.mark.unit
@pytest.mark.parametrize(
    "body",
    [
        "not json",
        b"\xff\xfe",
        "[]",
        "null",
        "{}",
        json.dumps({"detail-type": "OrderManager.Other", "detail": {}}),
        json.dumps({"detail-type": ESTIMATE_DETAIL_TYPE}),
        json.dumps({"detail-type": ESTIMATE_DETAIL_TYPE, "detail": {"eventId": "NYC"}}),
        json.dumps({"detail-type": AVERAGE_DETAIL_TYPE, "detail": []}),
        json.dumps({"detail-type": [AVERAGE_DETAIL_TYPE], "detail": {}}),
    ],
)
def test_the_board_counts_what_it_cannot_read_and_carries_on(body: str | bytes) -> None:
    board = Board()
    board.take(body)
    assert (board.unreadable, board.averages, board.estimates) == (1, {}, {})


@pytest.mark.integration
async def test_the_demo_reads_both_events_from_the_capture_queue(aws: Aws) -> None:
    assert aws.resources.capture_queue_url is not None
    demo = Demo(
        aws.settings,
        aws.clients,
        aws.resources.capture_queue_url,
        emulator_url=aws.cloud.url,
        duration=None,
        speed=1,
    )
    publisher = EventBridgePublisher(
        aws.clients.events, aws.settings.event_bus, aws.settings.source
    )
    await publisher.publish(
        [
            average("NYC", "Latte", 1),
            estimate_event("NYC", 1_790_000_000, 2, {"Latte": (120.0, 180.0)}, 1),
            average("LDN", "Mocha\x1b[2J", 1),
        ]
    )
    board = demo.board
    async with anyio.create_task_group() as group:
        group.start_soon(demo.read_published)
        await wait_until(
            lambda: (board.received, board.estimates_received) == (2, 1), 30, "both events"
        )
        group.cancel_scope.cancel()
    assert board.unreadable == 0
    frame = demo.frame()
    assert ["NYC", "Latte", "0m 24.0s", "1", "1", "2m 00s", "3m 00s", "2"] in rows_of(frame)
    assert "averages received: 2   estimates received: 1" in frame
    assert "\x1b" not in frame


# --- the demo itself ------------------------------------------------------------------------


@pytest.mark.integration
def test_demo_shows_live_averages_and_shuts_down_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAIT_TIMES_", "AWS_"))}
    env["WAIT_TIMES_METRICS_PORT"] = "0"  # no credentials, no region: the demo needs none
    env["WAIT_TIMES_BOARD_PORT"] = "0"
    result = subprocess.run(
        [WAIT_TIMES, "demo", "--duration", "15"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stopping: draining the worker" in result.stdout
    final = result.stdout.split("final averages", 1)[1]
    rows = ROW.findall(final)
    assert len(rows) >= 10, final
    assert all(int(row[1]) >= 1 for row in rows)
    assert any(row[5] != "-" for row in rows), final  # the orders ahead, from an estimate
    assert re.search(r"^board http://127\.0\.0\.1:\d+/$", result.stdout, re.M), "its address"
    received = re.findall(r"estimates received: (\d+)", result.stdout)
    assert received and int(received[-1]) > 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_ctrl_c_in_a_terminal_drains_and_exits_0(tmp_path: Path) -> None:
    # A terminal's Ctrl-C signals the whole foreground process group, emulator included.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAIT_TIMES_", "AWS_"))}
    env["WAIT_TIMES_METRICS_PORT"] = "0"
    env["WAIT_TIMES_BOARD_PORT"] = "0"
    output = tmp_path / "demo.out"
    with output.open("w") as sink:
        process = subprocess.Popen(
            [WAIT_TIMES, "demo"],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 90
            while not ROW.search(output.read_text()) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ROW.search(output.read_text()), "no average appeared"
            os.killpg(process.pid, signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert process.returncode == 0, stderr[-2000:]
    assert "final averages" in output.read_text()
    assert "Traceback" not in stderr
