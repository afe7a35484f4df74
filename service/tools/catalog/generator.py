"""The events catalog: JSON Schemas and an AsyncAPI 3.0 document generated from the models.

``wait-times schema`` writes them under ``docs/events/``; a test regenerates them and fails
when the committed copies differ, so the catalog cannot drift from the code. The example
events come from ``examples.py``; the YAML is written by PyYAML. Everything here is pure and
deterministic (sorted keys, no timestamps): the same models and settings always give
byte-identical files.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Final

import yaml
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
    published_event_pattern,
)
from service.settings import Settings
from service.tools.catalog.examples import (
    Example,
    consumed_examples,
    estimate_examples,
    published_examples,
)

# The version of the event contract documented here (AsyncAPI ``info.version``), not of
# the package: bump it when a schema changes in a way consumers must know about.
CONTRACT_VERSION: Final = "1.1.0"  # 1.1.0: OrderManager.WaitEstimate published
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE: Final = "asyncapi.yaml"
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


_ROLE_TEXT: Final = {
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
    text = _ROLE_TEXT[role]
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


def _examples(examples: list[Example]) -> list[dict[str, Any]]:
    """AsyncAPI message examples."""
    return [
        {"name": example.name, "summary": example.summary, "payload": example.envelope}
        for example in examples
    ]


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0 description of the service: the rule-fed queue in, the bus out."""
    pattern = consumed_event_pattern(settings.source)
    messages: dict[str, Any] = {}
    for role, file_name in CONSUMED_SCHEMA_FILES.items():
        text = _ROLE_TEXT[role]
        messages[text["message"]] = {
            "name": text["title"],
            "title": text["title"],
            "summary": text["summary"],
            "description": text["description"],
            "contentType": "application/json",
            "payload": {"$ref": f"./{file_name}"},
            "examples": _examples(consumed_examples(role, settings)),
        }
    messages["drinkAverageTime"] = {
        "name": "DrinkAverageTime",
        "title": "DrinkAverageTime",
        "summary": "The average wait of one drink at one tenant changed.",
        "description": (
            "Published by wait-times, one event per (eventId, drink) whose window changed in "
            "a flush (the messages processed together). Keep the highest detail.version per "
            "(eventId, drink): an event may arrive late, out of order, or twice with the same version. "
            "detail.duration is null when no order in the window counts."
        ),
        "contentType": "application/json",
        "payload": {"$ref": f"./{PUBLISHED_SCHEMA_FILE}"},
        "examples": _examples(published_examples(settings)),
    }
    messages["waitEstimate"] = {
        "name": "WaitEstimate",
        "title": "WaitEstimate",
        "summary": "A tenant's queue-aware wait estimate changed.",
        "description": (
            "Published by wait-times in the same PutEvents calls as the averages: at most one "
            "event per eventId (tenant) per flush, and only when detail.openOrders or some "
            "drink's estimate or p90, rounded to whole seconds, changed; detail.asOf moving "
            "alone is no change. detail.version rises with every change, whichever worker "
            "made it: keep the highest detail.version per eventId. A redelivered message "
            "republishes the tenant's estimate at its current version, so an equal version is "
            "a duplicate. detail.drinks is empty until the tenant has 5 counted orders."
        ),
        "contentType": "application/json",
        "payload": {"$ref": f"./{PUBLISHED_ESTIMATE_SCHEMA_FILE}"},
        "examples": _examples(estimate_examples(settings)),
    }
    consumed_refs = {
        _ROLE_TEXT[role]["message"]: {
            "$ref": f"#/components/messages/{_ROLE_TEXT[role]['message']}"
        }
        for role in CONSUMED_SCHEMA_FILES
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "wait-times",
            "version": CONTRACT_VERSION,
            "description": (
                "Average wait per tenant and drink for Serverlesspresso. The service consumes "
                "order events from the Serverlesspresso EventBridge bus through a rule and an "
                "SQS queue, and publishes OrderManager.DrinkAverageTime and, per tenant, the "
                "queue-aware OrderManager.WaitEstimate back onto the bus. "
                "Generated by `wait-times schema`; see docs/events.md."
            ),
            "license": {"name": "MIT-0", "url": "https://github.com/aws/mit-0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "sqs": {
                "host": "sqs.{region}.amazonaws.com",
                "protocol": "sqs",
                "description": "Amazon SQS, where the rule delivers the consumed events",
                "variables": {"region": {"default": settings.region}},
            },
            "eventbridge": {
                "host": "events.{region}.amazonaws.com",
                "protocol": "https",
                "description": (
                    "Amazon EventBridge (PutEvents), where averages and estimates are published"
                ),
                "variables": {"region": {"default": settings.region}},
            },
        },
        "channels": {
            "orderEvents": {
                "address": settings.queue_name,
                "title": "Order events in",
                "summary": "Order events routed from the bus to the service's queue.",
                "description": (
                    f"The EventBridge rule `{settings.rule_name}` on bus "
                    f"`{settings.event_bus}` matches the pattern below and targets the SQS "
                    f"queue `{settings.queue_name}`; a message received "
                    f"{settings.max_receive_count} times without being processed moves to "
                    f"`{settings.dlq_name}`.\n\n```json\n"
                    f"{json.dumps(pattern, indent=2, sort_keys=True)}\n```"
                ),
                "servers": [{"$ref": "#/servers/sqs"}],
                "messages": consumed_refs,
                "bindings": {
                    "sqs": {
                        "bindingVersion": "0.2.0",
                        "queue": {
                            "name": settings.queue_name,
                            "fifoQueue": False,
                            "visibilityTimeout": settings.visibility_timeout_seconds,
                            "receiveMessageWaitTime": settings.receive_wait_seconds,
                            "redrivePolicy": {
                                "deadLetterQueue": {"name": settings.dlq_name},
                                "maxReceiveCount": settings.max_receive_count,
                            },
                        },
                        "deadLetterQueue": {"name": settings.dlq_name, "fifoQueue": False},
                    }
                },
                "x-eventbridge-rule": {
                    "name": settings.rule_name,
                    "eventBusName": settings.event_bus,
                    "eventPattern": pattern,
                },
            },
            "drinkAverages": {
                "address": settings.event_bus,
                "title": "Averages and estimates out",
                "summary": "The EventBridge bus the averages and estimates are put on.",
                "description": (
                    f"PutEvents onto bus `{settings.event_bus}` with source "
                    f"`{settings.source}` and detail-type `{AVERAGE_DETAIL_TYPE}` or "
                    f"`{ESTIMATE_DETAIL_TYPE}`, both in the same calls. A downstream rule "
                    "selects both with the pattern below, or one of them by listing its "
                    "detail-type alone.\n\n```json\n"
                    f"{json.dumps(published_event_pattern(settings.source), indent=2, sort_keys=True)}"
                    "\n```"
                ),
                "servers": [{"$ref": "#/servers/eventbridge"}],
                "messages": {
                    "drinkAverageTime": {"$ref": "#/components/messages/drinkAverageTime"},
                    "waitEstimate": {"$ref": "#/components/messages/waitEstimate"},
                },
                "x-eventbridge-pattern": published_event_pattern(settings.source),
            },
        },
        "operations": {
            "receiveOrderEvents": {
                "action": "receive",
                "title": "Receive order events",
                "summary": "Long-poll the queue; pair submissions with completions.",
                "channel": {"$ref": "#/channels/orderEvents"},
                "messages": [
                    {"$ref": f"#/channels/orderEvents/messages/{name}"} for name in consumed_refs
                ],
            },
            "sendDrinkAverageTime": {
                "action": "send",
                "title": "Publish averages",
                "summary": "One event per changed (eventId, drink) window per flush.",
                "channel": {"$ref": "#/channels/drinkAverages"},
                "messages": [{"$ref": "#/channels/drinkAverages/messages/drinkAverageTime"}],
            },
            "sendWaitEstimate": {
                "action": "send",
                "title": "Publish estimates",
                "summary": "At most one event per tenant per flush, when its estimate changed.",
                "channel": {"$ref": "#/channels/drinkAverages"},
                "messages": [{"$ref": "#/channels/drinkAverages/messages/waitEstimate"}],
            },
        },
        "components": {"messages": messages},
    }


