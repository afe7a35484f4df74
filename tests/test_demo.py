"""`wait-times demo`: what a newcomer runs first."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))
ROW = re.compile(r"^(NYC|LDN|SYD)\s+.+?\s+\d+m \d\d\.\ds\s+(\d+)\s+(\d+)$", re.MULTILINE)


def test_demo_shows_live_averages_and_shuts_down_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAIT_TIMES_", "AWS_"))}
    env["WAIT_TIMES_METRICS_PORT"] = "0"  # no credentials, no region: the demo needs none
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
    assert all(int(samples) >= 1 for _, samples, _ in rows)
    assert "Traceback" not in result.stderr


def test_ctrl_c_in_a_terminal_drains_and_exits_0(tmp_path: Path) -> None:
    # A terminal's Ctrl-C signals the whole foreground process group, emulator included.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAIT_TIMES_", "AWS_"))}
    env["WAIT_TIMES_METRICS_PORT"] = "0"
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
