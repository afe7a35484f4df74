"""SIGTERM and SIGINT stop every command cleanly, as PID 1 (a container's) or not.

Real ``wait-times`` processes from the virtual environment, against the emulator. The PID 1
cases run the command as the first process of a new PID namespace (``unshare``), where,
as in a container with ``init: false``, a signal without a handler is ignored: a command
that installs none would sit out compose's grace period and be killed.

- ``run`` and ``play`` exit 0 on a requested stop; ``play`` within a second.
- An interrupted ``provision`` exits 128 + the signal (130, 143) within a second, so compose's
  ``service_completed_successfully`` never starts workers on a half-made stack.
- ``replay`` (work that never awaits) exits 130/143 as well.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.tools.emulator import Emulator
from tests.helpers import Aws, as_envelopes, generated
from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.integration

WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))
# PID 1 of a new PID namespace, unprivileged (a user namespace maps us to root in it).
UNSHARE = ("unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child")
SIGNALS = pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
AS_PID1 = pytest.mark.parametrize("pid1", [False, True], ids=["child", "pid1"])


@functools.cache
def pid1_unavailable() -> str | None:
    """Why commands cannot be run as PID 1 here, or None when they can."""
    if shutil.which(UNSHARE[0]) is None:
        return "no unshare"
    result = subprocess.run(
        [*UNSHARE, "true"], capture_output=True, text=True, timeout=30, check=False
    )
    return None if result.returncode == 0 else f"unshare refused: {result.stderr.strip()}"


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.02)


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open now."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:  # closed meanwhile
            continue
    return False


class Command:
    """A ``wait-times`` child process; its output goes to files (a pipe could fill)."""

    def __init__(self, folder: Path, env: dict[str, str], *args: str, pid1: bool) -> None:
        if pid1 and (reason := pid1_unavailable()):
            pytest.skip(f"cannot run a command as PID 1 here: {reason}")
        self.out_path = folder / "stdout.log"
        self.err_path = folder / "stderr.log"
        # Append mode: the child's writes never land over what the test has read.
        with self.out_path.open("a") as out, self.err_path.open("a") as err:
            self.process = subprocess.Popen(
                [*(UNSHARE if pid1 else ()), WAIT_TIMES, *args],
                stdout=out,
                stderr=err,
                env=env,
            )
        self.pid = self._namespace_init() if pid1 else self.process.pid

    def _namespace_init(self) -> int:
        """The command's PID (unshare forks it), checked to be PID 1 of its namespace."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        wait_for(lambda: bool(children.read_text().split()), 10, "unshare to fork")
        pid = int(children.read_text().split()[0])
        status = Path(f"/proc/{pid}/status").read_text()
        namespace_pids = next(line for line in status.splitlines() if line.startswith("NSpid:"))
        assert namespace_pids.split()[-1] == "1", namespace_pids
        return pid

    def logs(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in self.out_path.read_text().splitlines()
            if line.startswith("{") and line.endswith("}")
        ]

    def logged(self, event: str) -> bool:
        return any(entry.get("event") == event for entry in self.logs())

    def stderr(self) -> str:
        return self.err_path.read_text()

    def stop(self, signum: int) -> tuple[int, float]:
        """Send ``signum`` to the command; its exit code and how long it took to exit."""
        assert self.process.poll() is None, self.stderr()[-2000:]
        signalled = time.monotonic()
        os.kill(self.pid, signum)
        code = self.process.wait(timeout=30)
        return code, time.monotonic() - signalled

    def close(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait()


@pytest.fixture
def command(tmp_path: Path) -> Iterator[Callable[..., Command]]:
    started: list[Command] = []

    def start(env: dict[str, str], *args: str, pid1: bool) -> Command:
        folder = tmp_path / f"command-{len(started)}"
        folder.mkdir()
        started.append(Command(folder, env, *args, pid1=pid1))
        return started[-1]

    yield start
    for each in started:
        each.close()


def environment(endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAIT_TIMES_", "AWS_"))}
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "WAIT_TIMES_LOG_FORMAT": "json",
            "WAIT_TIMES_METRICS_PORT": "0",
            "WAIT_TIMES_METRICS_HOST": "127.0.0.1",
            "WAIT_TIMES_RECEIVE_WAIT_SECONDS": "1",
        }
    )
    env.update(extra)
    return env


