"""The command line as an operator uses it: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest

from service.tools.coffeebar import TrafficGenerator
from service.tools.replay import read_events, replay, replay_estimates
from tests.envelopes import envelope
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


@pytest.mark.parametrize(
    "content",
    [
        b'[{"detail-type": ',  # a truncated JSON array
        b'{\n  "detail-type": "OrderManager.WaitingCompletion",\n  "detail": {',  # a cut object
        bytes(random.Random(7).randrange(256) for _ in range(4096)),  # random bytes
        b"not json\nat all\n",
    ],
    ids=["truncated-array", "truncated-object", "random-bytes", "text"],
)
def test_replay_of_a_file_that_is_not_json_is_one_clear_line(
    tmp_path: Path, content: bytes
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_bytes(content)
    line = refused("replay", str(broken))
    assert line.startswith(f"wait-times replay: {broken} is not JSON: ")
    assert "expected a JSON array of events, or JSON Lines (one event per line)" in line


def test_replay_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    assert "no such file: /nonexistent.json" in refused("replay", "/nonexistent.json")
    assert "no such file" in refused("replay", str(tmp_path))


def test_replay_summary_is_a_readable_line(tmp_path: Path) -> None:
    lines = tmp_path / "events.jsonl"
    envelopes = json.loads(RECORDING.read_text())
    bad = ["not json", '"a string"']
    lines.write_text("\n".join([*(json.dumps(e) for e in envelopes), *bad]) + "\n")
    result = run_cli("replay", str(lines))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        f"replayed {len(envelopes) + 2} events: 136 ignored, 2 unprocessable "
        "(not_an_envelope: 1, not_json: 1), 0 anomalies, 0 halves after their order expired"
    )
    assert "{" not in result.stderr, "no Python dict"


def test_replay_estimates_prints_the_backtest_as_json_lines(tmp_path: Path) -> None:
    """A simulated bar's stream, shuffled and with a bad line: every WaitEstimate detail the
    estimate's rules give for the stream in time order, one per line, versions rising per
    tenant; the summary line on stderr counts as ``replay`` does."""
    generator = TrafficGenerator(seed=5, rate=0.05, tenants=("NYC", "LDN"), start=1.79e9)
    envelopes = [
        envelope(detail_type=e.detail_type, detail=e.detail, at=e.at) for e in generator.events(120)
    ]
    shuffled = random.Random(1).sample(envelopes, len(envelopes))
    lines = tmp_path / "bar.jsonl"
    lines.write_text("\n".join([*(json.dumps(e) for e in shuffled), "not json"]) + "\n")
    result = run_cli("replay", "--estimates", str(lines))
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [d.model_dump(mode="json") for d in replay_estimates(envelopes)]
    assert printed == expected and printed
    for tenant in ("NYC", "LDN"):
        versions = [d["version"] for d in printed if d["eventId"] == tenant]
        assert versions == list(range(1, len(versions) + 1))
    assert any(d["drinks"] for d in printed), "a day's traffic learns estimates"
    assert all(set(d) == {"eventId", "asOf", "openOrders", "drinks", "version"} for d in printed)
    schema = json.loads((ROOT / "docs" / "events" / "wait-estimate-detail.schema.json").read_text())
    for detail in printed:
        jsonschema.validate(detail, schema, format_checker=jsonschema.FormatChecker())
    assert "1 unprocessable (not_json: 1)" in result.stderr


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


def refused(*args: str) -> str:
    """Run a command that must refuse its input: exit 2 and one line, returned."""
    result = run_cli(*args, env={"AWS_REGION": "us-east-1"})
    assert result.returncode == 2, (args, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (args, lines)
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ("--file", "/nonexistent/recording.json"),
            "cannot read --file /nonexistent/recording.json",
        ),
        (("--file", "/"), "cannot read --file /: Is a directory"),
        (("--tenants", ","), "argument --tenants: no tenant in ','"),
        (("--tenants", " , ,"), "argument --tenants: no tenant in"),
        (("--orders", "-5"), "argument --orders: must be a whole number >= 1, not '-5'"),
        (("--orders", "0"), "argument --orders: must be a whole number >= 1"),
        (("--orders", "many"), "argument --orders: not a whole number: 'many'"),
        (("--rate", "0"), "argument --rate: must be a number > 0, not '0'"),
        (("--rate", "-1"), "argument --rate: must be a number > 0"),
        (("--rate", "inf"), "argument --rate: must be a number > 0"),
        (("--speed", "-1"), "argument --speed: must be a number >= 0"),
        (("--speed", "nan"), "argument --speed: must be a number >= 0"),
        (("--duration", "0"), "argument --duration: must be a number > 0"),
        (("--duration", "-3"), "argument --duration: must be a number > 0"),
        (("--history", "-60"), "argument --history: must be a number >= 0"),
        (("--rush-every", "0"), "argument --rush-every: must be a number > 0, not '0'"),
        (("--rush-length", "-1"), "argument --rush-length: must be a number >= 0"),
        (("--rush-factor", "0.5"), "argument --rush-factor: must be a number >= 1, not '0.5'"),
        (("--rush-factor", "nan"), "argument --rush-factor: must be a number >= 1"),
        (("--baristas", "0"), "argument --baristas: must be a whole number >= 1, not '0'"),
        (("--baristas", "two"), "argument --baristas: not a whole number: 'two'"),
        (
            ("--rush-every", "600", "--rush-length", "900"),
            "argument --rush-length: must be at most --rush-every (600), not 900",
        ),
        (
            ("--file", "x.json", "--orders", "3"),
            "argument --orders: not allowed with argument --file",
        ),
        (
            ("--orders", "3", "--duration", "9"),
            "argument --duration: not allowed with argument --orders",
        ),
        (
            ("--file", "x.json", "--duration", "9"),
            "argument --duration: not allowed with argument --file",
        ),
    ],
)
def test_play_refuses_bad_input_with_one_line_and_exit_2(args: tuple[str, ...], said: str) -> None:
    line = refused("play", *args)
    assert line.startswith("wait-times play: ")
    assert said in line


def test_play_refuses_a_recording_that_is_not_json(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_bytes(b"\x00\xff garbage\n\x13\x37\n")
    assert "is not JSON: expected a JSON array of events" in refused("play", "--file", str(broken))


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("demo", ("--speed", "0")),
        ("demo", ("--rate", "-1")),
        ("demo", ("--duration", "0")),
        ("replay", ()),
        ("run", ("--burst", "extra")),
        ("nonsense", ()),
    ],
)
def test_other_commands_refuse_bad_options_with_one_line(
    command: str, args: tuple[str, ...]
) -> None:
    assert refused(command, *args).startswith("wait-times")


def test_the_image_offers_no_demo_without_the_emulator() -> None:
    # As in the image: moto (the `emulator` extra) cannot be imported.
    hide_moto = (
        "import sys\n"
        "class NoMoto:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'moto' or name.startswith('moto.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NoMoto())\n"
        "from service.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    helped = subprocess.run(
        [sys.executable, "-c", hide_moto, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    assert "demo" not in helped.stdout
    assert {"run", "provision", "play", "replay", "schema"} <= set(helped.stdout.split())
    demo = subprocess.run(
        [sys.executable, "-c", hide_moto, "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 2
    assert "invalid choice: 'demo'" in demo.stderr
    assert "demo" in run_cli("--help").stdout, "offered where the emulator is installed"


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
