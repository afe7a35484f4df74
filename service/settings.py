"""Configuration from the environment (prefix ``WAIT_TIMES_`` plus the standard AWS variables)."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.errors import SettingsError

DEFAULT_SOURCE = "awsserverlessda.serverlesspresso"
# The spellings people type for a level, beyond the canonical lower-case names.
LEVEL_ALIASES = {"warn": "warning", "err": "error"}
# Where the region and the endpoint come from (the first one set wins, as pydantic reads).
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")

# The services the worker calls (botocore client names) and the standard variable that
# names each one's endpoint (AWS_ENDPOINT_URL_ + botocore's service id: EventBridge's
# client is "events", its variable AWS_ENDPOINT_URL_EVENTBRIDGE).
SERVICE_ENDPOINT_VARIABLES = {
    "sqs": "AWS_ENDPOINT_URL_SQS",
    "events": "AWS_ENDPOINT_URL_EVENTBRIDGE",
    "dynamodb": "AWS_ENDPOINT_URL_DYNAMODB",
}
GENERAL_ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"
# Settings fields that override endpoints from code; never read from the environment.
ENDPOINT_FIELDS = {
    "endpoint_url": GENERAL_ENDPOINT_VARIABLE,
    **{f"{service}_endpoint_url": name for service, name in SERVICE_ENDPOINT_VARIABLES.items()},
}


# An SQS queue name with room for the `-dlq` of its dead-letter queue; an EventBridge rule's.
QueueName = Annotated[str, Field(min_length=1, max_length=76, pattern=r"^[A-Za-z0-9_-]+$")]
RuleName = Annotated[str, Field(min_length=1, max_length=64)]


class _EnvWithoutEndpoints(EnvSettingsSource):
    """The environment, less the endpoint fields: botocore reads those variables itself."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in ENDPOINT_FIELDS:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class Settings(BaseSettings):
    """Every knob of the service; `run` and `provision` read the same ones, so names agree."""

    model_config = SettingsConfigDict(
        env_prefix="WAIT_TIMES_", extra="ignore", frozen=True, populate_by_name=True
    )

    event_bus: str = Field(
        "Serverlesspresso",
        min_length=1,
        max_length=256,
        description="bus consumed and published to",
    )
    queue_name: QueueName = Field("wait-times", description="the queue; its DLQ is `<name>-dlq`")
    table_name: str = Field(
        "wait-times",
        min_length=3,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the DynamoDB table",
    )
    rule_name: RuleName = Field(
        "wait-times-orders", description="the EventBridge rule feeding the queue"
    )
    source: str = Field(DEFAULT_SOURCE, min_length=1, description="source consumed and published")
    window_size: int = Field(10, ge=1, le=1000, description="N, orders per window")
    max_wait_seconds: int = Field(
        7200, ge=1, description="longer waits are anomalies, never averaged"
    )
    estimator: str = Field(
        "hinge", min_length=1, description="the wait estimate's model, by its registered name"
    )
    pending_ttl_seconds: int = Field(
        86400, ge=60, description="unpaired halves expire (must exceed the max wait)"
    )
    max_clock_skew_seconds: int = Field(
        86400, ge=0, description="events further in the future are poison"
    )
    completion_event: Literal["completed", "order-finished"] = Field(
        "completed",
        description="the event that ends a wait: `completed` (the barista's "
        "`OrderManager.Order<tenant>-COMPLETED`) or `order-finished` "
        "(`OrderProcessor.orderFinished`, which fires for cancelled orders too: a "
        "cancellation seen still excludes the order); `provision` brings the rule to it "
        "(docs/design.md, Events in)",
    )
    metrics_host: str = Field(
        "0.0.0.0",  # noqa: S104 - the container must be scrapable from outside
        description="address the metrics server binds (the container must be scrapable)",
    )
    metrics_port: int = Field(
        9102,
        ge=0,
        le=65535,
        description="port of `/metrics`, `/healthz`, `/readyz` (`0`: any free port)",
    )
    max_receives_per_flush: int = Field(
        10,
        ge=1,
        le=100,
        description="while receives come back full (a backlog), how many (10 messages each) "
        "one flush may take",
    )
    batch_window_seconds: float = Field(
        0.25,
        ge=0,
        le=20,
        description="when a flush of several messages emptied the queue (traffic faster than "
        "the worker turns around), how long the next receive waits so it comes back fuller; a "
        "lone message or a backlog never waits (`0`: never)",
    )
    receive_wait_seconds: int = Field(20, ge=0, le=20, description="SQS long poll")
    visibility_timeout_seconds: int = Field(
        30, ge=5, le=43200, description="a crashed worker's messages return after this"
    )
    max_receive_count: int = Field(
        5,
        ge=1,
        le=1000,
        description="receives before a message goes to the DLQ: the redrive policy set by "
        "`provision`",
    )
    drain_seconds: float = Field(
        20.0,
        gt=0,
        le=120,
        description="SIGTERM budget for the flush in flight (ECS stopTimeout must exceed it)",
    )
    max_windows_in_memory: int = Field(
        100_000, ge=1, description="windows cached per process (LRU)"
    )
    max_tenants_in_memory: int = Field(
        50_000,
        ge=1,
        description="tenant states (open orders, the estimate) cached per process (LRU)",
    )
    max_metric_series: int = Field(
        1000,
        ge=0,
        description="cap on (tenant, drink) gauge series (averages, estimates), and on tenants "
        "with series of their own",
    )
    board_enabled: bool = Field(
        False, description="`provision` also creates the wait board's queue, DLQ and rule"
    )
    board_queue_name: QueueName = Field(
        "wait-times-board", description="the board's queue (one per board); DLQ `<name>-dlq`"
    )
    board_rule_name: RuleName = Field(
        "wait-times-board", description="the rule feeding the board's queue the published events"
    )
    board_host: str = Field(
        "0.0.0.0",  # noqa: S104 - the container must be reachable by its load balancer
        description="address the board's web server binds",
    )
    board_port: int = Field(8080, ge=0, le=65535, description="port of the board (`0`: any)")
    board_tenants: str = Field(
        "", description="comma-separated tenants the board serves (empty: all); others get 404"
    )
    board_max_keys: int = Field(
        10_000, ge=1, description="averages, and estimates, the board keeps in memory (LRU)"
    )
    board_max_streams: int = Field(
        100, ge=1, description="live streams the board serves at once; one more gets a 503"
    )
    board_keepalive_seconds: float = Field(
        15.0, gt=0, le=300, description="a keep-alive comment on an idle live stream this often"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="`auto`: `json` when stdout is not a terminal, else readable (`console`); "
        "any case",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="`debug`, `info`, `warning` (or `warn`), `error`; any case (`INFO` too)",
    )
    region: str = Field(
        "us-east-1",
        validation_alias=AliasChoices(*REGION_VARIABLES),
        min_length=1,
        description="the AWS region; must not be empty; without `AWS_ENDPOINT_URL` it must be "
        "a region botocore knows with SQS, DynamoDB and EventBridge",
    )
    # Endpoints. The environment does not set these: botocore resolves each client's
    # endpoint itself, exactly as the AWS SDKs document (AWS_ENDPOINT_URL_<SERVICE>, then
    # AWS_ENDPOINT_URL, then the shared config file's services section and endpoint_url,
    # all of them off with AWS_IGNORE_CONFIGURED_ENDPOINT_URLS). Code that starts its own
    # emulator (tests, demo, bench) sets them; set, they win over all of those, a
    # service's own over the general one, as the variables they are named after.
    endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices(GENERAL_ENDPOINT_VARIABLE),
        description="endpoint imposed on every client by code that starts its own emulator; "
        f"never read from the environment (botocore reads {GENERAL_ENDPOINT_VARIABLE})",
    )
    sqs_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices(SERVICE_ENDPOINT_VARIABLES["sqs"]),
        description="SQS endpoint imposed by code, over endpoint_url; never read from the "
        f"environment (botocore reads {SERVICE_ENDPOINT_VARIABLES['sqs']})",
    )
    events_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices(SERVICE_ENDPOINT_VARIABLES["events"]),
        description="EventBridge endpoint imposed by code, over endpoint_url; never read from "
        f"the environment (botocore reads {SERVICE_ENDPOINT_VARIABLES['events']})",
    )
    dynamodb_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices(SERVICE_ENDPOINT_VARIABLES["dynamodb"]),
        description="DynamoDB endpoint imposed by code, over endpoint_url; never read from the "
        f"environment (botocore reads {SERVICE_ENDPOINT_VARIABLES['dynamodb']})",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment without the endpoint variables (see above)."""
        return init_settings, _EnvWithoutEndpoints(settings_cls)

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

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint these settings impose on a client (``sqs``, ``events``, ``dynamodb``):
        the service's own, else the general one; None leaves it to botocore."""
        own: str | None = getattr(self, f"{service}_endpoint_url")
        return own or self.endpoint_url

    def through(self, url: str) -> Settings:
        """The same settings with every client on ``url`` (a proxy in front of the endpoints)."""
        return self.model_copy(update=dict.fromkeys(ENDPOINT_FIELDS, None) | {"endpoint_url": url})

    def to_environ(self) -> dict[str, str]:
        """The environment variables that, read back by ``Settings()``, give these settings.

        Every field becomes ``WAIT_TIMES_<FIELD>``, except the AWS ones, which take their
        standard name (``AWS_REGION``). Values are the strings pydantic-settings parses back
        (``str()`` of numbers, a Literal's value). A field that is None is left out. Child
        processes get their settings this way.

        Endpoints are read back by botocore, not by ``Settings()``: an imposed endpoint
        becomes ``AWS_ENDPOINT_URL`` and, for every service, ``AWS_ENDPOINT_URL_<SERVICE>``
        with the URL ``endpoint_for`` gives it, so the child's clients land where these
        settings put them whatever service variable the environment they join already has
        (unless it sets AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: callers leave that out).
        """
        prefix = self.model_config.get("env_prefix", "")
        environ: dict[str, str] = {}
        if self.endpoint_url:
            environ[GENERAL_ENDPOINT_VARIABLE] = self.endpoint_url
        for service, variable in SERVICE_ENDPOINT_VARIABLES.items():
            url = self.endpoint_for(service)
            if url:
                environ[variable] = url
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None or name in ENDPOINT_FIELDS:
                continue
            environ[environment_variables(name, info, prefix)[0]] = str(value)
        return environ


