"""The command line as an operator uses it: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from service.tools.replay import read_events, replay
from tests.helpers import DATA, RECORDING, ROOT, Cloud

pytestmark = pytest.mark.integration

WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WAIT_TIMES_")}
    full_env.update(env or {})
    return subprocess.run(
        [WAIT_TIMES, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def test_replay_prints_sorted_windows_of_a_recording() -> None:
    result = run_cli("replay", str(RECORDING))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows == replay(read_events(RECORDING)).as_rows()
    assert rows == sorted(rows, key=lambda r: (r["eventId"], r["drink"]))
    assert set(rows[0]) == {"eventId", "drink", "duration", "samples"}


def test_replay_reads_json_lines_and_several_files(tmp_path: Path) -> None:
    lines = tmp_path / "events.jsonl"
    envelopes = json.loads(RECORDING.read_text())
    lines.write_text("\n".join(json.dumps(e) for e in envelopes[:90]) + "\nnot json\n")
    rest = tmp_path / "rest.json"
    rest.write_text(json.dumps(envelopes[90:]))
    result = run_cli("replay", str(lines), str(rest))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == replay(envelopes).as_rows()
    assert "1 unprocessable" in result.stderr


def test_replay_of_every_reference_sample_succeeds() -> None:
    files = [str(p) for p in sorted(DATA.rglob("*.json"))]
    result = run_cli("replay", *files)
    assert result.returncode == 0, result.stderr
    assert "0 unprocessable" in result.stderr


def test_replay_of_a_broken_file_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[{"detail-type": ')
    result = run_cli("replay", str(broken))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not JSON" in result.stderr


def test_a_bad_setting_is_one_line_naming_it_and_exit_2() -> None:
    result = run_cli("run", env={"WAIT_TIMES_WINDOW_SIZE": "ten"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "WAIT_TIMES_WINDOW_SIZE='ten'" in lines[0]


def test_inconsistent_settings_are_refused() -> None:
    result = run_cli(
        "run",
        env={"WAIT_TIMES_MAX_WAIT_SECONDS": "90000", "WAIT_TIMES_PENDING_TTL_SECONDS": "3600"},
    )
    assert result.returncode == 2
    assert "WAIT_TIMES_PENDING_TTL_SECONDS" in result.stderr


def test_run_against_missing_resources_exits_3_with_one_line(cloud: Cloud) -> None:
    result = run_cli(
        "run",
        env={
            **cloud.env(),
            "AWS_REGION": "eu-west-1",
            "WAIT_TIMES_METRICS_PORT": "0",
            "WAIT_TIMES_LOG_FORMAT": "json",
        },
    )
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "wait-times provision" in lines[0]
    assert "'wait-times'" in lines[0]


def test_provision_is_idempotent_and_run_agrees_on_names(cloud: Cloud) -> None:
    env = {
        **cloud.env(),
        "WAIT_TIMES_QUEUE_NAME": "orders-q",
        "WAIT_TIMES_TABLE_NAME": "orders-t",
        "WAIT_TIMES_METRICS_PORT": "0",
        "WAIT_TIMES_RECEIVE_WAIT_SECONDS": "1",
    }
    for _ in range(2):
        result = run_cli("provision", env=env)
        assert result.returncode == 0, result.stderr
    played = run_cli("play", "--orders", "20", "--speed", "0", "--rate", "5", env=env)
    assert played.returncode == 0, played.stderr
    worker = run_cli("run", "--burst", env=env, timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert '"worker_started"' in worker.stdout or "worker_started" in worker.stdout


def test_play_replays_a_recording_file_through_the_bus(cloud: Cloud) -> None:
    env = {
        **cloud.env(),
        "WAIT_TIMES_METRICS_PORT": "0",
        "WAIT_TIMES_RECEIVE_WAIT_SECONDS": "1",
    }
    assert run_cli("provision", env=env).returncode == 0
    played = run_cli("play", "--file", str(RECORDING), "--speed", "0", env=env)
    assert played.returncode == 0, played.stderr
    assert '"events": 183' in played.stdout
    worker = run_cli("run", "--burst", env=env, timeout=120)
    assert worker.returncode == 0, worker.stderr


def test_play_needs_an_amount() -> None:
    result = run_cli("play")
    assert result.returncode == 2
    assert "--orders" in result.stderr


def test_version_prints_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wait-times {metadata.version('wait-times')}"


def test_dev_py_help_lists_every_command_and_exits_0() -> None:
    for flag in ("--help", "-h", "help"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "dev.py"), flag],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        for command in ("demo", "test", "lint", "format", "typecheck", "bench", "run"):
            assert f"  {command} " in result.stdout, command
    unknown = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "nonsense"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert unknown.returncode == 2 and "nonsense" in unknown.stderr
