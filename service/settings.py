"""Configuration from the environment (prefix ``WAIT_TIMES_`` plus the standard AWS variables)."""

from __future__ import annotations

import difflib
import os
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import SettingsError

DEFAULT_SOURCE = "awsserverlessda.serverlesspresso"
# The spellings people type for a level, beyond the canonical lower-case names.
LEVEL_ALIASES = {"warn": "warning", "err": "error"}
# Where the region and the endpoint come from (the first one set wins, as pydantic reads).
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")


class Settings(BaseSettings):
    """Every knob of the service; `run` and `provision` read the same ones, so names agree."""

    model_config = SettingsConfigDict(
        env_prefix="WAIT_TIMES_", extra="ignore", frozen=True, populate_by_name=True
    )

    event_bus: str = Field("Serverlesspresso", min_length=1, max_length=256)
    queue_name: str = Field("wait-times", min_length=1, max_length=76, pattern=r"^[A-Za-z0-9_-]+$")
    table_name: str = Field(
        "wait-times", min_length=3, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    rule_name: str = Field("wait-times-orders", min_length=1, max_length=64)
    source: str = Field(DEFAULT_SOURCE, min_length=1, description="source of events in and out")
    window_size: int = Field(10, ge=1, le=1000)
    max_wait_seconds: int = Field(7200, ge=1)
    pending_ttl_seconds: int = Field(86400, ge=60)
    max_clock_skew_seconds: int = Field(86400, ge=0)
    completion_event: Literal["completed", "order-finished"] = Field(
        "completed", description="the event that ends a wait (docs/design.md, Events in)"
    )
    metrics_host: str = "0.0.0.0"  # noqa: S104 - the container must be scrapable from outside
    metrics_port: int = Field(9102, ge=0, le=65535)
    max_receives_per_flush: int = Field(10, ge=1, le=100)
    receive_wait_seconds: int = Field(20, ge=0, le=20)
    visibility_timeout_seconds: int = Field(30, ge=5, le=43200)
    max_receive_count: int = Field(5, ge=1, le=1000)
    drain_seconds: float = Field(20.0, gt=0, le=120)
    max_windows_in_memory: int = Field(100_000, ge=1)
    max_metric_series: int = Field(1000, ge=0)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    region: str = Field(
        "us-east-1",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
        min_length=1,
    )
    endpoint_url: str | None = Field(None, validation_alias=AliasChoices("AWS_ENDPOINT_URL"))

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        # WAIT_TIMES_LOG_LEVEL=INFO, Info and info are the same level.
        if isinstance(value, str):
            value = value.strip().lower()
            return LEVEL_ALIASES.get(value, value)
        return value

    @model_validator(mode="after")
    def _ttl_covers_max_wait(self) -> Settings:
        # Expiry is garbage collection only because any pair further apart than the TTL is
        # already an anomaly; that keeps windows independent of when halves arrive.
        if self.pending_ttl_seconds <= self.max_wait_seconds:
            raise ValueError(
                "WAIT_TIMES_PENDING_TTL_SECONDS must be greater than WAIT_TIMES_MAX_WAIT_SECONDS"
            )
        return self

    @property
    def dlq_name(self) -> str:
        """The dead-letter queue always sits beside the queue."""
        return f"{self.queue_name}-dlq"

    def to_environ(self) -> dict[str, str]:
        """The environment variables that, read back by ``Settings()``, give these settings.

        Every field becomes ``WAIT_TIMES_<FIELD>``, except the AWS ones, which take their
        standard name (``AWS_REGION``, ``AWS_ENDPOINT_URL``). Values are the strings
        pydantic-settings parses back (``str()`` of numbers, a Literal's value). A field that
        is None (no endpoint) is left out: it reads back as None only if the environment
        these variables join does not name it either. Child processes get their settings
        this way.
        """
        prefix = self.model_config.get("env_prefix", "")
        environ: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            alias = info.validation_alias
            if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
                variable = alias.choices[0]
            else:
                variable = f"{prefix}{name}".upper()
            environ[variable] = str(value)
        return environ


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning validation failures into one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def region_variable() -> str:
    """The environment variable the region was read from (``AWS_REGION`` when none is set)."""
    return next((name for name in REGION_VARIABLES if name in os.environ), REGION_VARIABLES[0])


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad setting, naming the environment variable an operator must fix."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in ("region", *REGION_VARIABLES):
            name = region_variable()
        elif field in ("endpoint_url", "AWS_ENDPOINT_URL"):
            name = "AWS_ENDPOINT_URL"
        else:
            name = f"WAIT_TIMES_{field.upper()}" if field else "settings"
        value = error.get("input")
        shown = f"={value!r}" if field and not isinstance(value, dict) else ""
        message = error["msg"]
        if name in REGION_VARIABLES and value == "":
            message = "empty; set an AWS region such as eu-west-1, or unset it (us-east-1)"
        lines.append(f"invalid setting {name}{shown}: {message}")
    return "; ".join(lines)


def check_region(settings: Settings) -> None:
    """Refuse a region AWS does not have, unless an endpoint of one's own is configured.

    The list is botocore's partition data (every partition: aws, aws-cn, aws-us-gov, ...):
    the regions where SQS, DynamoDB and EventBridge all exist. An emulator accepts any
    region name, so with ``AWS_ENDPOINT_URL`` (or a per-service ``AWS_ENDPOINT_URL_*``)
    nothing is checked.
    """
    if settings.endpoint_url or any(name.startswith("AWS_ENDPOINT_URL_") for name in os.environ):
        return
    regions = known_regions()
    if settings.region in regions:
        return
    close = difflib.get_close_matches(settings.region.lower(), sorted(regions), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise SettingsError(
        f"invalid setting {region_variable()}={settings.region!r}: not an AWS region with "
        f"SQS, DynamoDB and EventBridge{hint}; set AWS_ENDPOINT_URL to use an emulator"
    )


def known_regions() -> frozenset[str]:
    """Regions where all three services the worker uses exist, from botocore's own data."""
    from botocore.session import get_session  # noqa: PLC0415 - only commands that call AWS

    session = get_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        services = [
            set(session.get_available_regions(service, partition))
            for service in ("sqs", "dynamodb", "events")
        ]
        regions |= set.intersection(*services)
    return frozenset(regions)