def setting_default(name: str) -> Any:
    """The default of setting ``name`` as ``Settings`` declares it: what takes a setting as an
    argument defaults to this, so every default is written once, in ``Settings``."""
    return Settings.model_fields[name].default


def environment_variables(name: str, info: FieldInfo, prefix: str = "WAIT_TIMES_") -> list[str]:
    """The environment variables a field is read from: its aliases in order (``AWS_REGION``,
    then ``AWS_DEFAULT_REGION``), else ``<prefix><FIELD>``. ``to_environ`` writes the first."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [f"{prefix}{name}".upper()]


def configuration_rows() -> list[str]:
    """README's configuration table, one row per setting read from the environment: the
    variable, its default and its description, in declaration order. The endpoint fields
    are left out (botocore reads their variables; the README describes those by hand).
    ``python -m service.settings`` prints them.
    """
    prefix = Settings.model_config.get("env_prefix", "")
    rows = []
    for name, info in Settings.model_fields.items():
        if name in ENDPOINT_FIELDS:
            continue
        first, *others = (f"`{v}`" for v in environment_variables(name, info, prefix))
        variable = f"{first} (or {', '.join(others)})" if others else first
        default = info.default
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        meaning = (info.description or "").replace("|", "\\|")
        rows.append(f"| {variable} | `{shown}` | {meaning} |")
    return rows


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
        elif field in ENDPOINT_FIELDS:
            name = ENDPOINT_FIELDS[field]
        elif field in ENDPOINT_FIELDS.values():
            name = field
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


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What the worker and its flushes read of the configuration, and nothing else: the
    wiring builds it (``worker_options``), so the worker never holds ``Settings``.

    ``redrive_limit`` is the queue's real ``maxReceiveCount`` as the worker found it at
    start (None: the queue has no dead-letter queue), not ``Settings.max_receive_count``,
    which is what ``provision`` sets.
    """

    source: str = setting_default("source")
    completion_event: str = setting_default("completion_event")
    window_size: int = setting_default("window_size")
    max_wait_seconds: int = setting_default("max_wait_seconds")
    pending_ttl_seconds: int = setting_default("pending_ttl_seconds")
    max_clock_skew_seconds: int = setting_default("max_clock_skew_seconds")
    max_receives_per_flush: int = setting_default("max_receives_per_flush")
    batch_window_seconds: float = setting_default("batch_window_seconds")
    drain_seconds: float = setting_default("drain_seconds")
    redrive_limit: int | None = None


def worker_options(settings: Settings, *, redrive_limit: int | None = None) -> WorkerOptions:
    """The worker's options from the settings, with the queue's redrive limit."""
    return WorkerOptions(
        source=settings.source,
        completion_event=settings.completion_event,
        window_size=settings.window_size,
        max_wait_seconds=settings.max_wait_seconds,
        pending_ttl_seconds=settings.pending_ttl_seconds,
        max_clock_skew_seconds=settings.max_clock_skew_seconds,
        max_receives_per_flush=settings.max_receives_per_flush,
        batch_window_seconds=settings.batch_window_seconds,
        drain_seconds=settings.drain_seconds,
        redrive_limit=redrive_limit,
    )


if __name__ == "__main__":
    print("\n".join(configuration_rows()))
