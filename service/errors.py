"""The service's error hierarchy: everything it raises on purpose derives from WaitTimesError."""


class WaitTimesError(Exception):
    """Base of every error the service raises on purpose."""


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
    """A setting or a missing resource that only an operator can fix."""


class DependencyError(WaitTimesError):
    """An AWS dependency failed in a way that retrying may fix (throttling, 5xx, network)."""
