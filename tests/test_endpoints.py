"""Which endpoint each client gets (service/aws/clients.py): botocore resolves it as every
AWS SDK documents (``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_ENDPOINT_URL``, the shared config
file's services section and ``endpoint_url``, all off with
``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``); only endpoints the settings impose (code that
started its own emulator) are passed explicitly, a service's own over the general one.

Creating a client sends nothing, so those tests are pure: the environment and a config
file in ``tmp_path`` are their only inputs. The last one runs the real commands with
DynamoDB on an endpoint of its own.
"""

from __future__ import annotations

import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from service.aws.clients import open_clients
from service.settings import Settings
from service.tools.emulator import Emulator
from tests.helpers import Cloud, scan_windows

WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))

AWS = {
    "sqs": "https://sqs.us-east-1.amazonaws.com",
    "events": "https://events.us-east-1.amazonaws.com",
    "dynamodb": "https://dynamodb.us-east-1.amazonaws.com",
}
GENERAL, QUEUES, BUS, TABLES = (
    "http://general:1",
    "http://queues:2",
    "http://bus:3",
    "http://tables:4",
)
EMULATOR, MOTO = "http://emulator:5", "http://moto:6"
# A profile with an endpoint of its own and a services section naming two services (the
# section's keys are botocore's snake-case service ids: EventBridge is "eventbridge").
CONFIG = """
[default]
endpoint_url = http://config-general:7
services = local

[services local]
dynamodb =
  endpoint_url = http://config-tables:8
eventbridge =
  endpoint_url = http://config-bus:9
"""
CONFIGURED = {
    "sqs": "http://config-general:7",
    "events": "http://config-bus:9",
    "dynamodb": "http://config-tables:8",
}


def everywhere(url: str) -> dict[str, str]:
    return dict.fromkeys(AWS, url)


CASES: list[tuple[str, dict[str, str], str, dict[str, Any], dict[str, str]]] = [
    # (case, environment, config file, imposed by the settings, endpoint of each client)
    ("nothing configured: AWS", {}, "", {}, AWS),
    ("the general variable", {"AWS_ENDPOINT_URL": GENERAL}, "", {}, everywhere(GENERAL)),
    (
        "a service's variable over the general one",
        {"AWS_ENDPOINT_URL": GENERAL, "AWS_ENDPOINT_URL_DYNAMODB": TABLES},
        "",
        {},
        {"sqs": GENERAL, "events": GENERAL, "dynamodb": TABLES},
    ),
    (
        "service variables alone",
        {"AWS_ENDPOINT_URL_SQS": QUEUES, "AWS_ENDPOINT_URL_EVENTBRIDGE": BUS},
        "",
        {},
        {"sqs": QUEUES, "events": BUS, "dynamodb": AWS["dynamodb"]},
    ),
    ("the config file", {}, CONFIG, {}, CONFIGURED),
    (
        "a service variable over the config file",
        {"AWS_ENDPOINT_URL_SQS": QUEUES},
        CONFIG,
        {},
        {**CONFIGURED, "sqs": QUEUES},
    ),
    (
        "the general variable over the config file's services",
        {"AWS_ENDPOINT_URL": GENERAL},
        CONFIG,
        {},
        everywhere(GENERAL),
    ),
    (
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        {
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
            "AWS_ENDPOINT_URL": GENERAL,
            "AWS_ENDPOINT_URL_DYNAMODB": TABLES,
        },
        CONFIG,
        {},
        AWS,
    ),
    (
        "ignore_configured_endpoint_urls in the config file",
        {"AWS_ENDPOINT_URL": GENERAL},
        CONFIG.replace("services = local", "ignore_configured_endpoint_urls = true"),
        {},
        AWS,
    ),
    (
        "imposed: the general one over every variable",
        {"AWS_ENDPOINT_URL": GENERAL, "AWS_ENDPOINT_URL_DYNAMODB": TABLES},
        CONFIG,
        {"endpoint_url": EMULATOR},
        everywhere(EMULATOR),
    ),
    (
        "imposed: a service's own over the general one",
        {},
        "",
        {"endpoint_url": EMULATOR, "dynamodb_endpoint_url": MOTO},
        {"sqs": EMULATOR, "events": EMULATOR, "dynamodb": MOTO},
    ),
    (
        "imposed for one service, botocore resolves the others",
        {"AWS_ENDPOINT_URL": GENERAL},
        "",
        {"dynamodb_endpoint_url": MOTO},
        {"sqs": GENERAL, "events": GENERAL, "dynamodb": MOTO},
    ),
    (
        "imposed despite the ignore switch (as an endpoint_url in code)",
        {"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
        "",
        {"endpoint_url": EMULATOR},
        everywhere(EMULATOR),
    ),
]


def use_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environ: dict[str, str], config: str
) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED", "AWS_PROFILE")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("AWS_DEFAULT_PROFILE", raising=False)
    config_file = tmp_path / "config"
    config_file.write_text(config)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)


