"""Dockerfile, .dockerignore and docker-compose.yml: the linters, and the compose wiring run
for real against the embedded emulator (no Docker engine needed).

The wiring test takes each service's command and environment from docker-compose.yml and
the entry point from the Dockerfile, overrides only the endpoint and the ports, and runs
provision, then the player (stopped with SIGTERM, as `docker compose down` does), then the
worker in burst mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from service.aws.clients import open_clients
from service.aws.provision import provision
from service.core.published import AVERAGE_DETAIL_TYPE
from service.settings import Settings
from tests.helpers import Cloud, latest_by_key, make_settings, scan_windows

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_PATH = ROOT / "docker-compose.yml"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_PATH.read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
BIN = Path(sys.executable).parent
PLAYER_SECONDS = 5  # the compose player runs until stopped; here, long enough to pair orders


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / name), *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def instruction(name: str) -> list[str]:
    """Arguments of the last Dockerfile instruction ``name`` (exec form, JSON)."""
    lines = [line for line in DOCKERFILE.splitlines() if line.startswith(f"{name} ")]
    return list(json.loads(lines[-1][len(name) + 1 :]))


@pytest.mark.integration
def test_hadolint_reports_nothing() -> None:
    result = tool("hadolint", "Dockerfile")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.unit
def test_dockerfile_shape() -> None:
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", DOCKERFILE, re.MULTILINE)
    assert len(stages) >= 3, "uv, builder and runtime stages"
    base = re.search(r"^ARG PYTHON_IMAGE=(python:(\d+\.\d+\.\d+)-slim\S*)$", DOCKERFILE, re.M)
    assert base is not None, "a pinned slim Python base"
    assert base.group(2).startswith("3.11.")
    assert stages[-1] == ("${PYTHON_IMAGE}", ""), "the runtime is the same slim Python"
    assert re.search(r"^FROM ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ AS uv$", DOCKERFILE, re.M)
    syncs = re.findall(r"uv sync ([^\n]+)", DOCKERFILE)
    assert len(syncs) == 2
    for flags in syncs:
        assert {"--locked", "--no-dev", "--no-default-groups", "--no-editable"} <= set(
            flags.split()
        )
        assert "--extra" not in flags
        assert "--all-extras" not in flags
    assert "--no-install-project" in syncs[0]
    assert "UV_COMPILE_BYTECODE=1" in DOCKERFILE
    runtime = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert "COPY --from=builder /app/.venv /app/.venv" in runtime
    assert "uv" not in re.sub(r"#.*", "", runtime).replace(".venv", ""), "no uv in the runtime"
    user = re.findall(r"^USER (\S+)$", runtime, re.M)
    assert user == ["10001:10001"]
    assert instruction("ENTRYPOINT") == ["wait-times"]
    assert instruction("CMD") == ["run"]
    # Only `run` serves /healthz: the image's other commands must not be reported unhealthy,
    # so the check lives with the worker (compose, the ECS task definition), not here.
    assert not re.search(r"^HEALTHCHECK", DOCKERFILE, re.M)


def labels() -> dict[str, str]:
    """The runtime stage's LABELs, with its ARG defaults substituted."""
    runtime = DOCKERFILE.rsplit("\nFROM ", 1)[1].replace("\\\n", " ")
    defaults = {
        name: value.strip('"') for name, value in re.findall(r"^ARG (\w+)=(\S*)$", runtime, re.M)
    }
    found: dict[str, str] = {}
    for line in re.findall(r"^LABEL (.+)$", runtime, re.M):
        for key, value in re.findall(r'([\w.-]+)="([^"]*)"', line):
            found[key] = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], ""), value)
    return found


@pytest.mark.unit
def test_the_image_carries_oci_labels_with_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = labels()
    prefix = "org.opencontainers.image."
    assert found[f"{prefix}title"] == project["name"]
    assert found[f"{prefix}description"]
    assert found[f"{prefix}licenses"] == project["license"]["text"] == "MIT-0"
    assert found[f"{prefix}version"] == project["version"], "ARG VERSION defaults to it"
    assert re.search(r"^ARG VERSION=", DOCKERFILE, re.M), "the version is a build argument"
    assert f"{prefix}source" in found
    assert '"${SOURCE_URL}"' in DOCKERFILE, "the source is a build argument"


@pytest.mark.unit
def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "service"}
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        assert set(copied.split()) <= allowed


