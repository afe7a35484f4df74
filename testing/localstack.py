"""LocalStack in host mode, the emulator users run (``docker compose up``), for SQS and EventBridge.

The tests and the benchmark run the service on it as well as on moto (DynamoDB stays on
moto: LocalStack's needs Amazon's DynamoDB Local and a JDK, downloaded at first use).
LocalStack lives in its own pinned virtual environment (``python3 dev.py`` installs it into
``.tools/localstack`` from ``localstack-requirements.txt``); this module only runs it.

``python -m testing.localstack --python <its python> --root <folder>`` starts it on
loopback, prints ``listening <url> <pid>`` once SQS and EventBridge answer, and stops it
when its standard input closes (so it never outlives its parent) or on SIGTERM. It refuses
to start while the port is taken. LocalStack can hang in "Stopping all services" after
SIGTERM, so it gets a deadline and is then killed; and it dies with this process
(``PR_SET_PDEATHSIG``) even if this one is killed outright.

``LocalStack`` runs that as a child, like ``Emulator`` runs moto, and resets it by deleting
every queue, rule and custom bus (community LocalStack has no reset endpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from service.tools.emulator import READY_PREFIX, Emulator

VERSION = "4.9.2"  # the tag docker-compose.yml pins; what localstack-requirements.txt installs
# What the worker uses, and what the stack test creates through CloudFormation (loaded
# lazily: a service costs nothing until its first request).
SERVICES = ("sqs", "events", "cloudformation", "iam", "cloudwatch", "logs")
LOOPBACK = "127.0.0.1"
STOP_DEADLINE_SECONDS = 5.0
READY_WITHIN_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


class LocalStack(Emulator):
    """A LocalStack child process (through this module's ``main``)."""

    stop_timeout = STOP_DEADLINE_SECONDS + 5.0

    def __init__(
        self,
        python: Path,
        root: Path,
        *,
        port: int = 0,
        services: tuple[str, ...] = SERVICES,
        region: str = "us-east-1",
    ) -> None:
        super().__init__(LOOPBACK, port)
        self.python = python
        self.root = root
        self.services = services
        self.region = region
        self._clients: dict[str, Any] = {}

    def command(self) -> list[str]:
        """``python -m testing.localstack`` with this instance's options."""
        return [
            sys.executable,
            "-m",
            "testing.localstack",
            "--python",
            str(self.python),
            "--root",
            str(self.root),
            "--port",
            str(self.port),
            "--services",
            ",".join(self.services),
        ]

    def client(self, service: str) -> Any:
        """A plain (synchronous) botocore client on this LocalStack, for resetting it."""
        if service not in self._clients:
            import botocore.session  # noqa: PLC0415 - only resetting needs it

            self._clients[service] = botocore.session.get_session().create_client(
                service,
                region_name=self.region,
                endpoint_url=self.url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 - LocalStack takes any
            )
        return self._clients[service]

    def reset(self) -> None:
        """Delete every queue, rule (targets first) and custom bus in ``region``."""
        if "sqs" in self.services:
            sqs = self.client("sqs")
            for page in sqs.get_paginator("list_queues").paginate():
                for url in page.get("QueueUrls", []):
                    sqs.delete_queue(QueueUrl=url)
        if "events" in self.services:
            events = self.client("events")
            for bus in events.list_event_buses().get("EventBuses", []):
                name = bus["Name"]
                for rule in events.list_rules(EventBusName=name).get("Rules", []):
                    targets = events.list_targets_by_rule(Rule=rule["Name"], EventBusName=name)
                    ids = [t["Id"] for t in targets.get("Targets", [])]
                    if ids:
                        events.remove_targets(Rule=rule["Name"], EventBusName=name, Ids=ids)
                    events.delete_rule(Name=rule["Name"], EventBusName=name)
                if name != "default":
                    events.delete_event_bus(Name=name)

    def stop(self) -> None:
        """Stop the child (LocalStack gets its deadline, then SIGKILL)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        super().stop()


def port_is_taken(port: int, host: str = LOOPBACK) -> bool:
    """Whether something listens on ``host:port`` (a bind as a server would do it)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def environment(root: Path, port: int, services: tuple[str, ...]) -> dict[str, str]:
    """LocalStack's configuration: host mode, loopback only, nothing outside ``root``.

    OVERRIDE_IN_DOCKER=0: this machine may itself be a container, and LocalStack in "docker"
    mode writes under /var/lib and /etc. GATEWAY_SERVER=hypercorn: the default server binds
    every interface. SQS_ENDPOINT_STRATEGY=path and LOCALSTACK_HOST: queue URLs on the
    gateway's own address (by default they name sqs.<region>.localhost.localstack.cloud,
    a public DNS name). DNS_ADDRESS=0: no DNS
    server. DISABLE_EVENTS=1: LocalStack's usage analytics (not EventBridge) stay off.
    SKIP_SSL_CERT_DOWNLOAD=1: a self-signed certificate instead of a download.
    """
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "HOME": str(root / "home"),
            "XDG_CACHE_HOME": str(root / "cache"),
            "FILESYSTEM_ROOT": str(root / "filesystem"),
            "OVERRIDE_IN_DOCKER": "0",
            "GATEWAY_LISTEN": f"{LOOPBACK}:{port}",
            "LOCALSTACK_HOST": f"{LOOPBACK}:{port}",
            "GATEWAY_SERVER": "hypercorn",
            "SQS_ENDPOINT_STRATEGY": "path",
            "DNS_ADDRESS": "0",
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "SERVICES": ",".join(services),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def health(url: str) -> dict[str, Any]:
    """LocalStack's /_localstack/health answer."""
    with urllib.request.urlopen(f"{url}/_localstack/health", timeout=2) as response:  # noqa: S310 - loopback
        answer: dict[str, Any] = json.load(response)
        return answer


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the launcher dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _Stop(Exception):
    """SIGTERM or SIGINT reached the launcher."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def serve(python: Path, root: Path, port: int, services: tuple[str, ...]) -> int:
    """Run LocalStack until stdin closes or SIGTERM; 1 if it cannot start."""
    if port and port_is_taken(port):
        print(f"localstack: 127.0.0.1:{port} is taken; not starting", file=sys.stderr)
        return 1
    port = port or free_port()
    run_root = root / str(port)
    shutil.rmtree(run_root, ignore_errors=True)
    for folder in ("home", "cache", "filesystem"):
        (run_root / folder).mkdir(parents=True)
    log_path = run_root / "localstack.log"
    url = f"http://{LOOPBACK}:{port}"
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    process: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 - the pinned LocalStack, fixed arguments
                [str(python), "-m", "localstack.runtime.main"],
                env=environment(run_root, port, services),
                cwd=run_root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - this launcher has one thread
            )
        if not _wait_ready(process, url, services):
            tail = log_path.read_text(errors="replace")[-3000:]
            print(f"localstack: did not start on {url}:\n{tail}", file=sys.stderr)
            return 1
        print(f"{READY_PREFIX}{url} {process.pid}", flush=True)
        sys.stdin.read()  # until the parent closes it (or dies), or a signal stops us
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the stop below is not interrupted
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if process is not None:
            stop_process(process)
        shutil.rmtree(run_root, ignore_errors=True)
    return 0


def _wait_ready(process: subprocess.Popen[bytes], url: str, services: tuple[str, ...]) -> bool:
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            states = health(url).get("services", {})
        except (OSError, ValueError):
            states = {}
        if all(states.get(name) in ("available", "running") for name in services):
            # The answer came from our child only if it is still alive and nothing else
            # could have taken the port between the check and its bind.
            return process.poll() is None
        time.sleep(0.05)
    return False


def stop_process(process: subprocess.Popen[bytes], deadline: float = STOP_DEADLINE_SECONDS) -> None:
    """SIGTERM to LocalStack's process group, SIGKILL past ``deadline`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=deadline)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # what is left of the group
    process.wait()


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description="LocalStack (host mode) for wait-times")
    parser.add_argument("--python", type=Path, required=True, help="LocalStack's interpreter")
    parser.add_argument("--root", type=Path, required=True, help="folder for its files")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--services", default=",".join(SERVICES))
    args = parser.parse_args()
    services = tuple(s for s in args.services.split(",") if s)
    # absolute, not resolved: a venv's interpreter is a symlink that must stay in the venv
    sys.exit(serve(args.python.absolute(), args.root.absolute(), args.port, services))


if __name__ == "__main__":
    main()