async def resolved(settings: Settings) -> dict[str, str]:
    """The endpoint each of the service's clients was created with."""
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        return {
            "sqs": clients.sqs.meta.endpoint_url,
            "events": clients.events.meta.endpoint_url,
            "dynamodb": clients.dynamodb.meta.endpoint_url,
        }


@pytest.mark.unit
@pytest.mark.parametrize(
    ("environ", "config", "imposed", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_each_client_gets_the_endpoint_the_sdks_document(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    environ: dict[str, str],
    config: str,
    imposed: dict[str, Any],
    expected: dict[str, str],
) -> None:
    use_environment(monkeypatch, tmp_path, environ, config)
    assert await resolved(Settings(region="us-east-1", **imposed)) == expected


@pytest.mark.unit
async def test_a_child_given_to_environ_lands_where_its_parent_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Settings.to_environ carries imposed endpoints as the standard variables, and they win
    over a service variable the child's environment already had."""
    use_environment(monkeypatch, tmp_path, {"AWS_ENDPOINT_URL_SQS": QUEUES}, CONFIG)
    parent = Settings(region="us-east-1", endpoint_url=EMULATOR, dynamodb_endpoint_url=MOTO)
    where = await resolved(parent)
    assert where == {"sqs": EMULATOR, "events": EMULATOR, "dynamodb": MOTO}
    for name, value in parent.to_environ().items():
        monkeypatch.setenv(name, value)
    child = Settings()  # what `wait-times run` reads: no endpoint of its own
    assert await resolved(child) == where


@pytest.mark.integration
async def test_dynamodb_on_an_endpoint_of_its_own(cloud: Cloud) -> None:
    """``provision``, ``play`` and ``run --burst`` configured by the standard variables only:
    SQS and EventBridge at AWS_ENDPOINT_URL, the table on a moto server of its own at
    AWS_ENDPOINT_URL_DYNAMODB. (Before, the general endpoint won for every client.)"""
    with Emulator() as tables:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAIT_TIMES_")}
        env.update(
            {
                "AWS_ENDPOINT_URL": cloud.url,
                "AWS_ENDPOINT_URL_DYNAMODB": tables.url,
                "WAIT_TIMES_METRICS_PORT": "0",
                "WAIT_TIMES_RECEIVE_WAIT_SECONDS": "1",
            }
        )
        for command in (
            ["provision"],
            ["play", "--orders", "20", "--speed", "0", "--rate", "5"],
            ["run", "--burst"],
        ):
            with anyio.fail_after(120):
                done = await anyio.run_process([WAIT_TIMES, *command], env=env, check=False)
            assert done.returncode == 0, (command, done.stderr.decode()[-2000:])
        async with AsyncExitStack() as stack:
            own = Settings(endpoint_url=tables.url)
            windows = await scan_windows(await open_clients(own, stack), own)
            assert sum(state.window.samples for state in windows.values()) > 0
            # The emulator that serves DynamoDB to the other tests has no table at all.
            shared = Settings(endpoint_url=cloud.moto.url)
            listed = await (await open_clients(shared, stack)).dynamodb.list_tables()
            assert listed["TableNames"] == []