@pytest.mark.integration
def test_compose_file_is_valid() -> None:
    result = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_PATH))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_compose_topology() -> None:
    localstack = SERVICES["localstack"]
    assert re.fullmatch(r"localstack/localstack:\d+\.\d+\.\d+", localstack["image"])
    assert "healthcheck" in localstack
    assert SERVICES["provision"]["command"] == ["provision"]
    assert SERVICES["provision"]["depends_on"] == {"localstack": {"condition": "service_healthy"}}
    assert localstack["environment"]["LS_LOG"] == "warn", "no line per unmatched event"
    for name in ("worker", "player", "board"):
        # LocalStack directly too: compose stops these before it (v1 orders by direct
        # dependencies only), so the workers' drain can still reach SQS and DynamoDB.
        assert SERVICES[name]["depends_on"] == {
            "localstack": {"condition": "service_healthy"},
            "provision": {"condition": "service_completed_successfully"},
        }
    assert SERVICES["worker"]["command"] == ["run"]
    assert SERVICES["worker"]["deploy"]["replicas"] == 2
    player = SERVICES["player"]["command"]
    assert player[0] == "play"
    # The player plays until stopped (and comes back after a crash); provision runs once.
    assert not {"--duration", "--orders", "--file"} & set(player)
    assert SERVICES["player"]["restart"] == "unless-stopped"
    assert SERVICES["provision"]["restart"] == "no"
    # Each service has the health check that fits it: the worker's asks /healthz; the
    # one-shot commands have none (and the image has none to inherit).
    probe = SERVICES["worker"]["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"]
    assert "urllib" in probe[3]
    port = SERVICES["worker"]["environment"]["WAIT_TIMES_METRICS_PORT"]
    assert f"http://127.0.0.1:{port}/healthz" in probe[3]
    for name in ("provision", "player"):
        assert "healthcheck" not in SERVICES[name], name
    # The board: its own queue, which provision creates because the shared environment
    # enables it; its page on the port it listens on, on loopback only.
    board = SERVICES["board"]
    assert board["command"] == ["board"]
    assert board["environment"]["WAIT_TIMES_BOARD_ENABLED"] == "true"
    port = board["environment"]["WAIT_TIMES_BOARD_PORT"]
    assert board["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f"http://127.0.0.1:{port}/healthz" in board["healthcheck"]["test"][3]
    for name in ("provision", "worker", "player", "board"):
        assert SERVICES[name]["build"]["context"] == "."
        for variable in SERVICES[name]["environment"]:
            field = variable.removeprefix("WAIT_TIMES_").lower()
            assert variable.startswith("AWS_") or field in Settings.model_fields, variable
    prometheus = SERVICES["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"])
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = (j for j in scrape["scrape_configs"] if j["job_name"] == "wait-times")
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert str(discovery["port"]) == SERVICES["worker"]["environment"]["WAIT_TIMES_METRICS_PORT"]
    assert SERVICES["grafana"]["profiles"] == ["grafana"]
    # Compose's stop grace period must cover the worker's drain, like ECS's stopTimeout.
    grace = int(SERVICES["worker"]["stop_grace_period"].removesuffix("s"))
    assert grace > float(SERVICES["worker"]["environment"]["WAIT_TIMES_DRAIN_SECONDS"])


def compose_argv(
    service: str, cloud: Cloud, *, extra: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, str]]:
    """A compose service's command line and environment, on the emulators (LocalStack's
    DynamoDB being moto's, through AWS_ENDPOINT_URL_DYNAMODB)."""
    spec = SERVICES[service]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAIT_TIMES_", "AWS_"))}
    env.update({k: str(v) for k, v in spec["environment"].items()})
    assert env["AWS_ENDPOINT_URL"] == "http://localstack:4566"
    env.update(cloud.env())
    if "WAIT_TIMES_METRICS_PORT" in env:
        env["WAIT_TIMES_METRICS_PORT"] = "0"
        env["WAIT_TIMES_METRICS_HOST"] = "127.0.0.1"
    if "WAIT_TIMES_BOARD_PORT" in env:
        env["WAIT_TIMES_BOARD_PORT"] = "0"
        env["WAIT_TIMES_BOARD_HOST"] = "127.0.0.1"
    entrypoint = instruction("ENTRYPOINT")
    return [str(BIN / entrypoint[0]), *entrypoint[1:], *spec["command"], *extra], env


