"""Errors an operator can act on: one line on stderr, the README's exit code, real processes.

AWS's refusals are answered by the fault proxy in front of the emulator, in the shapes the
real services use (the emulator itself accepts any credentials and allows every call);
missing credentials are an environment that points at none.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from service.tools.emulator import Emulator
from tests.helpers import Aws
from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.integration

WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))
ACCOUNT = "123456789012"
ROLE = f"arn:aws:sts::{ACCOUNT}:assumed-role/wait-times-TaskRole-1A2B3C/4d5e6f"
QUEUE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:wait-times"
TABLE_ARN = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/wait-times"
BUS_ARN = f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/Serverlesspresso"
# (service's error type, SQS's query-compatible code header, message), as AWS words them.
DENIED_SQS = (
    "com.amazonaws.sqs#AccessDeniedException",
    "AccessDenied;Sender",
    f"User: {ROLE} is not authorized to perform: sqs:getqueueurl on resource: {QUEUE_ARN} "
    "because no identity-based policy allows the sqs:getqueueurl action",
)
DENIED_DYNAMODB = (
    "com.amazonaws.dynamodb.v20120810#AccessDeniedException",
    None,
    f"User: {ROLE} is not authorized to perform: dynamodb:DescribeTable on resource: "
    f"{TABLE_ARN} because no identity-based policy allows the dynamodb:DescribeTable action",
)


def denied_events(action: str) -> tuple[str, None, str]:
    return (
        "AccessDeniedException",
        None,
        f"User: {ROLE} is not authorized to perform: events:{action} on resource: {BUS_ARN} "
        f"with an explicit deny in an identity-based policy",
    )


class AnsweringProxy(FaultProxy):
    """The fault proxy, answering chosen operations with an AWS error instead of forwarding."""

    def __init__(
        self, upstream_url: str | Mapping[str, str], answers: dict[str, tuple[str, str | None, str]]
    ):
        super().__init__(upstream_url)
        self.answers = answers

    async def _handle(self, request: Any, connection: Any) -> bool:
        answer = self.answers.get(request.operation)
        if answer is None:
            return await super()._handle(request, connection)
        self.injected["answered", request.operation] += 1
        await self._answer(connection.writer, 400, request.service, *answer)
        return True


@pytest.fixture
def answering(request: pytest.FixtureRequest, emulator: Emulator) -> Iterator[AnsweringProxy]:
    """A proxy that answers chosen operations itself and forwards the rest, each service to
    the test's own emulator (the ``aws`` fixture's, when the test has it)."""
    upstream: Any = emulator.url
    if "aws" in request.fixturenames:
        upstream = request.getfixturevalue("aws").cloud.urls
    proxy = AnsweringProxy(upstream, {})
    with proxy:
        yield proxy


def environment(endpoint: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAIT_TIMES_", "AWS_"))}
    env.update(
        {
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "WAIT_TIMES_LOG_FORMAT": "json",
            "WAIT_TIMES_METRICS_PORT": "0",
            "WAIT_TIMES_METRICS_HOST": "127.0.0.1",
        }
    )
    if endpoint is not None:
        env["AWS_ENDPOINT_URL"] = endpoint
    env.update(extra)
    return env


def no_credentials(endpoint: str) -> dict[str, str]:
    """An environment in which botocore finds no credentials anywhere."""
    env = environment(endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name)
    env.update(
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def one_line(args: list[str], env: dict[str, str], code: int) -> str:
    """Run ``wait-times args``; assert the exit code and a single stderr line; return it."""
    result = subprocess.run(
        [WAIT_TIMES, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == code, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr
    return lines[0]


COMMANDS = {
    "run": ["run"],
    "provision": ["provision"],
    "play": ["play", "--orders", "3", "--speed", "0"],
}


# --- credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_credentials_found_is_exit_4(emulator: Emulator, command: str) -> None:
    line = one_line(COMMANDS[command], no_credentials(emulator.url), 4)
    assert line.startswith("wait-times: no usable AWS credentials")
    assert "AWS_ACCESS_KEY_ID" in line and "AWS_PROFILE" in line
    assert "provision" not in line


def test_an_unknown_profile_is_no_credentials(emulator: Emulator) -> None:
    env = no_credentials(emulator.url)
    env["AWS_PROFILE"] = "no-such-profile"
    line = one_line(["provision"], env, 4)
    assert "no-such-profile" in line


@pytest.mark.parametrize(
    ("operation", "answer", "command"),
    [
        (
            "GetQueueUrl",
            (
                "com.amazonaws.sqs#InvalidClientTokenId",
                "InvalidClientTokenId;Sender",
                "The security token included in the request is invalid.",
            ),
            "run",
        ),
        (
            "GetQueueUrl",
            (
                "com.amazonaws.sqs#ExpiredToken",
                "ExpiredToken;Sender",
                "The security token included in the request is expired",
            ),
            "run",
        ),
        (
            "GetQueueUrl",
            (
                "com.amazonaws.sqs#SignatureDoesNotMatch",
                "SignatureDoesNotMatch;Sender",
                "The request signature we calculated does not match the signature you provided.",
            ),
            "run",
        ),
        (
            "DescribeTable",
            (
                "com.amazonaws.dynamodb.v20120810#UnrecognizedClientException",
                None,
                "The security token included in the request is invalid.",
            ),
            "run",
        ),
        (
            "DescribeEventBus",
            (
                "ExpiredTokenException",
                None,
                "The security token included in the request is expired",
            ),
            "provision",
        ),
        (
            "PutEvents",
            (
                "UnrecognizedClientException",
                None,
                "The security token included in the request is invalid.",
            ),
            "play",
        ),
    ],
    ids=[
        "sqs-invalid",
        "sqs-expired",
        "sqs-signature",
        "dynamodb-unrecognized",
        "events-expired",
        "play",
    ],
)
def test_rejected_or_expired_credentials_are_exit_5(
    aws: Aws,
    answering: AnsweringProxy,
    operation: str,
    answer: tuple[str, str | None, str],
    command: str,
) -> None:
    answering.answers[operation] = answer
    line = one_line(COMMANDS[command], environment(answering.url), 5)
    assert answering.injected_total("answered") >= 1
    assert line.startswith("wait-times: AWS rejected the credentials")
    code = answer[1].split(";")[0] if answer[1] else answer[0].rsplit("#", 1)[-1]
    assert f"({code}: " in line, "AWS's code is named"
    assert "expired" in line and "AWS_ACCESS_KEY_ID" in line
    assert "provision" not in line


# --- permissions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "answer", "command", "action", "resource"),
    [
        ("GetQueueUrl", DENIED_SQS, "run", "sqs:getqueueurl", QUEUE_ARN),
        ("DescribeTable", DENIED_DYNAMODB, "run", "dynamodb:DescribeTable", TABLE_ARN),
        (
            "DescribeEventBus",
            denied_events("DescribeEventBus"),
            "provision",
            "events:DescribeEventBus",
            BUS_ARN,
        ),
        ("PutEvents", denied_events("PutEvents"), "play", "events:PutEvents", BUS_ARN),
    ],
    ids=["run-sqs", "run-dynamodb", "provision-events", "play-events"],
)
def test_access_denied_names_action_and_resource_and_points_at_the_task_role(
    aws: Aws,
    answering: AnsweringProxy,
    operation: str,
    answer: tuple[str, str | None, str],
    command: str,
    action: str,
    resource: str,
) -> None:
    answering.answers[operation] = answer
    line = one_line(COMMANDS[command], environment(answering.url), 6)
    assert line.startswith(f"wait-times: access denied: AWS refused {action} on {resource}")
    assert ROLE in line
    assert "task role" in line
    assert "provision" not in line, "provision cannot grant a permission"


def test_access_denied_without_the_usual_wording_still_names_the_call(
    aws: Aws, answering: AnsweringProxy
) -> None:
    answering.answers["GetQueueUrl"] = (
        "com.amazonaws.sqs#AccessDeniedException",
        "AccessDenied;Sender",
        "Access to the resource https://sqs.us-east-1.amazonaws.com/ is denied.",
    )
    line = one_line(["run"], environment(answering.url), 6)
    assert "sqs:GetQueueUrl" in line
    assert "is denied" in line, "AWS's own words when they do not parse"
    assert "task role" in line


# --- resources and regions -----------------------------------------------------------------


def test_a_missing_queue_still_points_at_provision_with_exit_3(emulator: Emulator) -> None:
    emulator.reset()
    line = one_line(["run"], environment(emulator.url), 3)
    assert "wait-times provision" in line


def test_aws_failing_a_one_shot_command_is_exit_7(emulator: Emulator) -> None:
    # The worker waits for an endpoint that does not answer (readiness false, tested with
    # the reliability scenarios); a one-shot command gives up after botocore's attempts.
    with FaultProxy(emulator.url) as proxy:
        proxy.refuse()
        line = one_line(["provision"], environment(proxy.url), 7)
    assert line.startswith("wait-times: AWS call failed: EndpointConnectionError: ")
    assert proxy.url in line


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_empty_region_names_its_variable(command: str, variable: str) -> None:
    env = environment(None)
    env.pop("AWS_REGION")
    env[variable] = ""
    line = one_line(COMMANDS[command], env, 2)
    assert line.startswith(f"wait-times: invalid setting {variable}='': empty")
    assert "WAIT_TIMES_AWS_REGION" not in line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unknown_region_is_refused_before_any_call(command: str) -> None:
    # No endpoint: this would be real AWS; nothing is sent (there is no network here).
    line = one_line(COMMANDS[command], environment(None, AWS_REGION="eu-wset-1"), 2)
    assert "invalid setting AWS_REGION='eu-wset-1': not an AWS region" in line
    assert "did you mean eu-west-1?" in line


@pytest.mark.parametrize(
    ("level", "fmt"), [("INFO", "JSON"), ("info", "json"), ("Warning", "Console"), ("WARN", "auto")]
)
def test_settings_take_the_spellings_people_type(tmp_path: Path, level: str, fmt: str) -> None:
    recording = tmp_path / "empty.jsonl"
    recording.write_text("")
    env = environment(None, WAIT_TIMES_LOG_LEVEL=level, WAIT_TIMES_LOG_FORMAT=fmt)
    result = subprocess.run(
        [WAIT_TIMES, "replay", str(recording)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
