"""What an operator is told, decided without AWS: botocore's errors sorted into the service's
classes, each class its own exit code, settings that take the spellings people type, the
region checked against botocore's own data, and a command line that offers only what it has."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    UnauthorizedSSOTokenError,
)

from service import cli
from service.aws.errors import translate, translate_raised
from service.errors import (
    EXIT_CODES,
    AccessDeniedError,
    ConfigurationError,
    DependencyError,
    MissingCredentialsError,
    MissingResourceError,
    RejectedCredentialsError,
    SettingsError,
    WaitTimesError,
    find_error,
    first_error,
    walk,
)
from service.settings import Settings, check_region, known_regions, load_settings
from tests.helpers import ROOT

pytestmark = pytest.mark.unit


def client_error(code: str, message: str = "m", operation: str = "GetQueueUrl") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, operation)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error("ResourceNotFoundException"), MissingResourceError),
        (client_error("AWS.SimpleQueueService.NonExistentQueue"), MissingResourceError),
        (client_error("QueueDoesNotExist"), MissingResourceError),
        (client_error("InvalidClientTokenId"), RejectedCredentialsError),
        (client_error("UnrecognizedClientException"), RejectedCredentialsError),
        (client_error("ExpiredToken"), RejectedCredentialsError),
        (client_error("ExpiredTokenException"), RejectedCredentialsError),
        (client_error("SignatureDoesNotMatch"), RejectedCredentialsError),
        (client_error("InvalidSignatureException"), RejectedCredentialsError),
        (client_error("AccessDenied"), AccessDeniedError),
        (client_error("AccessDeniedException"), AccessDeniedError),
        (NoCredentialsError(), MissingCredentialsError),
        (
            PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
            MissingCredentialsError,
        ),
        (ProfileNotFound(profile="nope"), MissingCredentialsError),
        (UnauthorizedSSOTokenError(), RejectedCredentialsError),
        (NoRegionError(), SettingsError),
        (client_error("ThrottlingException"), DependencyError),
        (client_error("ValidationException"), DependencyError),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_each_refusal_has_its_class(error: Exception, kind: type[WaitTimesError]) -> None:
    translated = translate(error, "sqs.GetQueueUrl")
    assert type(translated) is kind
    assert not (isinstance(translated, ConfigurationError) and translated.retriable)
    assert "\n" not in str(translated)


def test_each_class_has_its_own_documented_exit_code() -> None:
    codes = {
        SettingsError: 2,
        MissingResourceError: 3,
        MissingCredentialsError: 4,
        RejectedCredentialsError: 5,
        AccessDeniedError: 6,
        DependencyError: 7,
    }
    for kind, code in codes.items():
        assert cli.exit_code(kind("x")) == code, kind
    assert len(set(codes.values())) == len(codes)


def test_access_denied_names_what_aws_refused_and_never_suggests_provision() -> None:
    error = client_error(
        "AccessDeniedException",
        "User: arn:aws:sts::1:assumed-role/r/s is not authorized to perform: "
        "dynamodb:DescribeTable on resource: arn:aws:dynamodb:eu-west-1:1:table/t because "
        "no identity-based policy allows the dynamodb:DescribeTable action",
        "DescribeTable",
    )
    translated = translate(error, "dynamodb.DescribeTable")
    assert isinstance(translated, AccessDeniedError)
    assert translated.action == "dynamodb:DescribeTable"
    assert translated.resource == "arn:aws:dynamodb:eu-west-1:1:table/t"
    text = str(translated)
    assert "AWS refused dynamodb:DescribeTable on arn:aws:dynamodb:eu-west-1:1:table/t" in text
    assert "to arn:aws:sts::1:assumed-role/r/s" in text
    assert "task role" in text
    assert "provision" not in text


def test_access_denied_in_other_words_falls_back_to_the_call_made() -> None:
    translated = translate(client_error("AccessDenied", "Access denied."), "sqs.ReceiveMessage")
    assert isinstance(translated, AccessDeniedError)
    assert translated.action == "sqs:ReceiveMessage"
    assert "(AccessDenied: Access denied.)" in str(translated)


def test_errors_raised_outside_the_adapters_are_found_and_translated() -> None:
    group = ExceptionGroup("task group", [client_error("ExpiredToken")])
    assert isinstance(translate_raised(group), RejectedCredentialsError)
    assert translate_raised(ExceptionGroup("g", [KeyError("a bug")])) is None
    assert translate_raised(OSError("not AWS's")) is None, "only botocore's errors"


def test_one_walker_finds_errors_in_nested_groups_depth_first() -> None:
    first, inner, last = KeyError("first"), SettingsError("inner"), SettingsError("last")
    nested = ExceptionGroup("nested", [inner])
    group = ExceptionGroup("outer", [first, nested, last])
    assert list(walk(group)) == [group, first, nested, inner, last]
    assert find_error(group, SettingsError) is inner, "depth first, the first one"
    assert find_error(group, ExceptionGroup) is group, "a group can be what is looked for"
    assert find_error(first, SettingsError) is None
    # Translation takes the first error the service has or botocore raised, in that order.
    mixed = ExceptionGroup(
        "g", [KeyError("bug"), ExceptionGroup("h", [client_error("ExpiredToken")]), inner]
    )
    assert isinstance(translate_raised(mixed), RejectedCredentialsError)
    with pytest.raises(KeyError) as raised, first_error():
        raise ExceptionGroup("g", [ExceptionGroup("h", [first]), inner])
    assert raised.value is first
    assert raised.value.__cause__ is not None


# --- settings ------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("WAIT_TIMES_", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("typed", "level"),
    [
        ("INFO", "info"),
        ("info", "info"),
        (" Debug ", "debug"),
        ("WARN", "warning"),
        ("ERROR", "error"),
    ],
)
def test_log_levels_in_any_case(clean_env: pytest.MonkeyPatch, typed: str, level: str) -> None:
    clean_env.setenv("WAIT_TIMES_LOG_LEVEL", typed)
    assert load_settings().log_level == level


@pytest.mark.parametrize(
    ("typed", "fmt"), [("JSON", "json"), ("Console", "console"), ("AUTO", "auto")]
)
def test_log_formats_in_any_case(clean_env: pytest.MonkeyPatch, typed: str, fmt: str) -> None:
    clean_env.setenv("WAIT_TIMES_LOG_FORMAT", typed)
    assert load_settings().log_format == fmt


def test_a_level_that_is_none_is_still_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WAIT_TIMES_LOG_LEVEL", "LOUD")
    with pytest.raises(SettingsError, match=r"WAIT_TIMES_LOG_LEVEL='loud'"):
        load_settings()


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_an_empty_region_names_the_variable_it_came_from(
    clean_env: pytest.MonkeyPatch, variable: str
) -> None:
    clean_env.setenv(variable, "")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value).startswith(f"invalid setting {variable}='': empty")


def test_the_region_is_checked_against_botocores_data(clean_env: pytest.MonkeyPatch) -> None:
    regions = known_regions()
    assert {"us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1"} <= regions
    check_region(Settings(region="eu-west-1"))
    with pytest.raises(SettingsError, match=r"did you mean eu-west-1\?"):
        check_region(Settings(region="eu-west1"))
    clean_env.setenv("AWS_DEFAULT_REGION", "mars-1")
    with pytest.raises(SettingsError, match=r"^invalid setting AWS_DEFAULT_REGION='mars-1'"):
        check_region(load_settings())


def test_an_endpoint_of_ones_own_takes_any_region(clean_env: pytest.MonkeyPatch) -> None:
    check_region(Settings(region="local-1", endpoint_url="http://127.0.0.1:4566"))
    clean_env.setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4566")
    check_region(Settings(region="local-1"))


# --- the command line offers only what it has ----------------------------------------------


def test_demo_is_offered_only_where_the_emulator_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli.emulator_available(), "the test environment has the emulator"
    assert "demo" in cli.build_parser().format_help()
    monkeypatch.setattr(cli, "emulator_available", lambda: False)
    parser = cli.build_parser()
    assert "demo" not in parser.format_help()
    with pytest.raises(SystemExit) as raised:
        parser.parse_args(["demo"])
    assert raised.value.code == 2


def test_every_command_is_registered_once_and_dispatched_by_no_name() -> None:
    names = [command.name for command in cli.COMMANDS]
    assert names == ["run", "board", "provision", "play", "replay", "schema", "demo"]
    offered = cli.build_parser().format_help()
    assert all(name in offered for name in names)
    # A command runs its own handler: nothing compares a parsed command's name.
    for path in (ROOT / "service").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"command(\.name)?\s*[!=]=\s*[\"']", text), path


def test_the_readme_documents_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    documented = {code for row in rows[1:] for code in re.findall(r"\b\d+\b", row.split("|")[-2])}
    codes = {str(code) for _, code in EXIT_CODES} | {"0", "1", "130", "143"}
    assert codes <= documented, codes - documented
