"""botocore's errors, translated once into the service's own (``service.errors``).

What may be retried is botocore's own answer, the one its "standard" retry mode uses:
its transient checker (5xx, request timeouts, connection errors) and its throttling
checker (the union of AWS's throttling codes). What only an operator can fix becomes a
ConfigurationError, one subclass per thing to fix: a missing resource, no credentials,
refused credentials, a denied permission, no region. Every other AWS answer is a
non-retriable DependencyError. Above this module nothing looks at botocore's shapes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.retries.standard import (
    RetryContext,
    ThrottledRetryableChecker,
    TransientRetryableChecker,
)

from service.errors import (
    AccessDeniedError,
    DependencyError,
    MissingCredentialsError,
    MissingResourceError,
    RejectedCredentialsError,
    SettingsError,
    WaitTimesError,
    walk,
)

T = TypeVar("T")

MISSING_RESOURCE_CODES = frozenset(
    {"ResourceNotFoundException", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
)
# AWS does not know the credentials, they expired, or the signature made with them is wrong.
REJECTED_CREDENTIALS_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "InvalidAccessKeyId",
    }
)
# The credentials are good; the policy does not allow the call.
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "KMS.AccessDeniedException", "UnauthorizedOperation"}
)
# "User: arn:... is not authorized to perform: dynamodb:DescribeTable on resource: arn:..."
_DENIED = re.compile(
    r"(?:User: (?P<principal>\S+) )?is not authorized to perform: (?P<action>[\w:*-]+)"
    r"(?: on resource: (?P<resource>[^\s,;]+))?"
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
        if error_code(exc) == "TransactionConflictException":
            # A single-item write that met another worker's transaction on the same item
            # (the tenant's puts and the orders' updates do): sending it again can succeed.
            return True
    context = _retry_context(exc)
    if context is None:
        return isinstance(exc, OSError | TimeoutError)
    return bool(_TRANSIENT.is_retryable(context) or _THROTTLED.is_retryable(context))


def is_throttling(exc: BaseException) -> bool:
    """Whether AWS throttled the call: botocore's throttling checker (its codes are listed
    in docs/decisions.md), the service's one answer; metrics read it from the error."""
    context = _retry_context(exc)
    return context is not None and bool(_THROTTLED.is_retryable(context))


def _retry_context(exc: BaseException) -> RetryContext | None:
    """What botocore's retry checkers read of a failure; None for one botocore did not raise."""
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        return RetryContext(
            attempt_number=1,
            parsed_response=dict(exc.response),
            http_response=_Status(status) if status else None,
        )
    if isinstance(exc, BotoCoreError):
        return RetryContext(attempt_number=1, caught_exception=exc)
    return None


def aws_message(exc: BaseException) -> str:
    """What AWS said about a ClientError (its message), else the exception's text; one line."""
    text = str(exc)
    if isinstance(exc, ClientError):
        text = str(exc.response.get("Error", {}).get("Message") or "") or text
    return " ".join(text.split())


def translate(exc: BaseException, operation: str) -> WaitTimesError | None:
    """The service's error for a failed AWS call, or None when ``exc`` is not an AWS failure
    (a bug, which must surface as itself).

    ``operation`` names the call (``sqs.GetQueueUrl``); when empty, botocore's own
    operation name is used, if the error carries one.
    """
    code = error_code(exc)
    if not operation and isinstance(exc, ClientError):
        operation = str(exc.operation_name or "")
    if isinstance(exc, ClientError):
        if code in MISSING_RESOURCE_CODES:
            return MissingResourceError(f"{operation}: {code}: {aws_message(exc)}")
        if code in REJECTED_CREDENTIALS_CODES:
            return rejected_credentials(f"{code}: {aws_message(exc)}")
        if code in ACCESS_DENIED_CODES:
            return access_denied(exc, operation)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
        return MissingCredentialsError(
            f"no usable AWS credentials ({aws_message(exc)}): set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with a role (the ECS task role)"
        )
    if isinstance(exc, CredentialRetrievalError):
        return MissingCredentialsError(
            f"could not get AWS credentials ({aws_message(exc)}): check the credential "
            "source named there (AWS_PROFILE, credential_process, the container's role)"
        )
    if isinstance(exc, SSOError | TokenRetrievalError):
        return rejected_credentials(aws_message(exc))
    if isinstance(exc, NoRegionError):
        return SettingsError("no AWS region: set AWS_REGION (for example eu-west-1)")
    if isinstance(exc, ClientError | BotoCoreError | OSError | TimeoutError):
        return DependencyError(
            f"{f'{operation}: ' if operation else ''}{code}: {exc}"[:500],
            operation=operation,
            code=code[:60],
            retriable=is_retriable(exc),
            throttling=is_throttling(exc),
            unreachable=isinstance(
                exc, BotoConnectionError | HTTPClientError | OSError | TimeoutError
            ),
        )
    return None


def rejected_credentials(said: str) -> RejectedCredentialsError:
    """AWS refused the credentials themselves (unknown, expired, wrong secret)."""
    return RejectedCredentialsError(
        f"AWS rejected the credentials ({said}): they are unknown, expired or their secret "
        "does not match; renew them, or fix AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_SESSION_TOKEN or AWS_PROFILE"
    )


def access_denied(exc: ClientError, operation: str) -> AccessDeniedError:
    """The credentials are valid but not allowed: name what AWS refused, to whom, on what."""
    said = aws_message(exc)
    found = _DENIED.search(said)
    service, _, name = operation.partition(".")
    action = found["action"] if found else (f"{service}:{name}" if name else operation)
    resource = (found["resource"] or "") if found else ""
    principal = (found["principal"] or "") if found else ""
    who = f" to {principal}" if principal else ""
    where = f" on {resource}" if resource else ""
    # AWS's own words only when they did not say what was refused.
    unparsed = "" if found else f" ({error_code(exc)}: {said})"
    return AccessDeniedError(
        f"access denied: AWS refused {action}{where}{who}{unparsed}; allow it in the task "
        "role's policy (TaskRole in deploy/ecs/wait-times.yaml) or for the credentials in use",
        action=action,
        resource=resource,
    )


def translate_raised(exc: BaseException) -> WaitTimesError | None:
    """The service's error inside something raised outside ``call`` (client creation,
    provisioning, a task group's exception group), or None when there is none."""
    for found in walk(exc):
        if isinstance(found, WaitTimesError):
            return found
        if isinstance(found, ClientError | BotoCoreError):
            translated = translate(found, "")
            if translated is not None:
                return translated
    return None


async def call(operation: str, request: Callable[[], Awaitable[T]]) -> T:
    """One AWS request (botocore's own two attempts inside), failures translated.

    Plain try/except rather than a context manager: every request of the service goes
    through here, and a generator-based context manager per call shows in profiles.
    """
    try:
        return await request()
    except WaitTimesError:
        raise
    except Exception as exc:
        error = translate(exc, operation)
        if error is None:
            raise
        raise error from exc


def cancellation_reasons(exc: BaseException) -> list[str]:
    """The per-action codes of a TransactionCanceledException, in request order."""
    cause: Any = exc.__cause__ if isinstance(exc, WaitTimesError) else exc
    if not isinstance(cause, ClientError):
        return []
    return [str(r.get("Code", "None")) for r in cause.response.get("CancellationReasons", [])]
