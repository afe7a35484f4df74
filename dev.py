#!/usr/bin/env python3
"""Developer entry point: ``python3 dev.py COMMAND [ARGS...]``.

Commands:
  demo [--duration S]   the whole service on an embedded AWS emulator, live averages, estimates
  test [PYTEST ARGS]    the test suite (``-m unit``: the pure tier, seconds)
  lint                  ruff check and ruff format --check
  format                ruff format, then ruff check --fix
  typecheck             mypy: service/ and testing/ strictly, tests/ and bench/ in default mode
  bench [PART]          the benchmark (prints figures, writes bench/out/results.json); no
                        PART: every part but the long flood (30 min), run as `bench flood`
  run COMMAND [ARGS]    any ``wait-times`` sub-command from .venv (run, provision, play, ...)
  help, -h, --help      this text

Needs only Python 3.11+. The first call builds ``.venv`` from ``uv.lock`` (uv itself is
installed from PyPI into ``.tools``), so a fresh machine needs nothing else. The first
test or benchmark run on LocalStack installs it the same way, from
``localstack-requirements.txt`` into ``.tools/localstack`` (``ensure_localstack``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools" / "uv"  # beside .tools/npm, which .ci/run fills
VENV = ROOT / ".venv"
UV_VERSION = "0.13.9"
LOCALSTACK = ROOT / ".tools" / "localstack"
LOCALSTACK_REQUIREMENTS = ROOT / "localstack-requirements.txt"


def _bin(env: Path, name: str) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin") / name


def _run(*args: str | Path, env: dict[str, str] | None = None) -> int:
    return subprocess.call([str(a) for a in args], cwd=ROOT, env=env)  # noqa: S603


def ensure_environment() -> None:
    """Create or refresh ``.venv`` exactly as the lock file says."""
    uv = _bin(TOOLS, "uv")
    if not uv.exists():
        print("dev.py: installing uv into .tools/uv ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
        if _run(_bin(TOOLS, "python"), "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"):
            sys.exit("dev.py: could not install uv from PyPI")
    env = dict(os.environ, UV_PYTHON=sys.executable, UV_PROJECT_ENVIRONMENT=str(VENV))
    if _run(uv, "sync", "--locked", "--quiet", "--all-extras", env=env):
        sys.exit(
            "dev.py: `uv sync --locked` failed (is uv.lock up to date? run `.tools/uv/bin/uv lock`)"
        )


def ensure_localstack() -> Path:
    """Install LocalStack's pinned venv into ``.tools/localstack`` unless it is there already;
    returns its interpreter. Called by the tests and the benchmark when they first need it
    (a stamp of the requirements file says whether the venv is current). Raises
    RuntimeError if pip fails."""
    python = _bin(LOCALSTACK, "python")
    wanted = hashlib.sha256(LOCALSTACK_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = LOCALSTACK / "installed-from.sha256"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    print("dev.py: installing LocalStack into .tools/localstack (once, about a minute) ...")
    sys.stdout.flush()
    venv.EnvBuilder(with_pip=True, clear=True).create(LOCALSTACK)
    command = [python, "-m", "pip", "install", "-q", "-r", LOCALSTACK_REQUIREMENTS]
    if _run(*command, env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")):
        raise RuntimeError(f"dev.py: could not install LocalStack from {LOCALSTACK_REQUIREMENTS}")
    stamp.write_text(wanted + "\n")
    return python


def main() -> int:
    """Dispatch the sub-command."""
    command, *rest = sys.argv[1:] or ["help"]
    if command not in {"demo", "test", "lint", "format", "typecheck", "bench", "run"}:
        asked = command in {"help", "-h", "--help"}
        print(__doc__, file=sys.stdout if asked else sys.stderr)
        if not asked:
            print(f"dev.py: unknown command {command!r}", file=sys.stderr)
        return 0 if asked else 2
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 is there
        sys.exit(f"dev.py: needs Python 3.11 or later, not {sys.version.split()[0]}")
    try:
        import ensurepip  # noqa: F401, PLC0415 - venv needs it to bootstrap pip
    except ImportError:
        sys.exit(
            "dev.py: this Python has no ensurepip (Debian/Ubuntu: apt-get install python3-venv)"
        )
    ensure_environment()
    python = _bin(VENV, "python")
    if command == "demo":
        return _run(_bin(VENV, "wait-times"), "demo", *rest)
    if command == "run":
        return _run(_bin(VENV, "wait-times"), *rest)
    if command == "test":
        return _run(python, "-m", "pytest", *rest)
    if command == "lint":
        return _run(python, "-m", "ruff", "check", ".") or _run(
            python, "-m", "ruff", "format", "--check", "."
        )
    if command == "format":
        return _run(python, "-m", "ruff", "format", ".") or _run(
            python, "-m", "ruff", "check", "--fix", "."
        )
    if command == "typecheck":
        return _run(python, "-m", "mypy")
    return _run(python, "-m", "bench", *rest)


if __name__ == "__main__":
    sys.exit(main())
