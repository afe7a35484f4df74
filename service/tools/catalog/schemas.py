"""The events catalog's JSON Schemas: the consumed envelopes, the published ones and the
estimate's detail, generated from the models, as strict as their validation."""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from service.core.consumed import (
    OrderRefEnvelope,
    SubmittedEnvelope,
    consumed_event_pattern,
    role_of,
)
from service.core.orders import Role
from service.core.published import (
    AVERAGE_DETAIL_TYPE,
    ESTIMATE_DETAIL_TYPE,
    DrinkAverageTime,
    WaitEstimate,
)
from service.settings import Settings

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
PUBLISHED_SCHEMA_FILE: Final = "drink-average-time.schema.json"
# The published OrderManager.WaitEstimate envelope (the AsyncAPI message's payload).
PUBLISHED_ESTIMATE_SCHEMA_FILE: Final = "wait-estimate.schema.json"
# The detail alone: what replay --estimates prints, one per line (and what the envelope carries).
ESTIMATE_SCHEMA_FILE: Final = "wait-estimate-detail.schema.json"
CONSUMED_SCHEMA_FILES: Final = {
    Role.SUBMITTED: "order-submitted.schema.json",
    Role.COMPLETED: "order-completed.schema.json",
    Role.CANCELLED: "order-cancelled.schema.json",
}


class _PublishedEnvelopeBase(BaseModel):
    """The EventBridge envelope of an event the service publishes, as a rule target receives it."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    version: str = Field("0", description="EventBridge envelope version")
    id: str = Field(min_length=1, description="unique per delivery; a re-send has a new id")
    detail_type: str = Field(alias="detail-type")
    source: str
    account: str | None = Field(None, description="AWS account of the bus (emulators omit it)")
    time: AwareDatetime = Field(description="when the service put the event on the bus")
    region: str | None = None
    resources: list[str] = Field(default_factory=list)


class PublishedEnvelope(_PublishedEnvelopeBase):
    """EventBridge envelope of ``OrderManager.DrinkAverageTime`` as a rule target receives it."""

    detail: DrinkAverageTime


class PublishedEstimateEnvelope(_PublishedEnvelopeBase):
    """EventBridge envelope of ``OrderManager.WaitEstimate`` as a rule target receives it."""

    detail: WaitEstimate


class _CatalogJsonSchema(GenerateJsonSchema):
    """pydantic's generator, made as strict as validation and without generated field titles."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        """Field titles like "Orderid" only repeat the property name."""
        return False

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        """A stripped string with a minimum length needs a non-blank character."""
        json_schema = super().str_schema(schema)
        # The models strip whitespace before checking min_length, so "   " is refused by
        # them; without this pattern the schema would accept it.
        if schema.get("strip_whitespace") and schema.get("min_length", 0) > 0:
            json_schema.setdefault("pattern", r"\S")
        return json_schema


ROLE_TEXT: Final = {
    Role.SUBMITTED: {
        "title": "OrderSubmitted",
        "message": "orderSubmitted",
        "summary": "An order reached the barista: the start of its wait.",
        "description": (
            "Produced by the Serverlesspresso OrderManager workflow when an order waits for "
            "the barista. The service reads detail.orderId, detail.drinkOrder.drink, the "
            "tenant (detail.eventId when it is a string, else the prefix of detail.state "
            "before '-CREATED', else the empty string) and the envelope time."
        ),
    },
    Role.COMPLETED: {
        "title": "OrderCompleted",
        "message": "orderCompleted",
        "summary": "The barista completed an order: the end of its wait.",
        "description": (
            "Produced by the Serverlesspresso OrderManager workflow as "
            "'OrderManager.Order<tenant>-COMPLETED' (legacy 'OrderManager.OrderCompleted'). "
            "The service reads detail.orderId and the envelope time; the wait is completion "
            "time minus submission time, both from envelope times."
        ),
    },
    Role.CANCELLED: {
        "title": "OrderCancelled",
        "message": "orderCancelled",
        "summary": "An order was cancelled or timed out: it never counts in an average.",
        "description": (
            "Produced by the OrderManager workflow as 'OrderManager.Order<tenant>-CANCELLED' "
            "(legacy 'OrderManager.OrderCancelled') and by the OrderProcessor workflow as "
            "'OrderProcessor.OrderTimeOut'. The service reads detail.orderId only."
        ),
    },
}

_ENVELOPE_DESCRIPTIONS: Final = {
    "id": "EventBridge event id",
    "source": "the Serverlesspresso source; events from any other source are ignored",
    "time": (
        "RFC 3339 time EventBridge stamped on the event (1 s resolution); both ends of a "
        "wait come from it, so they share one clock"
    ),
    "account": "AWS account of the bus (emulators omit it)",
    "detail": "the producer's payload; fields the service does not read are allowed",
}


