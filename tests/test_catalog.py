"""The events catalog: generated from the models, committed, strict, and valid AsyncAPI."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
import yaml

from service.app import run_worker
from service.core.consumed import (
    DrinkOrder,
    OrderRefDetail,
    SubmittedDetail,
    consumed_event_pattern,
    parse_envelope,
    role_of,
)
from service.core.orders import Role
from service.core.published import (
    AVERAGE_DETAIL_TYPE,
    ESTIMATE_DETAIL_TYPE,
    DrinkAverageTime,
    DrinkWait,
    WaitEstimate,
    published_event_pattern,
)
from service.errors import PoisonMessageError
from service.settings import DEFAULT_SOURCE, Settings
from service.tools.catalog.asyncapi import asyncapi_document
from service.tools.catalog.examples import (
    RECORDED_EXAMPLES,
    consumed_examples,
    estimate_examples,
    published_examples,
)
from service.tools.catalog.generator import ASYNCAPI_FILE, build_catalog, to_yaml, write_catalog
from service.tools.catalog.schemas import (
    CONSUMED_SCHEMA_FILES,
    ESTIMATE_SCHEMA_FILE,
    PUBLISHED_ESTIMATE_SCHEMA_FILE,
    PUBLISHED_SCHEMA_FILE,
    consumed_schema,
    estimate_schema,
    published_estimate_schema,
    published_schema,
)
from service.tools.player import play_generated
from service.tools.replay import replay, replay_estimates
from tests.helpers import DATA, RECORDING, ROOT, Aws

CATALOG_DIR = ROOT / "docs" / "events"
EVENTS_MD = ROOT / "docs" / "events.md"
ASYNCAPI_CLI = ROOT / ".tools" / "npm" / "node_modules" / ".bin" / "asyncapi"
REGENERATE = "regenerate with `.venv/bin/wait-times schema` (no WAIT_TIMES_* variables set)"
SUBMITTED = DATA / "event-player/order-7ea64372-lifecycle"
SUBMISSION = SUBMITTED / "01_OrderManager.WaitingCompletion__events-json-index59.json"
COMPLETION = SUBMITTED / "02_OrderManager.OrderNYC-COMPLETED__events-json-index67.json"


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the committed catalog is generated with: defaults, whatever the shell has."""
    for name in list(os.environ):
        if name.startswith("WAIT_TIMES_") or name in {"AWS_REGION", "AWS_DEFAULT_REGION"}:
            monkeypatch.delenv(name)
    return Settings()


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A Draft 2020-12 validator that also checks formats (date-time via rfc3339-validator)."""
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def errors(schema: dict[str, Any], instance: Any) -> list[str]:
    return [error.message for error in validator(schema).iter_errors(instance)]


def published_schemas(settings: Settings) -> dict[str, dict[str, Any]]:
    """The schema of each published envelope, by its detail-type."""
    return {
        AVERAGE_DETAIL_TYPE: published_schema(settings),
        ESTIMATE_DETAIL_TYPE: published_estimate_schema(settings),
    }


def recorded_envelopes() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every recorded event in the reference folder, named by file (and index in arrays)."""
    for path in sorted(DATA.rglob("*.json")):
        name = str(path.relative_to(DATA))
        loaded = json.loads(path.read_text())
        if isinstance(loaded, list):
            yield from ((f"{name}[{i}]", event) for i, event in enumerate(loaded))
        else:
            yield name, loaded


RECORDED = list(recorded_envelopes())


# --- generated, deterministic, committed ---------------------------------------------------


@pytest.mark.unit
def test_committed_catalog_matches_the_models(default_settings: Settings) -> None:
    generated = build_catalog(default_settings)
    on_disk = {p.name: p.read_text() for p in CATALOG_DIR.iterdir()} if CATALOG_DIR.is_dir() else {}
    stale = sorted(name for name, text in generated.items() if on_disk.get(name) != text)
    extra = sorted(set(on_disk) - set(generated))
    assert not stale, f"docs/events/ is stale ({', '.join(stale)}): {REGENERATE}"
    assert not extra, f"docs/events/ holds files the catalog no longer makes: {extra}"


