"""``docker compose up`` for real: the project's docker-compose.yml and Dockerfile on a
Docker engine, checked from provision to ``down -v``.

The tier starts the engine itself (``engine.sh``: Debian's docker.io and docker-compose,
``dockerd --iptables=false --ip-forward=false --bridge=none``, so the containers on the
project's network reach one another and nothing reaches outside), and is skipped, saying
why in one line, where the engine cannot start. Images no registry can give are built as
stand-ins (``images.py``, ``standins/``). Checks: ``provision`` exits 0 before any worker
starts; both worker replicas turn healthy; a worker cannot reach PyPI (which this machine
reaches); Prometheus (its published 127.0.0.1:9090, or from inside the project's network
through a worker when that port does not answer) sees both replicas up and their
per-(tenant, drink) averages and estimates; the board, healthy, shows a drink's estimate
and average in headless Chromium (a screenshot in tests/artifacts/board-compose.png);
``stop`` ends every service built from the Dockerfile with exit code 0 within its stop
grace period, and no worker abandons a flush;
``down -v`` leaves no container, network or volume of the project. The compose log's
share of LocalStack lines is printed; the whole log is attached to a failure.

Deviations from the project's files, all in this tier (docker-compose.yml and the
Dockerfile are read, never changed):

- Compose is Debian's docker-compose 1.29.2 (v1: the v2 plugin cannot be downloaded here),
  which refuses the top-level ``name:``; it runs a copy of docker-compose.yml without that
  line, with ``-p wait-times-test`` (not ``wait-times``: a developer's own stack keeps its
  containers and volumes) and ``--project-directory`` the repository.
- The project image is built before ``up`` (then ``up --no-build``) with the engine's own
  CLI (20.10) and ``DOCKER_BUILDKIT=1``, ``--network host`` (so ``uv sync`` reaches PyPI
  while the containers cannot), from a copy of the Dockerfile without its ``# syntax=``
  line (BuildKit would pull that frontend image). Compose v1 builds with the classic
  builder, which has no ``RUN --mount``.
- ``compose.override.yml``: DynamoDB on a moto container (``AWS_ENDPOINT_URL_DYNAMODB`` for
  provision, worker, player and board, which all depend on moto being healthy, so that
  ``stop`` ends them before it, as they end before LocalStack in the file), because
  LocalStack's DynamoDB downloads DynamoDB Local at first use (the LocalStack test tier
  keeps DynamoDB on moto too); LocalStack with ``EAGER_SERVICE_LOADING=0`` so it does not
  start that DynamoDB at boot (its health still reports dynamodb "available").
- ``stop`` without ``-t``, so each service's ``stop_grace_period`` (else compose's 10 s)
  applies, as with ``docker compose stop``.
- Prometheus is asked on its published 127.0.0.1:9090, which answers with
  ``--bridge=none`` (the engine's proxy forwards to the project network); were it not to,
  the test asks from inside that network through a worker and says so.
- The images python:3.11.14-slim-bookworm, ghcr.io/astral-sh/uv:0.13.9,
  localstack/localstack:4.9.2 and prom/prometheus:v2.55.1 are stand-ins wherever their
  pull fails (each ``standins/<name>/`` file says how it differs). Grafana's profile is
  left out.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from playwright.async_api import async_playwright

from testing.localstack import port_is_taken
from tests.board.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, shown
from tests.containers import images

ROOT = images.ROOT
HERE = images.HERE
COMPOSE_PATH = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_PATH.read_text())
# The default profile: Grafana's optional one is left out.
SERVICES: dict[str, Any] = {
    name: spec for name, spec in COMPOSE["services"].items() if not spec.get("profiles")
}
BUILT = sorted(name for name, spec in SERVICES.items() if "build" in spec)
PROJECT = "wait-times-test"
PROMETHEUS = "http://127.0.0.1:9090"
DEFAULT_GRACE_SECONDS = 10.0  # compose's stop timeout where stop_grace_period is not set
UP_SECONDS = 300
HEALTHY_WITHIN_SECONDS = 120
METRICS_WITHIN_SECONDS = 240
BOARD_URL = "http://127.0.0.1:8080"  # the board service's published port
BOARD_WITHIN_SECONDS = 60

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]


def seconds(duration: str | None) -> float:
    """A compose duration ("30s", "1m30s") in seconds; compose's default when unset."""
    if not duration:
        return DEFAULT_GRACE_SECONDS
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, f"unreadable duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def moment(stamp: str) -> datetime:
    """A time docker inspect reports (nanoseconds, Z) as an aware datetime."""
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed)


