"""Settings.to_environ: the environment a child process needs to read the same settings;
and every setting described where it is declared, the README's table made from those."""

from __future__ import annotations

import inspect
import os
import re
from typing import Any

import pytest

from service.aws.store import DynamoStore
from service.metrics import Metrics
from service.settings import (
    ENDPOINT_FIELDS,
    Settings,
    WorkerOptions,
    configuration_rows,
    worker_options,
)
from service.tools.replay import estimate_changes, replay
from tests.helpers import ROOT

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
    "estimator": "linear",
    "pending_ttl_seconds": 7200,
    "max_clock_skew_seconds": 0,
    "completion_event": "order-finished",
    "metrics_host": "127.0.0.1",
    "metrics_port": 0,
    "max_receives_per_flush": 3,
    "batch_window_seconds": 0.5,
    "receive_wait_seconds": 1,
    "visibility_timeout_seconds": 45,
    "max_receive_count": 7,
    "drain_seconds": 2.5,
    "max_windows_in_memory": 12,
    "max_tenants_in_memory": 13,
    "max_metric_series": 0,
    "board_enabled": True,
    "board_queue_name": "other-board",
    "board_rule_name": "other-board-rule",
    "board_host": "127.0.0.1",
    "board_port": 0,
    "board_tenants": "NYC,LDN",
    "board_max_keys": 7,
    "board_max_streams": 3,
    "board_keepalive_seconds": 0.5,
    "log_format": "json",
    "log_level": "debug",
    "region": "eu-west-3",
    "endpoint_url": "http://127.0.0.1:4566",
    "sqs_endpoint_url": "http://127.0.0.1:4567",
    "events_endpoint_url": "http://127.0.0.1:4568",
    "dynamodb_endpoint_url": "http://127.0.0.1:4569",
}
# Endpoints go to child processes as the standard variables, which botocore reads (see
# tests/test_endpoints.py), not Settings().
ENDPOINT_VARIABLES = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
    "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:4567",
    "AWS_ENDPOINT_URL_EVENTBRIDGE": "http://127.0.0.1:4568",
    "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:4569",
}


def _clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WAIT_TIMES_"):
            monkeypatch.delenv(name)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", *ENDPOINT_VARIABLES):
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


def test_every_default_is_the_one_settings_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    """What takes a setting as an argument defaults to the setting's own default."""
    _clear_environment(monkeypatch)
    assert WorkerOptions() == worker_options(Settings())
    declared = {name: info.default for name, info in Settings.model_fields.items()}
    argument_of = {  # the argument's name, where it is not the setting's
        "ttl_seconds": "pending_ttl_seconds",
        "completion": "completion_event",
        "max_cached_windows": "max_windows_in_memory",
        "max_cached_tenants": "max_tenants_in_memory",
        "max_average_series": "max_metric_series",
    }
    checked = 0
    for function in (replay, estimate_changes, DynamoStore, Metrics):
        for name, parameter in inspect.signature(function).parameters.items():
            setting = argument_of.get(name, name)
            # The tools' ``source=None`` is no default of the setting: it accepts any source.
            if parameter.default is inspect.Parameter.empty or setting == "source":
                continue
            if setting in declared:
                assert parameter.default == declared[setting], (function.__name__, name)
                checked += 1
    # DynamoStore: its two cache sizes (its maximum wait is the one EstimateOptions holds).
    assert checked == 5 + 4 + 2 + 1  # replay, estimate_changes, DynamoStore, Metrics


def test_every_field_changed_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(CHANGED) == set(Settings.model_fields), "CHANGED must cover every field"
    _clear_environment(monkeypatch)
    defaults = Settings()
    original = Settings(**CHANGED)
    for name in CHANGED:
        assert getattr(original, name) != getattr(defaults, name), name
    environ = original.to_environ()
    assert environ["AWS_REGION"] == "eu-west-3"
    assert environ["WAIT_TIMES_LOG_FORMAT"] == "json"
    assert environ["WAIT_TIMES_DRAIN_SECONDS"] == "2.5"
    assert {k: environ[k] for k in ENDPOINT_VARIABLES} == ENDPOINT_VARIABLES
    assert len(environ) == len(CHANGED)
    endpoints = {name: None for name in CHANGED if name.endswith("endpoint_url")}
    assert _read_back(monkeypatch, environ) == original.model_copy(update=endpoints)


def test_the_environment_never_sets_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore reads the endpoint variables itself, the ignore switch and the config
    file with them; a Settings field read from them would override all of that."""
    settings = _read_back(monkeypatch, ENDPOINT_VARIABLES)
    assert [settings.endpoint_for(s) for s in ("sqs", "events", "dynamodb")] == [None] * 3


def test_an_imposed_endpoint_goes_to_every_service_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """So a child lands where the parent's settings put it, whatever service variable the
    environment it joins already has; a service's own endpoint wins over the general one."""
    _clear_environment(monkeypatch)
    environ = Settings(
        endpoint_url="http://general:1", dynamodb_endpoint_url="http://tables:2"
    ).to_environ()
    assert {k: v for k, v in environ.items() if "ENDPOINT" in k} == {
        "AWS_ENDPOINT_URL": "http://general:1",
        "AWS_ENDPOINT_URL_SQS": "http://general:1",
        "AWS_ENDPOINT_URL_EVENTBRIDGE": "http://general:1",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://tables:2",
    }
    through = Settings(dynamodb_endpoint_url="http://tables:2").through("http://proxy:3")
    assert {through.endpoint_for(s) for s in ("sqs", "events", "dynamodb")} == {"http://proxy:3"}


def test_every_setting_says_what_it_is() -> None:
    undescribed = [name for name, info in Settings.model_fields.items() if not info.description]
    assert not undescribed, undescribed


def _variables(row: str) -> set[str]:
    """The variables a README row names in its first cell."""
    return set(re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split(" | ", maxsplit=1)[0]))


def test_the_readme_configuration_table_is_the_declared_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every variable Settings reads is in the README with its default and its description;
    the rows are generated, so they cannot drift from the declarations."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # no header
    generated = configuration_rows()
    assert rows[: len(generated)] == generated, (
        "README.md's configuration table is not what service/settings.py declares; replace "
        "its rows above `credentials` with the output of `.venv/bin/python -m service.settings`:"
        "\n" + "\n".join(generated)
    )
    # What Settings reads from the environment, from to_environ rather than the generator.
    _clear_environment(monkeypatch)
    read = set(Settings().to_environ()) | {"AWS_DEFAULT_REGION"}
    assert set().union(*map(_variables, generated)) == read
    # By hand below them: only what botocore reads itself (credentials, the endpoints, which
    # the four endpoint fields are never read from).
    by_hand = set().union(*map(_variables, rows[len(generated) :]))
    assert set(ENDPOINT_FIELDS.values()) <= by_hand
    assert not by_hand & read, by_hand & read
    assert not any(set(ENDPOINT_FIELDS.values()) & _variables(row) for row in generated)