def to_json(value: Any) -> str:
    """Stable JSON text: sorted keys, two-space indent, final newline."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


class _CatalogDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, without anchors and aliases: a repeated object is written again."""

    def ignore_aliases(self, data: Any) -> bool:
        """Every node is written in full, so the file reads without resolving ``*id001``."""
        return True


# Numbers in YAML 1.2 (the AsyncAPI tools' parser) that PyYAML's YAML 1.1 rules read as
# strings ("1e3", "0o17", ".5"): resolving them as numbers here makes the dumper quote such
# strings, so YAML 1.1 and 1.2 parsers read the file alike.
_YAML12_NUMBER: Final = re.compile(
    r"(?:[-+]?(?:[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"  # integers
    r"|(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"  # floats
    r"|\.inf|\.Inf|\.INF)|\.nan|\.NaN|\.NAN)\Z"
)
_CatalogDumper.add_implicit_resolver(
    "tag:yaml.org,2002:float", _YAML12_NUMBER, list("-+0123456789.")
)


def _represent_finite_float(dumper: _CatalogDumper, value: float) -> yaml.ScalarNode:
    """A float as PyYAML writes it; NaN and infinities have no JSON form, so they are refused."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} has no portable YAML form")
    return dumper.represent_float(value)


_CatalogDumper.add_representer(float, _represent_finite_float)


def to_yaml(value: Any) -> str:
    """Block-style YAML of JSON-like data, readable by YAML 1.1 and 1.2 parsers alike.

    PyYAML's safe dumper with sorted keys and no line folding, so the text is stable. A
    string is quoted whenever a YAML 1.1 or 1.2 parser could read it as anything else, so
    ``yaml.safe_load`` gives the data back.
    """
    return yaml.dump(
        value,
        Dumper=_CatalogDumper,
        sort_keys=True,
        allow_unicode=True,
        default_flow_style=False,
        width=math.inf,
    )


def build_catalog(settings: Settings) -> dict[str, str]:
    """Every catalog file: name to exact text."""
    files = {
        file_name: to_json(consumed_schema(role, settings))
        for role, file_name in CONSUMED_SCHEMA_FILES.items()
    }
    files[PUBLISHED_SCHEMA_FILE] = to_json(published_schema(settings))
    files[PUBLISHED_ESTIMATE_SCHEMA_FILE] = to_json(published_estimate_schema(settings))
    files[ESTIMATE_SCHEMA_FILE] = to_json(estimate_schema())
    files[ASYNCAPI_FILE] = (
        "# Generated by `wait-times schema` from service/tools/catalog/generator.py; do not edit.\n"
        + to_yaml(asyncapi_document(settings))
    )
    return dict(sorted(files.items()))


def write_catalog(out: Path, settings: Settings) -> list[Path]:
    """Write the catalog under ``out`` (created if missing); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in build_catalog(settings).items():
        path = out / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
