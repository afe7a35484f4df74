"""The images the ``containers`` tier runs: pulled where a registry answers, else stand-ins.

Each image the default profile of docker-compose.yml names (and the Dockerfile's two bases)
is used as it is when the engine has it and it is not a stand-in, else pulled; where the
pull fails (no registry can be reached here), a stand-in is built under the same tag from
``standins/<name>/`` (Debian and PyPI packages only; each file there says how it differs
from the real image). A stand-in carries the label ``wait-times.standin``: a digest of its
definition and of the stand-ins it is built on, so a changed definition is rebuilt and an
unchanged one costs nothing. Then the project's image is built from the Dockerfile as
``docker compose up --build`` would, except for the deviations the test module lists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STANDINS = HERE / "standins"
LABEL = "wait-times.standin"
ENGINE_CLI = Path("/usr/bin/docker")


def build_cli() -> str:
    """The engine's own CLI (Debian's docker.io, 20.10), whose built-in BuildKit runs the
    Dockerfile's RUN --mount; a newer CLI (28 in /usr/local/bin) needs the buildx plugin,
    which cannot be installed here. Looked up when a build starts, not at import: on a
    new machine engine.sh installs docker.io after the tests are collected."""
    return str(ENGINE_CLI) if ENGINE_CLI.exists() else "docker"


PULL_SECONDS = 120
BUILD_SECONDS = 900
PYTHON = "python:3.11.14-slim-bookworm"
UV = "ghcr.io/astral-sh/uv:0.13.9"
MOTO = "wait-times-standin/moto:local"  # the tier's compose override names it


def locked_version(package: str) -> str:
    """The version uv.lock pins for ``package``."""
    found = re.search(
        rf'^name = "{re.escape(package)}"\nversion = "([^"]+)"$',
        (ROOT / "uv.lock").read_text(),
        re.MULTILINE,
    )
    assert found is not None, f"{package} is not in uv.lock"
    return found.group(1)


@dataclass(frozen=True)
class StandIn:
    """How to build one stand-in: ``standins/<folder>/`` holds its Dockerfile or build.sh."""

    folder: str
    bases: tuple[str, ...] = (PYTHON,)  # stand-ins it is built on (their ids enter the digest)
    context_files: tuple[str, ...] = ()  # repository files copied into the build context
    build_args: tuple[tuple[str, str], ...] = ()

    def digest(self) -> str:
        """What the built image is a function of."""
        h = hashlib.sha256()
        for path in sorted((STANDINS / self.folder).iterdir()):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        for name in self.context_files:
            h.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
        h.update(repr(self.build_args).encode())
        for base in self.bases:
            h.update(image_id(base).encode())
        return h.hexdigest()[:16]


# Tag -> stand-in, in build order (the python stand-in first: the others are built on it).
STAND_INS: dict[str, StandIn] = {
    PYTHON: StandIn("python", bases=()),
    UV: StandIn("uv"),
    "localstack/localstack:4.9.2": StandIn(
        "localstack", bases=(PYTHON, UV), context_files=("localstack-requirements.txt",)
    ),
    "prom/prometheus:v2.55.1": StandIn("prometheus"),
    MOTO: StandIn(
        "moto", bases=(PYTHON, UV), build_args=(("MOTO_VERSION", locked_version("moto")),)
    ),
}


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A docker CLI call, output captured, never raising on failure."""
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def image_id(tag: str) -> str:
    """The engine's id of ``tag``, or "" when it has no such image."""
    found = docker("image", "inspect", "--format", "{{.Id}}", tag)
    return found.stdout.strip() if found.returncode == 0 else ""


def image_labels(tag: str) -> dict[str, str] | None:
    """The labels of ``tag``, or None when the engine has no such image."""
    found = docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag)
    if found.returncode != 0:
        return None
    return json.loads(found.stdout) or {}


def build(tag: str, standin: StandIn, digest: str, log: Path) -> None:
    """Build ``standin`` as ``tag`` (output to ``log``); AssertionError with its tail if it fails."""
    folder = STANDINS / standin.folder
    if (folder / "build.sh").exists():
        command = [str(folder / "build.sh"), tag, digest]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_SECONDS, check=False
        )
    else:
        with tempfile.TemporaryDirectory(prefix=f"standin-{standin.folder}-") as context:
            shutil.copytree(folder, context, dirs_exist_ok=True)
            for name in standin.context_files:
                shutil.copy(ROOT / name, context)
            args = [f"--build-arg={k}={v}" for k, v in standin.build_args]
            command = [
                build_cli(),
                "build",
                "--network=host",
                f"--label={LABEL}={digest}",
                *args,
                "-t",
                tag,
                context,
            ]
            result = buildkit(command)
    logged(result, log, f"the stand-in {tag}")


def ensure(tag: str, log_dir: Path) -> str:
    """Make the engine hold ``tag``; says how (kept, pulled, stand-in up to date or built)."""
    standin = STAND_INS.get(tag)
    labels = image_labels(tag)
    if labels is not None and (standin is None or LABEL not in labels):
        return "present (not a stand-in)"
    digest = standin.digest() if standin is not None else ""
    if labels is not None and labels.get(LABEL) == digest:
        return "stand-in, up to date"
    if labels is None:
        pulled = docker("pull", tag, timeout=PULL_SECONDS)
        if pulled.returncode == 0:
            return "pulled"
        assert standin is not None, f"cannot pull {tag} and it has no stand-in: {pulled.stderr}"
    assert standin is not None
    started = time.monotonic()
    build(tag, standin, digest, log_dir / f"standin-{standin.folder}.log")
    return f"stand-in, built in {time.monotonic() - started:.0f} s"


def build_project(tag: str, dockerfile: Path, log: Path) -> None:
    """The project's image from a copy of the Dockerfile without its ``# syntax=`` line
    (BuildKit would pull that frontend image), with the build's network on the host's."""
    copy = dockerfile.read_text()
    dockerfile_copy = log.parent / "Dockerfile"
    dockerfile_copy.write_text(re.sub(r"^# syntax=.*\n", "", copy, count=1))
    result = buildkit(
        [build_cli(), "build", "--network=host", "-t", tag, "-f", str(dockerfile_copy), str(ROOT)]
    )
    logged(result, log, tag)


def buildkit(command: list[str]) -> subprocess.CompletedProcess[str]:
    """A ``docker build`` with BuildKit (engine 20.10 needs it for ``RUN --mount``)."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
        check=False,
        env=dict(os.environ, DOCKER_BUILDKIT="1"),
    )


def logged(result: subprocess.CompletedProcess[str], log: Path, what: str) -> None:
    """Keep a build's output in ``log``; fail naming ``what``, with the output's end."""
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (
        f"building {what} failed ({log}):\n{(result.stdout + result.stderr)[-3000:]}"
    )


def ensure_all(tags: list[str], log_dir: Path, say: Callable[[str], None]) -> None:
    """``ensure`` each tag, stand-ins in dependency order, each reported through ``say``."""
    order = [t for t in STAND_INS if t in tags] + [t for t in tags if t not in STAND_INS]
    for tag in order:
        started = time.monotonic()
        how = ensure(tag, log_dir)
        say(f"image {tag}: {how} ({time.monotonic() - started:.1f} s)")
