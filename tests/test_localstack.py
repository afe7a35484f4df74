"""testing/localstack.py: loopback only, files under .tools, a port it does not own is
refused, and a LocalStack that ignores SIGTERM is killed after its deadline."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing.localstack import port_is_taken, stop_process
from tests.helpers import ROOT, Cloud

pytestmark = pytest.mark.integration


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.parametrize("cloud", ["localstack"], indirect=True)
def test_it_listens_on_loopback_only_and_keeps_its_files_under_tools(cloud: Cloud) -> None:
    localstack = cloud.localstack
    assert localstack is not None
    port = int(localstack.url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else
    assert localstack.server_pid is not None
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{localstack.server_pid}/environ").read_text().split("\0")
        if "=" in item
    )
    tools = str(ROOT / ".tools")
    for name in ("FILESYSTEM_ROOT", "HOME", "XDG_CACHE_HOME"):
        assert environ[name].startswith(tools), name
    assert environ["OVERRIDE_IN_DOCKER"] == "0"
    assert environ["GATEWAY_LISTEN"] == f"127.0.0.1:{port}"


def test_a_taken_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert port_is_taken(port)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "testing.localstack",
                "--python",
                str(tmp_path / "never-run"),
                "--root",
                str(tmp_path),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port} is taken" in result.stderr
    assert result.stdout == ""


def test_a_server_deaf_to_sigterm_is_killed_after_the_deadline() -> None:
    deaf = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert deaf.stdout is not None and deaf.stdout.readline() == b"ready\n"
    started = time.monotonic()
    stop_process(deaf, deadline=0.5)
    assert deaf.returncode == -9
    assert time.monotonic() - started < 5
    deaf.stdout.close()