@pytest.mark.integration
def test_build_is_deterministic_and_the_cli_writes_it(
    default_settings: Settings, tmp_path: Path
) -> None:
    assert build_catalog(default_settings) == build_catalog(default_settings)
    written = write_catalog(tmp_path / "direct", default_settings)
    assert [p.name for p in written] == sorted(build_catalog(default_settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAIT_TIMES_")}
    env.pop("AWS_REGION", None)
    env.pop("AWS_DEFAULT_REGION", None)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from service.cli import main; sys.exit(main())",
            "schema",
            "--out",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "cli" / p.name) for p in written]
    for path in written:
        assert (tmp_path / "cli" / path.name).read_bytes() == path.read_bytes()


@pytest.mark.integration
def test_catalog_imports_no_io_library() -> None:
    code = (
        "import sys, service.tools.catalog.generator\n"
        "print(sorted(m for m in ('aiobotocore', 'botocore', 'anyio') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


# --- consumed schemas: the recordings, hostile inputs, and the rule ------------------------


@pytest.mark.unit
def test_reference_recordings_are_present() -> None:
    assert len(RECORDED) > 183, f"no recordings under {DATA}"
    consumed = [name for name, event in RECORDED if role_of(event["detail-type"]) is not None]
    assert len(consumed) >= 50


@pytest.mark.unit
@pytest.mark.parametrize(("name", "envelope"), RECORDED, ids=[name for name, _ in RECORDED])
def test_each_recording_validates_against_its_role_schema_only(
    name: str, envelope: dict[str, Any], default_settings: Settings
) -> None:
    role = role_of(envelope["detail-type"])
    for candidate in Role:
        found = errors(consumed_schema(candidate, default_settings), envelope)
        if candidate is role:
            assert found == [], f"{name} is consumed as {role} but fails its schema: {found}"
        else:
            assert found, f"{name} ({role}) also validates as {candidate}"
    if role is not None:  # the worker's own parse agrees
        assert parse_envelope(envelope, source=default_settings.source) is not None


def _submission() -> dict[str, Any]:
    return json.loads(SUBMISSION.read_text())


def _completion() -> dict[str, Any]:
    return json.loads(COMPLETION.read_text())


def _without(envelope: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(envelope)
    target = changed
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return changed


def _with(envelope: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(envelope)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return changed


HOSTILE = {
    "submission without orderId": lambda: _without(_submission(), "detail", "orderId"),
    "submission with empty orderId": lambda: _with(_submission(), "", "detail", "orderId"),
    "submission with blank orderId": lambda: _with(_submission(), "  \t", "detail", "orderId"),
    "submission with numeric orderId": lambda: _with(_submission(), 7, "detail", "orderId"),
    "submission with null orderId": lambda: _with(_submission(), None, "detail", "orderId"),
    "submission with oversized orderId": lambda: _with(
        _submission(), "x" * 129, "detail", "orderId"
    ),
    "submission without drink": lambda: _without(_submission(), "detail", "drinkOrder", "drink"),
    "submission with empty drink": lambda: _with(
        _submission(), "", "detail", "drinkOrder", "drink"
    ),
    "submission with blank drink": lambda: _with(
        _submission(), " ", "detail", "drinkOrder", "drink"
    ),
    "submission without drinkOrder": lambda: _without(_submission(), "detail", "drinkOrder"),
    "submission with string drinkOrder": lambda: _with(
        _submission(), "Latte", "detail", "drinkOrder"
    ),
    "submission without detail": lambda: _without(_submission(), "detail"),
    "submission with list detail": lambda: _with(_submission(), [], "detail"),
    "submission without time": lambda: _without(_submission(), "time"),
    "submission with naive time": lambda: _with(_submission(), "2022-10-14T12:56:26", "time"),
    "submission with junk time": lambda: _with(_submission(), "yesterday", "time"),
    "completion without orderId": lambda: _without(_completion(), "detail", "orderId"),
    "completion with empty orderId": lambda: _with(_completion(), "", "detail", "orderId"),
    "completion with object orderId": lambda: _with(_completion(), {}, "detail", "orderId"),
    "completion without detail": lambda: _without(_completion(), "detail"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_poison_events_fail_the_schema_as_they_fail_the_model(
    case: str, default_settings: Settings
) -> None:
    envelope = HOSTILE[case]()
    role = role_of(envelope["detail-type"])
    assert role is not None
    assert errors(consumed_schema(role, default_settings), envelope), f"{case} passes the schema"
    with pytest.raises(PoisonMessageError):
        parse_envelope(envelope, source=default_settings.source)


ACCEPTED = {
    "submission without account or id": lambda: _without(_without(_submission(), "account"), "id"),
    "submission with numeric eventId": lambda: _with(_submission(), 42, "detail", "eventId"),
    "submission with padded orderId": lambda: _with(_submission(), "  a1 ", "detail", "orderId"),
    "submission with offset time": lambda: _with(
        _submission(), "2022-10-14T14:56:26+02:00", "time"
    ),
    "submission with extra fields": lambda: _with(_submission(), {"x": 1}, "detail", "extra"),
    "completion with null eventId": lambda: _with(_completion(), None, "detail", "eventId"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_what_the_model_accepts_the_schema_accepts(case: str, default_settings: Settings) -> None:
    envelope = ACCEPTED[case]()
    role = role_of(envelope["detail-type"])
    assert role is not None
    assert parse_envelope(envelope, source=default_settings.source) is not None
    assert errors(consumed_schema(role, default_settings), envelope) == []


@pytest.mark.unit
@pytest.mark.parametrize(
    "detail_type",
    [
        "OrderManager.WaitingCompletion",
        "OrderManager.OrderCompleted",
        "OrderManager.OrderCancelled",
        "OrderProcessor.OrderTimeOut",
        "OrderManager.OrderNYC-COMPLETED",
        "OrderManager.OrderABC123-CANCELLED",
        "OrderManager.Order-COMPLETED",
        "OrderManager.OrderNYC-COMPLETED-CANCELLED",
        "OrderManager.OrderNYC-COMPLETEDX",
        "XOrderManager.OrderNYC-COMPLETED",
        "OrderManagerXOrderNYC-COMPLETED",
        "OrderManager.OrderStarted",
        "OrderProcessor.orderFinished",
        "OrderProcessor.WaitingCompletion",
        "OrderManager.DrinkAverageTime",
        "OrderManager.WaitEstimate",
        "",
    ],
)
def test_detail_type_constraints_agree_with_the_worker(
    detail_type: str, default_settings: Settings
) -> None:
    for role in Role:
        schema = consumed_schema(role, default_settings)["properties"]["detail-type"]
        matches = not errors(schema, detail_type)
        assert matches == (role_of(detail_type) is role), (detail_type, role)


@pytest.mark.unit
def test_schemas_follow_the_configured_source() -> None:
    settings = Settings(source="example.other")
    envelope = {**_submission(), "source": "example.other"}
    assert errors(consumed_schema(Role.SUBMITTED, settings), envelope) == []
    assert errors(consumed_schema(Role.SUBMITTED, settings), _submission())
    for schema in published_schemas(settings).values():
        assert schema["properties"]["source"]["const"] == "example.other"


@pytest.mark.unit
def test_the_published_pattern_selects_both_published_events_and_nothing_consumed() -> None:
    pattern = published_event_pattern(DEFAULT_SOURCE)
    assert pattern == {
        "source": [DEFAULT_SOURCE],
        "detail-type": [AVERAGE_DETAIL_TYPE, ESTIMATE_DETAIL_TYPE],
    }
    # The worker's own events never feed it back: the rule does not route them, and the
    # worker would ignore them.
    consumed = consumed_event_pattern(DEFAULT_SOURCE)["detail-type"]
    for detail_type in pattern["detail-type"]:
        assert detail_type not in consumed
        assert role_of(detail_type) is None


# --- examples -------------------------------------------------------------------------------


@pytest.mark.unit
def test_consumed_examples_are_verbatim_recordings(default_settings: Settings) -> None:
    for role in Role:
        assert RECORDED_EXAMPLES[role], f"no example for {role}"
        for example in consumed_examples(role, default_settings):
            assert example.recording is not None
            recorded = json.loads((DATA / example.recording).read_text())
            assert example.envelope == recorded, example.recording
            assert errors(consumed_schema(role, default_settings), example.envelope) == []


@pytest.mark.unit
def test_published_examples_are_valid_and_the_first_is_what_replay_gives(
    default_settings: Settings,
) -> None:
    schema = published_schema(default_settings)
    examples = published_examples(default_settings)
    for example in examples:
        assert errors(schema, example.envelope) == []
        DrinkAverageTime.model_validate(example.envelope["detail"])
    rows = replay(json.loads(RECORDING.read_text())).as_rows()
    detail = examples[0].envelope["detail"]
    row = {k: detail[k] for k in ("eventId", "drink", "duration", "samples")}
    assert row in rows
    # duration is always a number: a window with no counted order publishes nothing.
    assert errors(schema, {**examples[0].envelope, "detail": {**detail, "duration": None}})


@pytest.mark.unit
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("duration", "23"),
        ("samples", -1),
        ("version", 0),
        ("window", 0),
        ("updatedAt", "now"),
        ("eventId", None),
    ],
)
def test_bad_averages_fail_the_published_schema(
    field: str, value: Any, default_settings: Settings
) -> None:
    envelope = copy.deepcopy(published_examples(default_settings)[0].envelope)
    envelope["detail"][field] = value
    assert errors(published_schema(default_settings), envelope)
    del envelope["detail"][field]
    assert errors(published_schema(default_settings), envelope)


@pytest.mark.unit
def test_estimate_examples_are_valid_and_the_last_is_what_replay_gives(
    default_settings: Settings,
) -> None:
    schema = published_estimate_schema(default_settings)
    examples = estimate_examples(default_settings)
    assert [e.envelope["detail-type"] for e in examples] == [ESTIMATE_DETAIL_TYPE] * 2
    for example in examples:
        assert errors(schema, example.envelope) == []
        assert errors(estimate_schema(), example.envelope["detail"]) == []
        WaitEstimate.model_validate(example.envelope["detail"])
        # An estimate is not an average, nor an average an estimate.
        assert errors(published_schema(default_settings), example.envelope)
    for example in published_examples(default_settings):
        assert errors(schema, example.envelope)
    assert any(e.envelope["detail"]["drinks"] for e in examples), "an example with drinks"
    last = list(replay_estimates(json.loads(RECORDING.read_text())))[-1]
    assert examples[-1].envelope["detail"] == last.model_dump(mode="json")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eventId", None),
        ("asOf", "now"),
        ("asOf", 1790000000),
        ("openOrders", -1),
        ("openOrders", 1.5),
        ("drinks", []),
        ("drinks", {"Latte": {"estimate": -1.0, "p90": 60.0}}),
        ("drinks", {"Latte": {"estimate": 60.0}}),
        ("drinks", {"Latte": {"estimate": "60", "p90": 90.0}}),
        ("version", 0),
    ],
)
def test_bad_estimates_fail_the_published_schema(
    field: str, value: Any, default_settings: Settings
) -> None:
    envelope = copy.deepcopy(estimate_examples(default_settings)[0].envelope)
    envelope["detail"][field] = value
    assert errors(published_estimate_schema(default_settings), envelope)
    assert errors(estimate_schema(), envelope["detail"])
    del envelope["detail"][field]
    assert errors(published_estimate_schema(default_settings), envelope)


@pytest.mark.unit
def test_the_published_estimate_carries_the_detail_replay_prints(
    default_settings: Settings,
) -> None:
    # One definition of the detail: the envelope's is the replay output's schema.
    envelope = published_estimate_schema(default_settings)
    detail = estimate_schema()
    assert envelope["$defs"]["WaitEstimate"]["properties"] == detail["properties"]
    assert envelope["$defs"]["WaitEstimate"]["required"] == detail["required"]
    assert envelope["$defs"]["DrinkWait"] == detail["$defs"]["DrinkWait"]


# --- end to end: what the worker really publishes -------------------------------------------


@pytest.mark.integration
async def test_every_published_average_validates_against_the_produced_schema(aws: Aws) -> None:
    await play_generated(
        aws.clients.events,
        aws.settings.event_bus,
        orders=30,
        duration=None,
        rate=5,
        speed=0,
        seed=1,
    )
    with anyio.fail_after(120):
        await run_worker(aws.settings, burst=True, install_signals=False)
    assert aws.resources.capture_queue_url is not None
    bodies = await aws.drain_queue(aws.resources.capture_queue_url)
    by_type: dict[str, list[dict[str, Any]]] = {t: [] for t in published_schemas(aws.settings)}
    for body in bodies:
        assert body.get("detail-type") in by_type, body
        by_type[body["detail-type"]].append(body)
    averages = by_type[AVERAGE_DETAIL_TYPE]
    assert len(averages) >= 5, f"only {len(averages)} averages published"
    assert by_type[ESTIMATE_DETAIL_TYPE], "no estimate published"
    # Every estimate that arrives validates too (the capture rule routes both detail-types).
    for detail_type, schema in published_schemas(aws.settings).items():
        schema_validator = validator(schema)
        for body in by_type[detail_type]:
            problems = [e.message for e in schema_validator.iter_errors(body)]
            assert problems == [], (body, problems)


# --- AsyncAPI -------------------------------------------------------------------------------


@pytest.mark.unit
def test_asyncapi_document_references_every_schema(default_settings: Settings) -> None:
    document = asyncapi_document(default_settings)
    payloads = {m["payload"]["$ref"] for m in document["components"]["messages"].values()}
    published = [PUBLISHED_SCHEMA_FILE, PUBLISHED_ESTIMATE_SCHEMA_FILE]
    assert payloads == {f"./{n}" for n in [*CONSUMED_SCHEMA_FILES.values(), *published]}
    out = document["channels"]["drinkAverages"]["messages"]
    assert sorted(out) == ["drinkAverageTime", "waitEstimate"]
    estimate = document["components"]["messages"]["waitEstimate"]
    assert [e["payload"] for e in estimate["examples"]] == [
        e.envelope for e in estimate_examples(default_settings)
    ]
    sent = {
        m["$ref"].rsplit("/", 1)[-1]
        for o in document["operations"].values()
        if o["action"] == "send"
        for m in o["messages"]
    }
    assert sent == set(out)
    rule = document["channels"]["orderEvents"]["x-eventbridge-rule"]
    assert rule["eventPattern"] == consumed_event_pattern(default_settings.source)
    assert rule["name"] == default_settings.rule_name
    assert document["channels"]["orderEvents"]["address"] == default_settings.queue_name
    assert document["channels"]["drinkAverages"]["address"] == default_settings.event_bus
    assert document["channels"]["drinkAverages"]["x-eventbridge-pattern"] == (
        published_event_pattern(default_settings.source)
    )
    text = build_catalog(default_settings)[ASYNCAPI_FILE]
    assert yaml.safe_load(text) == document


@pytest.mark.unit
@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "",
        "yes",
        "No",
        "null",
        "~",
        "true",
        "3.0.0",
        "0123",
        "1e3",
        "1e-3",
        "0o17",
        ".5",
        ".inf",
        "a: b",
        "# not a comment",
        "- not a list",
        "trailing space ",
        " leading",
        "line\nbreak\ttab",
        'quote " and \\ backslash',
        "caf\u00e9 \u2615 \U0001f600",
        "\x7f\x85\u2028",
        "{not: a map}",
        "*alias",
        "&anchor",
        "!tag",
        "%directive",
        "@at",
        "`tick",
    ],
)
def test_yaml_writer_round_trips_awkward_strings(value: str) -> None:
    data = {value or "empty": [value, {value or "k": value}], "n": [1, 2.5, None, True, [], {}]}
    assert yaml.safe_load(to_yaml(data)) == data


@pytest.mark.unit
@pytest.mark.parametrize("value", ["1e3", "1e-3", "0o17", "0x1F", ".5", "+1", ".NaN", "0123"])
def test_yaml_writer_quotes_what_yaml_1_2_reads_as_a_number(value: str) -> None:
    # The AsyncAPI tools parse YAML 1.2, where these are numbers even if PyYAML (1.1) disagrees.
    assert to_yaml([value]) == f"- '{value}'\n"


@pytest.mark.unit
def test_yaml_writer_refuses_non_finite_floats() -> None:
    with pytest.raises(ValueError, match="no portable YAML form"):
        to_yaml({"duration": float("nan")})


def asyncapi_cli_or_skip() -> Path:
    if ASYNCAPI_CLI.exists() and shutil.which("node"):
        return ASYNCAPI_CLI
    reason = f"{ASYNCAPI_CLI} missing: `npm install --prefix .tools/npm @asyncapi/cli` (.ci/run)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.mark.integration
def test_asyncapi_document_passes_the_asyncapi_validator(
    default_settings: Settings, tmp_path: Path
) -> None:
    cli = asyncapi_cli_or_skip()
    write_catalog(tmp_path / "events", default_settings)
    analytics = tmp_path / "asyncapi-analytics.json"
    analytics.write_text('{"analyticsEnabled": "false", "infoMessageShown": "true", "userID": ""}')
    result = subprocess.run(
        [str(cli), "validate", str(tmp_path / "events" / ASYNCAPI_FILE), "--fail-severity", "warn"],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
        # No telemetry, no prompt: the validator must work offline.
        env={**os.environ, "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics), "CI": "true"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is valid" in output, output


# --- docs/events.md -------------------------------------------------------------------------


def _markdown_json_blocks(text: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]


@pytest.mark.unit
def test_events_md_names_every_field_and_detail_type() -> None:
    text = EVENTS_MD.read_text()
    fields = {
        *SubmittedDetail.model_fields,
        *OrderRefDetail.model_fields,
        *DrinkOrder.model_fields,
        *DrinkAverageTime.model_fields,
        *WaitEstimate.model_fields,
        *DrinkWait.model_fields,
    }
    missing = sorted(f for f in fields if not re.search(rf"`(?:[\w.]+\.)?{f}`", text))
    assert not missing, f"docs/events.md does not explain {missing}"
    for entry in consumed_event_pattern(DEFAULT_SOURCE)["detail-type"]:
        name = entry if isinstance(entry, str) else entry["wildcard"]
        assert name in text, f"docs/events.md does not name {name}"
    for detail_type in (AVERAGE_DETAIL_TYPE, ESTIMATE_DETAIL_TYPE):
        assert f"## Published event: `{detail_type}`" in text, f"no section for {detail_type}"
    files = [
        *CONSUMED_SCHEMA_FILES.values(),
        PUBLISHED_SCHEMA_FILE,
        PUBLISHED_ESTIMATE_SCHEMA_FILE,
        ESTIMATE_SCHEMA_FILE,
        ASYNCAPI_FILE,
    ]
    for file_name in files:
        assert f"events/{file_name}" in text, f"docs/events.md does not link {file_name}"


@pytest.mark.unit
def test_events_md_pattern_and_examples_match_the_code(default_settings: Settings) -> None:
    blocks = _markdown_json_blocks(EVENTS_MD.read_text())
    assert consumed_event_pattern(default_settings.source) in blocks, "rule pattern differs"
    assert published_event_pattern(default_settings.source) in blocks
    schemas = {role: consumed_schema(role, default_settings) for role in Role}
    envelopes = [b for b in blocks if isinstance(b, dict) and "detail-type" in b]
    assert len(envelopes) >= 5
    published = published_schemas(default_settings)
    shown: set[str] = set()
    for envelope in envelopes:
        if isinstance(envelope["detail-type"], list):
            continue  # a pattern, not an event
        role = role_of(envelope["detail-type"])
        schema = published[envelope["detail-type"]] if role is None else schemas[role]
        assert errors(schema, envelope) == [], envelope
        shown.add(envelope["detail-type"])
    assert set(published) <= shown, "an example of each published event"