def compose_run(
    service: str, cloud: Cloud, *, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run a compose service's command with its environment, on the emulators, to its end."""
    argv, env = compose_argv(service, cloud, extra=extra)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def compose_stop(
    service: str, cloud: Cloud, folder: Path, *, started: str, after: float
) -> tuple[int, float, str]:
    """Run a compose service that runs until stopped; ``after`` seconds after it logged
    ``started``, stop it as compose does (SIGTERM). Returns its exit code, the seconds it
    took to exit, and its stderr. Output goes to files in ``folder`` (a pipe could fill)."""
    argv, env = compose_argv(service, cloud)
    out, err = folder / f"{service}.out", folder / f"{service}.err"
    with out.open("a") as stdout, err.open("a") as stderr:
        process = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while f'"event": "{started}"' not in out.read_text():
            assert process.poll() is None, err.read_text()[-2000:]
            assert time.monotonic() < deadline, f"{service} never logged {started}"
            time.sleep(0.05)
        time.sleep(after)
        assert process.poll() is None, err.read_text()[-2000:]
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        return process.returncode, time.monotonic() - signalled, err.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class Started:
    """A compose service running until stopped (the board), its log read for its URL."""

    def __init__(self, process: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.process, self.out, self.err = process, out, err

    def url(self) -> str:
        for line in self.out.read_text().splitlines():
            if line.startswith("{") and json.loads(line)["event"] == "board_started":
                return str(json.loads(line)["url"])
        raise AssertionError("the board logged no board_started")

    async def averages_when(self, expected: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The board's averages, in the stored rows' shape, once they are ``expected``
        (or after 30 s, as they are then)."""
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline and rows != expected:
                rows = []
                async with http.get(self.url() + "tenants.json") as answer:
                    tenants = await answer.json()
                for tenant in tenants:
                    async with http.get(self.url() + "view.json", params={"tenant": tenant}) as a:
                        view = (await a.json())["view"]
                    rows += [
                        {
                            "eventId": tenant,
                            "drink": r["drink"],
                            "duration": r["average"],
                            "samples": r["samples"],
                        }
                        for r in view["drinks"]
                        if r["average"] is not None
                    ]
                rows.sort(key=lambda r: (r["eventId"], r["drink"]))
                await asyncio.sleep(0.2)
        return rows

    def stop(self) -> tuple[int | None, str]:
        """SIGTERM, as compose stops it; its exit code and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode, self.err.read_text()


def compose_start(service: str, cloud: Cloud, folder: Path, *, started: str) -> Started:
    """Start a compose service that runs until stopped; return once it logged ``started``."""
    argv, env = compose_argv(service, cloud)
    out, err = folder / f"{service}.out", folder / f"{service}.err"
    with out.open("a") as stdout, err.open("a") as stderr:
        process = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr)
    running = Started(process, out, err)
    deadline = time.monotonic() + 30
    while f'"event": "{started}"' not in out.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise AssertionError(f"{service} never logged {started}: {err.read_text()[-2000:]}")
        time.sleep(0.05)
    return running


@pytest.mark.integration
async def test_compose_services_work_together_on_the_emulator(cloud: Cloud, tmp_path: Path) -> None:
    provisioned = compose_run("provision", cloud)
    assert provisioned.returncode == 0, provisioned.stderr

    env = SERVICES["worker"]["environment"]
    settings = make_settings(
        cloud,
        region=env["AWS_REGION"],
        event_bus=env["WAIT_TIMES_EVENT_BUS"],
        queue_name=env["WAIT_TIMES_QUEUE_NAME"],
        table_name=env["WAIT_TIMES_TABLE_NAME"],
        rule_name=env["WAIT_TIMES_RULE_NAME"],
    )
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        # Only adds a rule copying the published events to a queue the test reads.
        capture = (await provision(settings, clients, capture_queue="capture")).capture_queue_url
        assert capture is not None

        board = compose_start("board", cloud, tmp_path, started="board_started")
        stack.callback(board.stop)
        code, seconds, stderr = compose_stop(
            "player", cloud, tmp_path, started="player_started", after=PLAYER_SECONDS
        )
        assert code == 0, stderr
        assert seconds < 1, f"the player took {seconds:.2f} s to stop"
        worked = compose_run("worker", cloud, extra=("--burst",))
        assert worked.returncode == 0, worked.stderr
        logs = [json.loads(line) for line in worked.stdout.splitlines() if line.startswith("{")]
        assert "worker_started" in [entry["event"] for entry in logs], "JSON logs, as compose sets"

        windows = await scan_windows(clients, settings)
        stored: list[dict[str, Any]] = [
            {"eventId": t, "drink": d, "duration": w.window.duration, "samples": w.window.samples}
            for (t, d), w in sorted(windows.items())
        ]
        assert sum(row["samples"] for row in stored) > 0, "orders were paired and stored"

        details: list[dict[str, Any]] = []
        while True:
            response = await clients.sqs.receive_message(
                QueueUrl=capture, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            if not response.get("Messages"):
                break
            for message in response["Messages"]:
                body = json.loads(message["Body"])
                if body["detail-type"] == AVERAGE_DETAIL_TYPE:  # estimates come too
                    details.append(body["detail"])
                await clients.sqs.delete_message(
                    QueueUrl=capture, ReceiptHandle=message["ReceiptHandle"]
                )
        assert latest_by_key(details) == stored, "the latest average of each key was published"

        # The board followed the same events through its own queue.
        shown = await board.averages_when(stored)
        assert shown == stored, "the board shows the latest average of each key"
        board_code, board_err = board.stop()
        assert board_code == 0, board_err
