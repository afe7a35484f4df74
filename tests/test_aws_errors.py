"""botocore's errors become the service's, once: retriable or not, configuration or not."""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.retries.standard import ThrottledRetryableChecker

from service.aws.errors import call, translate
from service.errors import ConfigurationError, DependencyError
from tests.helpers import ROOT

pytestmark = pytest.mark.unit


def client_error(code: str, status: int, **extra: Any) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
        **extra,
    }
    return ClientError(response, "Operation")


@pytest.mark.parametrize(
    ("error", "retriable"),
    [
        (client_error("ThrottlingException", 400), True),
        (client_error("ProvisionedThroughputExceededException", 400), True),
        (client_error("RequestLimitExceeded", 400), True),
        (client_error("InternalServerError", 500), True),
        (client_error("ServiceUnavailable", 503), True),
        (client_error("RequestTimeout", 408), True),
        (client_error("ValidationException", 400), False),
        (client_error("ConditionalCheckFailedException", 400), False),
        (client_error("TransactionConflictException", 400), True),
        (client_error("ItemCollectionSizeLimitExceededException", 400), False),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value),
)
def test_retriability_is_botocores_standard_answer(error: Exception, retriable: bool) -> None:
    translated = translate(error, "dynamodb.PutItem")
    assert isinstance(translated, DependencyError)
    assert translated.retriable is retriable
    assert translated.operation == "dynamodb.PutItem"


@pytest.mark.parametrize(
    ("reasons", "retriable"),
    [
        (["None", "TransactionConflict"], True),
        (["ThrottlingError", "None"], True),
        (["None", "ConditionalCheckFailed"], False),
        (["ValidationError"], False),
    ],
)
def test_a_cancelled_transaction_is_retriable_only_for_transient_reasons(
    reasons: list[str], retriable: bool
) -> None:
    error = client_error(
        "TransactionCanceledException",
        400,
        CancellationReasons=[{"Code": reason} for reason in reasons],
    )
    translated = translate(error, "dynamodb.TransactWriteItems")
    assert isinstance(translated, DependencyError)
    assert translated.retriable is retriable
    assert translated.code == "TransactionCanceledException"


@pytest.mark.parametrize(
    "error",
    [
        client_error("ResourceNotFoundException", 400),
        client_error("AWS.SimpleQueueService.NonExistentQueue", 400),
        client_error("AccessDeniedException", 400),
        NoCredentialsError(),
    ],
)
def test_what_only_an_operator_can_fix_is_a_configuration_error(error: Exception) -> None:
    translated = translate(error, "sqs.GetQueueUrl")
    assert isinstance(translated, ConfigurationError)
    assert not translated.retriable


def test_a_bug_is_not_translated() -> None:
    assert translate(KeyError("x"), "sqs.ReceiveMessage") is None


async def test_call_raises_the_translation_with_the_original_as_cause() -> None:
    original = client_error("ThrottlingException", 400)

    async def throttled() -> None:
        raise original

    with pytest.raises(DependencyError) as caught:
        await call("events.PutEvents", throttled)
    assert caught.value.__cause__ is original
    assert caught.value.retriable

    async def buggy() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await call("events.PutEvents", buggy)


def documented_throttling_codes() -> list[str]:
    """The codes docs/decisions.md lists as throttling ("One retry policy")."""
    text = (ROOT / "docs" / "decisions.md").read_text()
    start = text.index("- **Throttling is decided there too**")
    listed = text[start : text.index("Before, the metrics", start)]
    return re.findall(r"`([A-Za-z0-9]+)`", listed.partition("(a test keeps")[2])


def test_the_documented_throttling_codes_are_botocores() -> None:
    documented = documented_throttling_codes()
    assert len(documented) == 14
    assert documented == ThrottledRetryableChecker._THROTTLED_ERROR_CODES  # type: ignore[attr-defined]


@pytest.mark.parametrize("code", documented_throttling_codes())
def test_every_throttling_code_is_of_kind_throttling(code: str) -> None:
    translated = translate(client_error(code, 400), "dynamodb.PutItem")
    assert isinstance(translated, DependencyError)
    assert translated.retriable and translated.throttling
    assert translated.kind == "throttling"
    assert translated.code == code


@pytest.mark.parametrize(
    "error",
    [
        client_error("InternalServerError", 500),
        client_error("ServiceUnavailable", 503),
        client_error("ItemCollectionSizeLimitExceededException", 400),
        client_error(
            "TransactionCanceledException",
            400,
            CancellationReasons=[{"Code": "ThrottlingError"}],
        ),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        TimeoutError(),
    ],
    ids=lambda value: type(value).__name__,
)
def test_other_failures_are_of_their_own_kind(error: Exception) -> None:
    translated = translate(error, "dynamodb.PutItem")
    assert isinstance(translated, DependencyError)
    assert not translated.throttling
    assert translated.kind == translated.code
