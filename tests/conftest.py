"""Session checks and fixtures: data present, every test in one tier, the emulators.

One moto server per run, and one LocalStack (installed on first use) if a test selected
for the run needs it. A test that asks for ``cloud`` (or ``aws``, built on it) runs once on
each emulator ``--emulator`` selects (default: both).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import pytest_timeout

from service.aws.clients import open_clients
from service.aws.provision import provision
from service.tools.emulator import Emulator
from testing.localstack import LocalStack
from tests.helpers import (
    CAPTURE_QUEUE,
    DATA,
    DATA_FILES,
    EMULATORS,
    ROOT,
    Aws,
    Cloud,
    make_settings,
)

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
# Endpoints come from the emulators, never from the shell that started the run: every
# variable botocore would read for them goes (child processes inherit this environment).
for _name in list(os.environ):
    if _name.startswith("AWS_ENDPOINT_URL") or _name == "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS":
        del os.environ[_name]

TIERS = ("unit", "integration", "reliability", "containers")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--emulator",
        choices=(*EMULATORS, "both"),
        default="both",
        help="the AWS emulator under the end-to-end tests: moto, localstack or both (default)",
    )


def selected_emulators(config: pytest.Config) -> tuple[str, ...]:
    chosen = config.getoption("--emulator")
    return EMULATORS if chosen == "both" else (chosen,)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test on ``cloud`` runs on every emulator, unless it parametrizes ``cloud`` itself."""
    if "cloud" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "cloud" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return
    metafunc.parametrize("cloud", EMULATORS, indirect=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to run without the recorded events: tests built on them would prove nothing."""
    for name in DATA_FILES:
        if not (DATA / name).is_file():
            pytest.exit(
                f"missing test data file {DATA / name} (tests/data/ is part of the repository)",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test says what it is: exactly one of the tiers (``-m unit`` must mean pure).
    Tests on an emulator ``--emulator`` did not select are deselected."""
    chosen = selected_emulators(config)
    deselected = [
        item
        for item in items
        if getattr(item, "callspec", None) is not None
        and item.callspec.params.get("cloud", chosen[0]) not in chosen  # type: ignore[attr-defined]
    ]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
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


@pytest.fixture(scope="session")
def localstack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """LocalStack (SQS, EventBridge) for the whole run, installed on first use by dev.py."""
    import dev  # noqa: PLC0415 - the repository's dev.py owns the .tools installs

    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # the one-time install says what it does
        python = dev.ensure_localstack()
    with LocalStack(Path(python), ROOT / ".tools" / "localstack-run") as running:
        yield running


@pytest.fixture
def cloud(request: pytest.FixtureRequest, emulator: Emulator) -> Cloud:
    """The emulator under the test (a parameter: see ``pytest_generate_tests``), reset."""
    name = request.param
    if name == "moto":
        chosen = Cloud("moto", emulator)
    else:
        chosen = Cloud("localstack", emulator, request.getfixturevalue("localstack"))
    chosen.reset()
    return chosen


@pytest.fixture
async def aws(cloud: Cloud) -> AsyncIterator[Aws]:
    """A reset emulator with the service's resources and a capture queue provisioned."""
    settings = make_settings(cloud)
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        resources = await provision(settings, clients, capture_queue=CAPTURE_QUEUE)
        yield Aws(settings, clients, resources, cloud)
