"""The pure core imports no I/O library, so replay and the unit tests stay microsecond-fast."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

CORE = (
    "service.core.orders",
    "service.core.consumed",
    "service.core.published",
    "service.core.window",
    "service.core.pairing",
    "service.core.commit",
    "service.core.rounds",
    "service.lru",
    "service.tools.replay",
)
IO_LIBRARIES = ("aiobotocore", "botocore", "anyio", "aiohttp", "prometheus_client", "moto")


def test_core_modules_pull_in_no_io_library() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + f"print(sorted(m for m in {IO_LIBRARIES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
