"""The service's error hierarchy: everything it raises on purpose derives from WaitTimesError.

Whether trying again may help is a property of the error (``retriable``), decided once
where the error is made: the AWS adapters translate botocore's errors into these
(``service.aws.errors``), and nothing above them looks at botocore's shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class WaitTimesError(Exception):
    """Base of every error the service raises on purpose."""

    retriable: bool = False


class PoisonMessageError(WaitTimesError):
    """A message that can never be processed; it belongs in the dead-letter queue.

    ``reason`` is a short, bounded label (used as a metric label), ``detail`` the
    human-readable explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ConfigurationError(WaitTimesError):
    """A setting or a missing resource that only an operator can fix; never retried.

    The subclasses say which, so the command line can give each its own exit code.
    """


class SettingsError(ConfigurationError):
    """An environment variable is malformed or names something that does not exist."""


class MissingResourceError(ConfigurationError):
    """The queue or the table (or the bus) does not exist where the settings point."""


class CredentialsError(ConfigurationError):
    """The AWS credentials: none found, or AWS refused them."""


class MissingCredentialsError(CredentialsError):
    """No credentials anywhere botocore looks (environment, files, container, instance)."""


class RejectedCredentialsError(CredentialsError):
    """AWS refused the credentials: unknown, expired, or a secret that does not match."""


class AccessDeniedError(ConfigurationError):
    """The credentials are valid but not allowed this call (the task role lacks it).

    ``action`` and ``resource`` are what AWS reported, when its message said.
    """

    def __init__(self, message: str, *, action: str = "", resource: str = "") -> None:
        super().__init__(message)
        self.action = action
        self.resource = resource


THROTTLING = "throttling"  # the kind of every throttled call, whatever AWS's code


class DependencyError(WaitTimesError):
    """An AWS call failed. ``retriable``: throttling, 5xx, network, a transient conflict.

    ``operation`` names the call (``dynamodb.TransactWriteItems``), ``code`` what AWS (or
    the network) answered; both are bounded labels for metrics and logs. ``throttling``:
    AWS throttled the call (decided once, by ``service.aws.errors``). ``unreachable``: the
    endpoint did not answer at all (connection refused or reset, a timeout).
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        code: str = "",
        retriable: bool = True,
        throttling: bool = False,
        unreachable: bool = False,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.code = code
        self.retriable = retriable
        self.throttling = throttling
        self.unreachable = unreachable

    @property
    def kind(self) -> str:
        """What failed, as a bounded label: ``throttling`` for every throttling code, else
        the code."""
        return THROTTLING if self.throttling else self.code


# The exit code of each error that stops a command (the README's table, which a test
# checks). The most specific class first; a shell reports 128 + N for a process signal N
# stopped, and 1 is a bug (a traceback).
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_MISSING_RESOURCE = 3
EXIT_NO_CREDENTIALS = 4
EXIT_REJECTED_CREDENTIALS = 5
EXIT_ACCESS_DENIED = 6
EXIT_AWS_FAILED = 7
EXIT_CODES: tuple[tuple[type[WaitTimesError], int], ...] = (
    (SettingsError, EXIT_USAGE),
    (MissingResourceError, EXIT_MISSING_RESOURCE),
    (MissingCredentialsError, EXIT_NO_CREDENTIALS),
    (RejectedCredentialsError, EXIT_REJECTED_CREDENTIALS),
    (AccessDeniedError, EXIT_ACCESS_DENIED),
    (ConfigurationError, EXIT_MISSING_RESOURCE),
    (DependencyError, EXIT_AWS_FAILED),
)


def walk(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then depth first every exception inside the groups it wraps (task groups
    wrap what they raise, nested when groups are): groups and leaves, in order."""
    yield exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from walk(inner)


def find_error(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` in ``exc`` or, depth first, in the groups it wraps; else None."""
    return next((found for found in walk(exc) if isinstance(found, kind)), None)


@contextmanager
def first_error() -> Iterator[None]:
    """Re-raise the first failure of a task group as itself, so callers see its type."""
    try:
        yield
    except ExceptionGroup as group:
        first = next(leaf for leaf in walk(group) if not isinstance(leaf, BaseExceptionGroup))
        raise first from group


MAX_CONFLICT_ROUNDS = 50  # proposal rounds of a conditional commit before contention fails


def next_round(rounds: int, max_rounds: int = MAX_CONFLICT_ROUNDS) -> int:
    """The number of the next proposal round of a conditional commit (windows, tenants);
    a retriable DependencyError past ``max_rounds`` rounds lost in a row."""
    if rounds >= max_rounds:
        raise DependencyError(
            f"conditional writes lost {max_rounds} races in a row (contention)",
            operation="dynamodb.PutItem",
            code="WindowContention",
        )
    return rounds + 1