class Compose:
    """docker-compose v1 on a copy of docker-compose.yml and the tier's override."""

    def __init__(self, folder: Path) -> None:
        self.log_path = folder / "compose.log"
        copy = folder / "docker-compose.yml"
        copy.write_text(re.sub(r"^name: .*\n", "", COMPOSE_PATH.read_text(), flags=re.M))
        self.base = [
            "docker-compose",
            "-p",
            PROJECT,
            "--project-directory",
            str(ROOT),
            "-f",
            str(copy),
            "-f",
            str(HERE / "compose.override.yml"),
        ]
        # Only the files above say what runs: no COMPOSE_FILE or profile from the shell.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
            env=self.env,
        )

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """docker inspect of the project's containers (of one service), by name."""
        filters = ["--filter", f"label=com.docker.compose.project={PROJECT}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = images.docker("ps", "-aq", *filters).stdout.split()
        if not ids:
            return []
        found = json.loads(images.docker("inspect", *ids).stdout)
        return sorted(found, key=lambda c: c["Name"])

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes labelled with the project."""
        label = f"label=com.docker.compose.project={PROJECT}"
        return {
            "containers": images.docker("ps", "-aq", "--filter", label).stdout.split(),
            "networks": images.docker("network", "ls", "-q", "--filter", label).stdout.split(),
            "volumes": images.docker("volume", "ls", "-q", "--filter", label).stdout.split(),
        }


def service_of(line: str) -> str | None:
    """The service a compose log line comes from (v1 ``name_1  |``, v2 ``name-1  |``)."""
    found = re.match(r"^(\S+?)[_-]\d+\s+\| ", line)
    return found.group(1) if found else None


def localstack_share(log: str) -> tuple[int, int]:
    """(LocalStack's lines, all service lines) of a ``logs --no-color`` output."""
    services = [service_of(line) for line in log.splitlines()]
    counted = [s for s in services if s is not None]
    return sum(1 for s in counted if s == "localstack"), len(counted)


def wait_for(
    what: str,
    check: Callable[[], Any],
    within: float,
    done: Callable[[Any], bool] = bool,
    every: float = 2.0,
) -> Any:
    """``check()`` until ``done`` holds for its value (by default: until it is true);
    AssertionError naming ``what`` after ``within`` seconds, with the last value seen."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if done(last):
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {within:.0f} s (last: {last!r})")


class Prometheus:
    """Prometheus's HTTP API: the published port, else from a worker on the project network."""

    def __init__(self, compose: Compose) -> None:
        self.compose = compose
        self.via: str | None = None

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to ([] while Prometheus does not answer)."""
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        answer = self._published(path) if self.via != "network" else None
        if answer is None:
            answer = self._from_network(path)
        if answer is None:
            return []
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def _published(self, path: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(PROMETHEUS + path, timeout=5) as response:  # noqa: S310 - loopback
                self.via = "published port 127.0.0.1:9090"
                answer: dict[str, Any] = json.load(response)
                return answer
        except (OSError, ValueError):
            return None

    def _from_network(self, path: str) -> dict[str, Any] | None:
        workers = self.compose.containers("worker")
        if not workers:
            return None
        script = (
            "import sys, urllib.request as u;"
            f"sys.stdout.write(u.urlopen('http://prometheus:9090{path}', timeout=5).read().decode())"
        )
        done = images.docker("exec", workers[0]["Id"], "python", "-c", script)
        if done.returncode != 0:
            return None
        self.via = "network"  # the published port did not answer: say so once
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer


def finite(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in series if math.isfinite(float(s["value"][1]))]


@pytest.fixture(scope="module")
def say(pytestconfig: pytest.Config) -> Iterator[Callable[[str], None]]:
    """Print to the terminal whatever pytest captures (progress and timings of a slow tier)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"containers: {line}", flush=True)

    yield say


@pytest.fixture(scope="module")
def engine(say: Callable[[str], None]) -> None:
    """A Docker engine that answers (installed and started by engine.sh), else a loud skip."""
    started = time.monotonic()
    done = subprocess.run(
        [str(HERE / "engine.sh")], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["engine.sh failed"])[-1]
        say(f"SKIPPED, no Docker engine: {reason}")
        pytest.skip(f"containers tier: no Docker engine: {reason}")
    say(f"Docker engine answers ({time.monotonic() - started:.1f} s)")


@pytest.fixture(scope="module")
def stack(
    engine: None, say: Callable[[str], None], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Compose]:
    """Images ready and nothing of the project left over; ``down -v`` whatever happens."""
    folder = tmp_path_factory.mktemp("compose")
    compose = Compose(folder)
    compose("down", "-v", "--remove-orphans")  # what an interrupted run left
    published = sorted(
        int(port.split(":")[1])
        for spec in SERVICES.values()
        for port in spec.get("ports", [])
        if port.startswith("127.0.0.1:")
    )
    taken = [port for port in published if port_is_taken(port)]
    assert not taken, f"127.0.0.1 ports {taken} are taken (another compose stack?): stop it first"
    started = time.monotonic()
    names = {spec["image"] for spec in SERVICES.values() if "build" not in spec}
    bases = re.findall(
        r"^(?:ARG PYTHON_IMAGE=|FROM )(\S+:\S+)", (ROOT / "Dockerfile").read_text(), re.M
    )
    images.ensure_all(sorted(names | set(bases) | {images.MOTO}), folder, say)
    built = time.monotonic()
    tags = {SERVICES[name]["image"] for name in BUILT}
    assert len(tags) == 1, f"services built from the Dockerfile under several tags: {tags}"
    (tag,) = tags
    images.build_project(tag, ROOT / "Dockerfile", folder / "build-project.log")
    say(
        f"images ready in {time.monotonic() - started:.0f} s "
        f"(project image {tag}: {time.monotonic() - built:.0f} s)"
    )
    try:
        yield compose
    finally:
        compose("down", "-v", "--remove-orphans", timeout=180)


async def board_cards(url: str) -> dict[str, dict[str, str]]:
    """Open the board in headless Chromium and wait until some drink shows an estimate and
    an average; each drink card's figures."""
    async with async_playwright() as playwright:
        with tempfile.TemporaryDirectory() as profile:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 360, "height": 740},
            )
            try:
                page = await context.new_page()
                await page.goto(url)
                await page.wait_for_selector("#status[data-state=live]", timeout=30_000)
                cards: dict[str, dict[str, str]] = {}
                with anyio.move_on_after(BOARD_WITHIN_SECONDS):
                    while not any(
                        row.get("estimate", "pending") != "pending"
                        and row.get("average", "pending") != "pending"
                        for row in cards.values()
                    ):
                        await anyio.sleep(0.5)
                        cards = await shown(page)
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "board-compose.png"), full_page=True)
            finally:
                await context.close()
    assert any(
        row.get("estimate", "pending") != "pending" and row.get("average", "pending") != "pending"
        for row in cards.values()
    ), f"no drink with an estimate and an average on {url}: {cards}"
    return cards


