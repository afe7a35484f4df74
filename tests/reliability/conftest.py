"""Fixtures of the fault scenarios: the fault-injecting proxy in front of the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.tools.emulator import Emulator
from tests.reliability.proxy import FaultProxy


@pytest.fixture
def proxy(emulator: Emulator) -> Iterator[FaultProxy]:
    """A fresh proxy to the session's emulator, faults off."""
    with FaultProxy(emulator.url, seed=1234) as running:
        yield running