@SIGNALS
@AS_PID1
def test_play_stops_at_once_and_exits_0(
    aws: Aws, command: Callable[..., Command], signum: int, pid1: bool
) -> None:
    # The compose player's kind of run: until stopped, its clock catching up.
    player = command(
        environment(aws.cloud.url, **aws.cloud.env()),
        "play",
        "--rate",
        "2",
        "--speed",
        "30",
        pid1=pid1,
    )
    wait_for(lambda: player.logged("player_started"), 30, "the player to start")
    time.sleep(0.5)  # mid-traffic
    code, seconds = player.stop(signum)
    assert code == 0, player.stderr()[-2000:]
    assert seconds < 1, f"play took {seconds:.2f}s to stop"
    assert player.stderr() == ""
    assert player.logged("stopped")


@SIGNALS
@AS_PID1
def test_an_interrupted_provision_exits_128_plus_the_signal(
    emulator: Emulator, command: Callable[..., Command], signum: int, pid1: bool
) -> None:
    emulator.reset()
    with FaultProxy(emulator.url) as proxy:
        # Provisioning is under way and waiting on AWS when the signal comes.
        proxy.hold("DescribeEventBus")
        provision = command(environment(proxy.url), "provision", pid1=pid1)
        try:
            wait_for(lambda: proxy.held["DescribeEventBus"] > 0, 30, "provision to call AWS")
            code, seconds = provision.stop(signum)
        finally:
            proxy.release(drop=True)
    assert code == 128 + signum, provision.stderr()[-2000:]
    assert seconds < 1, f"provision took {seconds:.2f}s to stop"
    lines = provision.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"stopped by {signal.Signals(signum).name}" in lines[0]
    assert "run it again" in lines[0]


@SIGNALS
@AS_PID1
def test_the_worker_drains_and_exits_0(
    aws: Aws, command: Callable[..., Command], signum: int, pid1: bool
) -> None:
    worker = command(environment(aws.cloud.url, **aws.cloud.env()), "run", pid1=pid1)
    wait_for(lambda: worker.logged("worker_started"), 30, "the worker to start")
    code, seconds = worker.stop(signum)
    assert code == 0, worker.stderr()[-2000:]
    assert seconds < 30
    assert worker.logged("signal_received")


@SIGNALS
@AS_PID1
def test_a_worker_waiting_for_its_endpoint_stops_too(
    emulator: Emulator, command: Callable[..., Command], signum: int, pid1: bool
) -> None:
    with FaultProxy(emulator.url) as proxy:
        proxy.refuse()
        worker = command(environment(proxy.url), "run", pid1=pid1)
        wait_for(lambda: worker.logged("aws_unreachable"), 30, "the worker to wait")
        code, seconds = worker.stop(signum)
    assert code == 0, worker.stderr()[-2000:]
    assert seconds < 5


@SIGNALS
@AS_PID1
def test_replay_stops_mid_file(
    tmp_path: Path, command: Callable[..., Command], signum: int, pid1: bool
) -> None:
    # Work that never awaits: the signal handler itself ends it.
    recording = tmp_path / "orders.jsonl"
    with recording.open("w") as out:
        for envelope in as_envelopes(generated(3000, seed=2), "awsserverlessda.serverlesspresso"):
            out.write(json.dumps(envelope) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAIT_TIMES_", "AWS_"))}
    replay = command(env, "replay", *[str(recording)] * 2000, pid1=pid1)
    wait_for(lambda: has_open(replay.pid, recording), 30, "replay to read the file")
    code, seconds = replay.stop(signum)
    assert code == 128 + signum, replay.stderr()[-2000:]
    assert seconds < 1
    lines = replay.stderr().strip().splitlines()
    assert lines == [
        f"wait-times replay: stopped by {signal.Signals(signum).name} before it finished"
    ]