def detail_types_by_role(source: str) -> dict[Role, list[str | dict[str, str]]]:
    """The rule's detail-type entries (exact strings and wildcards), grouped by role."""
    grouped: dict[Role, list[str | dict[str, str]]] = {role: [] for role in Role}
    for entry in consumed_event_pattern(source)["detail-type"]:
        text = entry if isinstance(entry, str) else entry["wildcard"]
        role = role_of(text)
        if role is None:
            raise ValueError(f"rule entry {entry!r} matches no role")
        grouped[role].append(entry)
    return grouped


def wildcard_regex(wildcard: str) -> str:
    """An anchored ECMA-262 (and Python) regex matching what an EventBridge wildcard matches."""
    # Escape by hand: re.escape also escapes "-", which an ECMA-262 regex in unicode mode
    # (the AsyncAPI tools' ajv) refuses outside a character class.
    escaped = re.sub(r"([.^$+?()\[\]{}|\\/])", r"\\\1", wildcard)
    return "^" + escaped.replace("*", ".*") + "$"


def detail_type_schema(role: Role, source: str) -> dict[str, Any]:
    """The JSON Schema of ``detail-type`` for one role, from the rule's own pattern."""
    entries = detail_types_by_role(source)[role]
    exact = sorted(e for e in entries if isinstance(e, str))
    patterns = sorted(wildcard_regex(e["wildcard"]) for e in entries if not isinstance(e, str))
    choices: list[dict[str, Any]] = []
    if len(exact) == 1:
        choices.append({"const": exact[0]})
    elif exact:
        choices.append({"enum": exact})
    choices.extend({"pattern": pattern} for pattern in patterns)
    schema: dict[str, Any] = choices[0] if len(choices) == 1 else {"anyOf": choices}
    return {"type": "string", **schema, "description": "what happened; selects the role"}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema (of what it accepts), as strict as the model itself."""
    return model.model_json_schema(by_alias=True, schema_generator=_CatalogJsonSchema)


def consumed_schema(role: Role, settings: Settings) -> dict[str, Any]:
    """The JSON Schema of a consumed event: the worker's envelope model, narrowed to a role."""
    model = SubmittedEnvelope if role is Role.SUBMITTED else OrderRefEnvelope
    schema = model_schema(model)
    properties = schema["properties"]
    properties["detail-type"] = detail_type_schema(role, settings.source)
    properties["source"] = {"type": "string", "const": settings.source}
    for name, description in _ENVELOPE_DESCRIPTIONS.items():
        properties[name] = {**properties[name], "description": description}
    text = ROLE_TEXT[role]
    return {
        **schema,
        "$schema": JSON_SCHEMA_DIALECT,
        "title": text["title"],
        "description": f"{text['summary']} {text['description']}",
    }


def _published(
    settings: Settings,
    envelope: type[BaseModel],
    detail_type: str,
    keep: str,
    title: str,
    description: str,
) -> dict[str, Any]:
    """The JSON Schema of a published envelope: its detail-type and source fixed."""
    schema = model_schema(envelope)
    properties = schema["properties"]
    properties["detail-type"] = {"type": "string", "const": detail_type}
    properties["source"] = {
        "type": "string",
        "const": settings.source,
        "description": "WAIT_TIMES_SOURCE of the publishing service",
    }
    properties["detail"] = {**properties["detail"], "description": keep}
    return {**schema, "$schema": JSON_SCHEMA_DIALECT, "title": title, "description": description}


def published_schema(settings: Settings) -> dict[str, Any]:
    """The JSON Schema of the published ``OrderManager.DrinkAverageTime`` envelope."""
    return _published(
        settings,
        PublishedEnvelope,
        AVERAGE_DETAIL_TYPE,
        "the average; keep the highest version per (eventId, drink)",
        "DrinkAverageTime",
        "The average wait of the last completed orders of one drink at one tenant, "
        "published by wait-times whenever that key's window changes.",
    )


def published_estimate_schema(settings: Settings) -> dict[str, Any]:
    """The JSON Schema of the published ``OrderManager.WaitEstimate`` envelope."""
    return _published(
        settings,
        PublishedEstimateEnvelope,
        ESTIMATE_DETAIL_TYPE,
        "the estimate; keep the highest version per eventId",
        "WaitEstimate",
        "A tenant's queue-aware wait estimate (its open orders and, per drink, a predicted "
        "wait and its p90), published by wait-times when it changed: at most one per "
        "tenant per flush.",
    )


def estimate_schema() -> dict[str, Any]:
    """The JSON Schema of a ``WaitEstimate`` detail, as ``replay --estimates`` prints it."""
    return {
        **model_schema(WaitEstimate),
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "WaitEstimate detail",
        "description": (
            "A tenant's queue-aware wait estimate: its open orders and, per drink, a predicted "
            "wait and its p90 (docs/design.md, The wait estimate). The detail of "
            "OrderManager.WaitEstimate, and printed as JSON Lines by wait-times replay "
            "--estimates; keep the highest version per eventId."
        ),
    }
