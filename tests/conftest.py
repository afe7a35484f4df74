"""Session checks and fixtures: data present, every test in one tier, one moto server per run."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import pytest_timeout

from service.aws.clients import open_clients
from service.aws.provision import provision
from service.tools.emulator import Emulator
from tests.helpers import CAPTURE_QUEUE, DATA, DATA_FILES, Aws, make_settings

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_ENDPOINT_URL", None)

TIERS = ("unit", "integration", "reliability")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to run without the recorded events: tests built on them would prove nothing."""
    for name in DATA_FILES:
        if not (DATA / name).is_file():
            pytest.exit(
                f"missing test data file {DATA / name} (tests/data/ is part of the repository)",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test says what it is: exactly one of the tiers (``-m unit`` must mean pure)."""
    wrong = []
    for item in items:
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {sorted(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(
            f"each test needs exactly one marker of {TIERS}: " + "; ".join(wrong[:10])
        )


# pytest-timeout's thread method, with the test named first. The signal method raises
# inside whatever runs on the main thread: here that is the session's shared event loop,
# so the failure lands in another task or a fixture (anyio may even swallow it as a
# cancellation) and leaves the loop broken for every later test. The thread method dumps
# every stack and ends the run at once; the line below says which test hung.
_timers: dict[str, threading.Timer] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """Arm the per-test timer (thread method only)."""
    if settings.method != "thread" or settings.timeout <= 0:
        return None

    def expire() -> None:
        sys.stderr.write(f"\nTIMEOUT: {item.nodeid} ran past {settings.timeout:g} s\n")
        pytest_timeout.timeout_timer(item, settings)

    timer = threading.Timer(settings.timeout, expire)
    timer.name = f"timeout {item.nodeid}"
    timer.daemon = True
    timer.start()
    _timers[item.nodeid] = timer
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    """Disarm the timer armed above."""
    timer = _timers.pop(item.nodeid, None)
    if timer is None:
        return None
    timer.cancel()
    return True


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """The moto server child process for the whole run."""
    with Emulator() as running:
        yield running


@pytest.fixture
async def aws(emulator: Emulator) -> AsyncIterator[Aws]:
    """A reset emulator with the service's resources and a capture queue provisioned."""
    emulator.reset()
    settings = make_settings(emulator)
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        resources = await provision(settings, clients, capture_queue=CAPTURE_QUEUE)
        yield Aws(settings, clients, resources, emulator)
