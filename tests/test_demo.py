"""`wait-times demo`: what a newcomer runs first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
