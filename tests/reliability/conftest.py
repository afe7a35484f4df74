"""Fixtures of the fault scenarios: the fault-injecting proxy in front of the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Cloud
from tests.reliability.proxy import FaultProxy


@pytest.fixture
def proxy(cloud: Cloud) -> Iterator[FaultProxy]:
    """A fresh proxy to the test's emulators (each service to its own), faults off."""
    with FaultProxy(cloud.urls, seed=1234) as running:
        yield running
