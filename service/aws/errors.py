"""botocore's errors, translated once into the service's own (``service.errors``).

What may be retried is botocore's own answer, the one its "standard" retry mode uses:
its transient checker (5xx, request timeouts, connection errors) and its throttling
checker (the union of AWS's throttling codes). Missing resources and refused credentials
become ConfigurationError (an operator must act); every other AWS answer is a
non-retriable DependencyError. Above this module nothing looks at botocore's shapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.retries.standard import (
    RetryContext,
    ThrottledRetryableChecker,
    TransientRetryableChecker,
)

from service.errors import ConfigurationError, DependencyError, WaitTimesError

T = TypeVar("T")

MISSING_RESOURCE_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "AccessDenied",
        "AccessDeniedException",
    }
)
# Why a DynamoDB transaction was cancelled, when sending it again unchanged can succeed.
TRANSIENT_CANCELLATIONS = frozenset(
    {"None", "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
_TRANSIENT = TransientRetryableChecker()
_THROTTLED = ThrottledRetryableChecker()


class _Status:
    """The one attribute of an HTTP response botocore's transient checker reads."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, else the exception's type name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def is_retriable(exc: BaseException) -> bool:
    """Whether botocore's standard retry mode would try this failure again."""
    if isinstance(exc, ClientError):
        if error_code(exc) == "TransactionCanceledException":
            return set(cancellation_reasons(exc)) <= TRANSIENT_CANCELLATIONS
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        context = RetryContext(
            attempt_number=1,
            parsed_response=dict(exc.response),
            http_response=_Status(status) if status else None,
        )
    elif isinstance(exc, BotoCoreError):
        context = RetryContext(attempt_number=1, caught_exception=exc)
    else:
        return isinstance(exc, OSError | TimeoutError)
    return bool(_TRANSIENT.is_retryable(context) or _THROTTLED.is_retryable(context))


def translate(exc: BaseException, operation: str) -> WaitTimesError | None:
    """The service's error for a failed AWS call, or None when ``exc`` is not an AWS failure
    (a bug, which must surface as itself)."""
    code = error_code(exc)
    if isinstance(exc, ClientError) and code in MISSING_RESOURCE_CODES:
        return ConfigurationError(f"{operation}: {code}: {exc}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError):
        return ConfigurationError(f"{operation}: {exc}")
    if isinstance(exc, ClientError | BotoCoreError | OSError | TimeoutError):
        return DependencyError(
            f"{operation}: {code}: {exc}"[:500],
            operation=operation,
            code=code[:60],
            retriable=is_retriable(exc),
            unreachable=isinstance(
                exc, BotoConnectionError | HTTPClientError | OSError | TimeoutError
            ),
        )
    return None


@contextmanager
def translated(operation: str) -> Iterator[None]:
    """Raise the service's error in place of an AWS failure inside the block."""
    try:
        yield
    except WaitTimesError:
        raise
    except Exception as exc:
        error = translate(exc, operation)
        if error is None:
            raise
        raise error from exc


async def call(operation: str, request: Callable[[], Awaitable[T]]) -> T:
    """One AWS request (botocore's own two attempts inside), failures translated."""
    with translated(operation):
        return await request()


def cancellation_reasons(exc: BaseException) -> list[str]:
    """The per-action codes of a TransactionCanceledException, in request order."""
    cause: Any = exc.__cause__ if isinstance(exc, WaitTimesError) else exc
    if not isinstance(cause, ClientError):
        return []
    return [str(r.get("Code", "None")) for r in cause.response.get("CancellationReasons", [])]
