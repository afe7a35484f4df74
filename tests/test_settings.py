"""Settings.to_environ: the environment a child process needs to read the same settings."""

from __future__ import annotations

import os
from typing import Any

import pytest

from service.settings import Settings

pytestmark = pytest.mark.unit

# Every field with a value other than its default (and valid together).
CHANGED: dict[str, Any] = {
    "event_bus": "OtherBus",
    "queue_name": "other-queue",
    "table_name": "other.table",
    "rule_name": "other-rule",
    "source": "other.source",
    "window_size": 25,
    "max_wait_seconds": 3600,
    "pending_ttl_seconds": 7200,
    "max_clock_skew_seconds": 0,
    "completion_event": "order-finished",
    "metrics_host": "127.0.0.1",
    "metrics_port": 0,
    "max_receives_per_flush": 3,
    "receive_wait_seconds": 1,
    "visibility_timeout_seconds": 45,
    "max_receive_count": 7,
    "drain_seconds": 2.5,
    "max_windows_in_memory": 12,
    "max_metric_series": 0,
    "log_format": "json",
    "log_level": "debug",
    "region": "eu-west-3",
    "endpoint_url": "http://127.0.0.1:4566",
}


def _clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WAIT_TIMES_"):
            monkeypatch.delenv(name)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def _read_back(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> Settings:
    _clear_environment(monkeypatch)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_the_defaults_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_environment(monkeypatch)
    original = Settings()
    environ = original.to_environ()
    assert "AWS_ENDPOINT_URL" not in environ
    assert environ["AWS_REGION"] == "us-east-1"
    assert environ["WAIT_TIMES_WINDOW_SIZE"] == "10"
    assert _read_back(monkeypatch, environ) == original


def test_every_field_changed_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(CHANGED) == set(Settings.model_fields), "CHANGED must cover every field"
    _clear_environment(monkeypatch)
    defaults = Settings()
    original = Settings(**CHANGED)
    for name in CHANGED:
        assert getattr(original, name) != getattr(defaults, name), name
    environ = original.to_environ()
    assert environ["AWS_REGION"] == "eu-west-3"
    assert environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    assert environ["WAIT_TIMES_LOG_FORMAT"] == "json"
    assert environ["WAIT_TIMES_DRAIN_SECONDS"] == "2.5"
    assert len(environ) == len(CHANGED)
    assert _read_back(monkeypatch, environ) == original
