"""Which AWS failures are worth retrying, and capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio
import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

from service.errors import ConfigurationError

log = structlog.get_logger(__name__)

T = TypeVar("T")

RETRIABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionInProgressException",
        "TransactionConflictException",
        "KMSThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
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


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, else the exception's type name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def is_retriable(exc: BaseException) -> bool:
    """True for throttling, 5xx and network failures; False for what retrying cannot fix."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in RETRIABLE_CODES or int(status) >= 500
    if isinstance(
        exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | HTTPClientError
    ):
        return True
    if isinstance(exc, BotoCoreError):
        return "connect" in type(exc).__name__.lower() or "timeout" in type(exc).__name__.lower()
    return isinstance(exc, OSError | TimeoutError)


def is_missing_resource(exc: BaseException) -> bool:
    """A queue, table or bus that does not exist, or credentials that may not use it."""
    return isinstance(exc, ClientError) and error_code(exc) in MISSING_RESOURCE_CODES


class Backoff:
    """Capped exponential backoff with full jitter: sleep U(0, min(cap, base * 2**attempt))."""

    def __init__(self, base: float = 0.1, cap: float = 10.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        exponent: int = min(attempt, 32)
        return min(self.cap, self.base * float(2**exponent))

    def delay(self, attempt: int) -> float:
        """A jittered delay for retry number ``attempt``."""
        return float(self.rng.uniform(0, self.ceiling(attempt)))


async def call_with_retry(
    operation: str,
    call: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff | None = None,
    max_attempts: int | None = 8,
    on_retry: Callable[[str, BaseException], None] | None = None,
    on_success: Callable[[], None] | None = None,
) -> T:
    """Call an AWS operation, retrying retriable failures; ``max_attempts=None`` retries forever.

    Missing resources become ConfigurationError (an operator must act); other
    non-retriable errors propagate unchanged.
    """
    backoff = backoff or Backoff()
    attempt = 0
    while True:
        try:
            result = await call()
        except Exception as exc:
            if is_missing_resource(exc):
                raise ConfigurationError(f"{operation}: {error_code(exc)}: {exc}") from exc
            if not is_retriable(exc) or (max_attempts is not None and attempt + 1 >= max_attempts):
                raise
            if on_retry is not None:
                on_retry(operation, exc)
            delay = backoff.delay(attempt)
            log.warning(
                "aws_retry",
                operation=operation,
                error=error_code(exc),
                attempt=attempt + 1,
                delay_s=round(delay, 3),
            )
            attempt += 1
            await anyio.sleep(delay)
        else:
            if on_success is not None:
                on_success()
            return result


@contextmanager
def first_error() -> Iterator[None]:
    """Re-raise the first failure of a task group as itself, so retry decisions see its type."""
    try:
        yield
    except ExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from group