def test_compose_up_runs_the_stack_and_stops_cleanly(
    stack: Compose, say: Callable[[str], None], request: pytest.FixtureRequest
) -> None:
    compose = stack
    log = ""
    started = time.monotonic()
    try:
        up = compose("up", "-d", "--no-build", timeout=UP_SECONDS)
        assert up.returncode == 0, up.stdout + up.stderr
        say(f"up -d returned in {time.monotonic() - started:.0f} s")

        # provision: exited 0, and before any worker started.
        (provisioned,) = compose.containers("provision")
        assert provisioned["State"]["Status"] == "exited"
        assert provisioned["State"]["ExitCode"] == 0
        workers = compose.containers("worker")
        assert len(workers) == SERVICES["worker"]["deploy"]["replicas"] == 2
        for worker in workers:
            assert moment(provisioned["State"]["FinishedAt"]) <= moment(
                worker["State"]["StartedAt"]
            ), worker["Name"]

        def health() -> list[str]:
            states = [
                c["State"].get("Health", {}).get("Status") for c in compose.containers("worker")
            ]
            assert "unhealthy" not in states, states
            return states if states == ["healthy", "healthy"] else []

        wait_for("both workers healthy", health, HEALTHY_WITHIN_SECONDS)
        say(f"both workers healthy after {time.monotonic() - started:.0f} s")

        # The network: nothing outside answers (PyPI, which this machine reaches, included).
        try:
            found = socket.getaddrinfo("pypi.org", 443, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            found = []
        if found:
            outside = found[0][4][0]
            probe = (
                "import socket\n"
                "try:\n"
                f"    socket.create_connection(({outside!r}, 443), timeout=3)\n"
                "except OSError:\n"
                "    raise SystemExit(0)\n"
                "raise SystemExit('reached')\n"
            )
            reached = images.docker("exec", workers[0]["Id"], "python", "-c", probe)
            assert reached.returncode == 0, f"a worker reached {outside}:443: {reached.stderr}"
        else:
            say("pypi.org does not resolve on this machine: the no-way-out check is skipped")

        # Prometheus: both replicas scraped, their averages and estimates per key.
        addresses = {
            f"{c['NetworkSettings']['Networks'][f'{PROJECT}_default']['IPAddress']}:9102"
            for c in compose.containers("worker")
        }
        prometheus = Prometheus(compose)

        def both_up() -> set[str]:
            series = prometheus.query('up{job="wait-times"} == 1')
            return {s["metric"]["instance"] for s in series}

        # One replica's first scrape may come a scrape interval before the other's.
        wait_for(
            "both replicas up in Prometheus",
            both_up,
            METRICS_WITHIN_SECONDS,
            done=lambda instances: instances == addresses,
        )
        averages = wait_for(
            "averages in Prometheus",
            lambda: finite(prometheus.query("wait_times_average_wait_seconds")),
            METRICS_WITHIN_SECONDS,
        )
        estimates = wait_for(
            "estimates in Prometheus",
            lambda: finite(prometheus.query("wait_times_estimate_seconds")),
            METRICS_WITHIN_SECONDS,
        )
        for series in (averages, estimates):
            assert all(s["metric"]["tenant"] and s["metric"]["drink"] for s in series)
            assert {s["metric"]["instance"] for s in series} <= addresses
        say(
            f"Prometheus (through the {prometheus.via}): 2 replicas up, "
            f"{len(averages)} averages, {len(estimates)} estimates "
            f"after {time.monotonic() - started:.0f} s"
        )

        # The board, in Chromium: the averages and estimates a customer sees.
        def board_healthy() -> bool:
            (board,) = compose.containers("board")
            return board["State"].get("Health", {}).get("Status") == "healthy"

        wait_for("the board healthy", board_healthy, HEALTHY_WITHIN_SECONDS)
        tenant = estimates[0]["metric"]["tenant"]
        cards = anyio.run(board_cards, f"{BOARD_URL}/tenants/{urllib.parse.quote(tenant)}")
        say(
            f"the board shows {len(cards)} drinks for {tenant} "
            f"(screenshot {ARTIFACTS / 'board-compose.png'})"
        )

        # stop: every service built from the Dockerfile ends with 0, within its grace period.
        volumes = {
            m["Name"] for c in compose.containers() for m in c["Mounts"] if m["Type"] == "volume"
        }
        stopping = time.monotonic()
        stop_began = datetime.now().astimezone()
        stopped = compose("stop", timeout=180)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        say(f"stop took {time.monotonic() - stopping:.1f} s")
        ended: dict[str, float] = {}
        for name in BUILT:
            grace = seconds(SERVICES[name].get("stop_grace_period"))
            for container in compose.containers(name):
                state = container["State"]
                assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == (
                    "exited",
                    0,
                    False,
                ), (container["Name"], state)
                if name != "provision":  # provision had ended long before
                    took = (moment(state["FinishedAt"]) - stop_began).total_seconds()
                    assert took <= grace, (container["Name"], took, grace)
                    ended[container["Name"].lstrip("/")] = took
        say(
            "exit 0 within the grace period: "
            + ", ".join(f"{n} {t:.1f} s" for n, t in ended.items())
        )

        logs = compose("logs", "--no-color", timeout=120)
        log = logs.stdout + logs.stderr
        ours, total = localstack_share(log)
        say(
            f"compose log: {total} lines, {ours} from LocalStack ({ours / max(total, 1):.0%}); "
            f"kept in {compose.log_path}"
        )

        abandoned = [
            line
            for line in log.splitlines()
            if service_of(line) == "worker" and "flush_abandoned_at_shutdown" in line
        ]
        # The workers depend on LocalStack directly, so `stop` ends them first: their
        # drain reaches the queue and the table (docs/deploying.md).
        assert not abandoned, abandoned

        # down -v: nothing of the project is left.
        down = compose("down", "-v", timeout=180)
        assert down.returncode == 0, down.stdout + down.stderr
        assert compose.leftovers() == {"containers": [], "networks": [], "volumes": []}
        remaining = images.docker("volume", "ls", "-q").stdout.split()
        assert not volumes & set(remaining), "anonymous volumes outlived down -v"
        say(f"down -v left nothing; the whole run took {time.monotonic() - started:.0f} s")
    finally:
        if not log and compose.containers():
            logs = compose("logs", "--no-color", timeout=120)
            log = logs.stdout + logs.stderr
        if log:
            compose.log_path.write_text(log)
            # Shown with the failure report only (pytest prints a report's sections then).
            request.node.add_report_section("call", "docker-compose logs", log)
