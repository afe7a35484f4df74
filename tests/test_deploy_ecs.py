"""deploy/ecs/wait-times.yaml: cfn-lint, least-privilege IAM, agreement with the code, what is
retained, the image and capacity parameters, references every CloudFormation engine accepts,
and the stack's non-ECS half created (and deleted) through the emulator's CloudFormation API.

moto's CloudFormation creates the queues, rule, table, roles, log group and cluster from the
template, but has no AWS::SQS::QueuePolicy nor AWS::CloudWatch::Alarm (it skips them with a
warning and still completes), no AWS::ApplicationAutoScaling::* nor AWS::APS::Workspace,
ignores the table's TimeToLiveSpecification and PointInTimeRecoverySpecification and the
cluster's properties, and fails on an AWS::NoValue inside a task definition's
ContainerDefinitions. So the tests deploy with DeployService=false and check the rest
statically.
LocalStack's creates the queue policy and the alarms too, but has no DynamoDB here (see
the stack test).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from service.app import run_worker
from service.aws.clients import open_clients
from service.aws.provision import (
    DLQ_RETENTION_SECONDS,
    QUEUE_RETENTION_SECONDS,
    ensure_table,
    provision,
)
from service.core.consumed import consumed_event_pattern
from service.core.published import published_event_pattern
from service.metrics import Metrics
from service.settings import DEFAULT_SOURCE, Settings
from service.tools.emulator import Emulator
from service.tools.player import play_generated
from tests.helpers import Cloud, make_settings, scan_windows

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "deploy" / "ecs" / "wait-times.yaml"

# The worker's AWS calls (service/aws/queue.py, store.py, publisher.py, service/app.py), one set per
# resource: the task role must grant exactly these, on exactly that resource.
WORKER_ACTIONS = {
    "Queue": {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
    },
    "Table": {
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DescribeTable",
    },
    # Its depth, exported as a metric; its URL is looked up by name at start.
    "DeadLetterQueue": {"sqs:GetQueueUrl", "sqs:GetQueueAttributes"},
    "Bus": {"events:PutEvents"},
}

# The parameters a stack needs on the emulator: no service, so network ids are placeholders.
EMULATOR_PARAMETERS = [
    {"ParameterKey": "DeployService", "ParameterValue": "false"},
    {"ParameterKey": "ImageTag", "ParameterValue": "3f2a9c1"},
    {"ParameterKey": "SubnetIds", "ParameterValue": "subnet-0123456789abcdef0"},
    {"ParameterKey": "SecurityGroupIds", "ParameterValue": "sg-0123456789abcdef0"},
]
# What losing would hurt: dead-lettered messages (the worker's and the board's), the windows,
# what the worker logged.
RETAINED = {"DeadLetterQueue", "BoardDeadLetterQueue", "Table", "LogGroup"}
# What the emulator creates of the stack with DeployService=false (see the docstring).
EMULATED = {
    "DeadLetterQueue": "AWS::SQS::Queue",
    "Queue": "AWS::SQS::Queue",
    "OrdersRule": "AWS::Events::Rule",
    "Table": "AWS::DynamoDB::Table",
    "TaskRole": "AWS::IAM::Role",
    "ExecutionRole": "AWS::IAM::Role",
    "LogGroup": "AWS::Logs::LogGroup",
    "Cluster": "AWS::ECS::Cluster",
}

# The IAM actions that authorize an API operation, where they are not "service:Operation".
# A transaction is authorized action by action (the worker's hold Puts and Updates).
IAM_ACTIONS_OF = {
    ("sqs", "DeleteMessageBatch"): {"sqs:DeleteMessage"},
    ("sqs", "ChangeMessageVisibilityBatch"): {"sqs:ChangeMessageVisibility"},
    ("dynamodb", "TransactWriteItems"): {"dynamodb:PutItem", "dynamodb:UpdateItem"},
}

# Statements whose Resource may be "*" because AWS offers no resource-level permission for
# their actions. Each is named by Sid and must carry a comment saying so in the template.
STAR_RESOURCE_ALLOWED = {"EcrLogin": {"ecr:GetAuthorizationToken"}}


class CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short-form tags into their long form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template() -> dict[str, Any]:
    """The template with intrinsics in long form."""
    return yaml.load(TEMPLATE_PATH.read_text(), Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]


def branches(value: Any) -> list[Any]:
    """Both branches of an Fn::If (minus AWS::NoValue), or the value itself."""
    if isinstance(value, dict) and "Fn::If" in value:
        return [b for branch in value["Fn::If"][1:] for b in branches(branch)]
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def policy_statements() -> list[tuple[str, dict[str, Any]]]:
    """(resource logical id, statement) for every IAM statement anywhere in the template."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(owner: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("PolicyDocument", "AssumeRolePolicyDocument"):
                    for statement in value["Statement"]:
                        found.extend((owner, s) for s in branches(statement))
                else:
                    walk(owner, value)
        elif isinstance(node, list):
            for item in node:
                walk(owner, item)

    for logical_id, resource in RESOURCES.items():
        walk(logical_id, resource)
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.integration
def test_cfn_lint_reports_nothing() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.unit
def test_no_wildcard_action_and_star_resources_only_where_aws_requires_them() -> None:
    statements = policy_statements()
    assert len(statements) >= 8
    text = TEMPLATE_PATH.read_text()
    for owner, statement in statements:
        where = f"{owner}/{statement.get('Sid', '?')}"
        assert "NotAction" not in statement, where
        assert "NotResource" not in statement, where
        assert statement.get("Principal") != "*", where
        for action in as_list(statement["Action"]):
            assert isinstance(action, str), where
            assert "*" not in action, f"{where}: wildcard action {action}"
        if "Resource" not in statement:
            assert "Principal" in statement, f"{where}: an identity policy needs a Resource"
            continue
        for resource in as_list(statement["Resource"]):
            literal = json.dumps(resource)
            if "*" not in literal:
                continue
            sid = statement.get("Sid")
            assert sid in STAR_RESOURCE_ALLOWED, f"{where}: '*' resource {literal}"
            assert set(as_list(statement["Action"])) == STAR_RESOURCE_ALLOWED[sid], where
            before = text[: text.index(f"Sid: {sid}")].splitlines()[-2]  # the line above
            assert "AWS requires" in before, f"{where}: say why '*' in a comment above it"


@pytest.mark.unit
def test_task_role_grants_exactly_the_worker_calls_on_exact_resources() -> None:
    granted: dict[str, set[str]] = {}
    for owner, statement in policy_statements():
        if owner != "TaskRole" or "Principal" in statement:
            continue
        resource = statement["Resource"]
        if resource == {"Fn::GetAtt": ["Queue", "Arn"]}:
            key = "Queue"
        elif resource == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}:
            key = "DeadLetterQueue"
        elif resource == {"Fn::GetAtt": ["Table", "Arn"]}:
            key = "Table"
        elif isinstance(resource, dict) and "Fn::Sub" in resource:
            assert resource["Fn::Sub"].endswith(":event-bus/${EventBusName}")
            key = "Bus"
        else:
            assert statement["Action"] == "aps:RemoteWrite"
            assert resource == {"Fn::GetAtt": ["PrometheusWorkspace", "Arn"]}
            continue
        granted.setdefault(key, set()).update(as_list(statement["Action"]))
    assert granted == WORKER_ACTIONS


@pytest.mark.unit
def test_template_agrees_with_the_code() -> None:
    parameters = TEMPLATE["Parameters"]
    defaults = Settings()
    assert parameters["EventBusName"]["Default"] == defaults.event_bus
    assert parameters["EventSource"]["Default"] == DEFAULT_SOURCE
    assert parameters["QueueName"]["Default"] == defaults.queue_name
    assert parameters["TableName"]["Default"] == defaults.table_name
    assert parameters["RuleName"]["Default"] == defaults.rule_name

    rule = RESOURCES["OrdersRule"]["Properties"]
    pattern = json.loads(
        json.dumps(rule["EventPattern"]).replace(
            json.dumps({"Ref": "EventSource"}), json.dumps(DEFAULT_SOURCE)
        )
    )
    condition, order_finished, completed = pattern["detail-type"]["Fn::If"]
    assert condition == "OrderFinishedCompletes"
    assert TEMPLATE["Conditions"][condition] == {
        "Fn::Equals": [{"Ref": "CompletionEvent"}, "order-finished"]
    }
    assert parameters["CompletionEvent"]["Default"] == defaults.completion_event
    for completion, types in (("completed", completed), ("order-finished", order_finished)):
        expected = consumed_event_pattern(DEFAULT_SOURCE, completion)
        assert {**pattern, "detail-type": types} == expected, completion
    assert rule["EventBusName"] == {"Ref": "EventBusName"}
    assert rule["Targets"] == [{"Id": "queue", "Arn": {"Fn::GetAtt": ["Queue", "Arn"]}}]

    queue = RESOURCES["Queue"]["Properties"]
    assert queue["VisibilityTimeout"] == defaults.visibility_timeout_seconds
    assert queue["ReceiveMessageWaitTimeSeconds"] == defaults.receive_wait_seconds
    assert queue["MessageRetentionPeriod"] == QUEUE_RETENTION_SECONDS
    assert queue["RedrivePolicy"]["maxReceiveCount"] == defaults.max_receive_count
    dlq = RESOURCES["DeadLetterQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == DLQ_RETENTION_SECONDS
    assert dlq["QueueName"] == {"Fn::Sub": "${QueueName}-dlq"}  # Settings.dlq_name

    policy = RESOURCES["QueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert policy["Principal"] == {"Service": "events.amazonaws.com"}
    assert policy["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["OrdersRule", "Arn"]}}
    }

    table = RESOURCES["Table"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


@pytest.mark.unit
def test_the_board_queue_is_off_by_default_and_agrees_with_provision() -> None:
    parameters = TEMPLATE["Parameters"]
    defaults = Settings()
    assert parameters["EnableBoard"]["Default"] == "false" == str(defaults.board_enabled).lower()
    assert TEMPLATE["Conditions"]["WithBoard"] == {"Fn::Equals": [{"Ref": "EnableBoard"}, "true"]}
    assert parameters["BoardQueueName"]["Default"] == defaults.board_queue_name
    assert parameters["BoardRuleName"]["Default"] == defaults.board_rule_name
    board = {name for name, r in RESOURCES.items() if r.get("Condition") == "WithBoard"}
    assert board == {
        "BoardDeadLetterQueue",
        "BoardQueue",
        "BoardQueuePolicy",
        "BoardRule",
        "BoardTaskRole",
    }
    guarded = {
        "Fn::If": ["WithBoard", {"Fn::GetAtt": ["BoardQueue", "Arn"]}, {"Ref": "AWS::NoValue"}]
    }
    rule = RESOURCES["BoardRule"]["Properties"]
    pattern = json.loads(
        json.dumps(rule["EventPattern"]).replace(
            json.dumps({"Ref": "EventSource"}), json.dumps(DEFAULT_SOURCE)
        )
    )
    assert pattern == published_event_pattern(DEFAULT_SOURCE)
    assert rule["Targets"] == [{"Id": "queue", "Arn": guarded}]
    queue = RESOURCES["BoardQueue"]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == defaults.max_receive_count
    assert RESOURCES["BoardDeadLetterQueue"]["Properties"]["QueueName"] == {
        "Fn::Sub": "${BoardQueueName}-dlq"
    }
    (send,) = RESOURCES["BoardQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert send["Action"] == "sqs:SendMessage"
    assert send["Resource"] == guarded
    assert send["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::If"][1] == {
        "Fn::GetAtt": ["BoardRule", "Arn"]
    }
    # The board's calls (service/board/app.py, seed.py, feed.py), each on its resource.
    granted = {
        json.dumps(st["Resource"]): set(as_list(st["Action"]))
        for st in RESOURCES["BoardTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"][
            "Statement"
        ]
    }
    assert granted == {
        json.dumps(guarded): {
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueUrl",
            "sqs:GetQueueAttributes",
        },
        json.dumps(
            {
                "Fn::If": [
                    "WithBoard",
                    {"Fn::GetAtt": ["BoardDeadLetterQueue", "Arn"]},
                    {"Ref": "AWS::NoValue"},
                ]
            }
        ): {"sqs:GetQueueUrl"},
        json.dumps({"Fn::GetAtt": ["Table", "Arn"]}): {"dynamodb:Scan"},
    }


@pytest.mark.unit
def test_task_definition_and_service_are_production_shaped() -> None:
    task = RESOURCES["TaskDefinition"]["Properties"]
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["RuntimePlatform"]["CpuArchitecture"] == {"Ref": "CpuArchitecture"}
    assert TEMPLATE["Parameters"]["CpuArchitecture"]["AllowedValues"] == ["X86_64", "ARM64"]
    worker, sidecar = task["ContainerDefinitions"]
    assert worker["Name"] == "worker"
    assert worker["Command"] == ["run"]
    assert worker["ReadonlyRootFilesystem"] is True
    uid = worker["User"].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert uid in (ROOT / "Dockerfile").read_text()
    # ECS sends SIGKILL StopTimeout seconds after SIGTERM: the drain must fit, with margin.
    environment = {e["Name"]: e["Value"] for e in worker["Environment"]}
    drain = float(environment["WAIT_TIMES_DRAIN_SECONDS"])
    assert drain + 10 <= worker["StopTimeout"] <= 120
    for name in environment:
        field = name.removeprefix("WAIT_TIMES_").lower()
        assert name == "AWS_REGION" or field in Settings.model_fields, name
    assert worker["LogConfiguration"]["LogDriver"] == "awslogs"
    health = worker["HealthCheck"]["Command"]
    assert health[:3] == ["CMD", "python", "-c"]
    assert f":{environment['WAIT_TIMES_METRICS_PORT']}/healthz" in health[3]
    assert worker["PortMappings"][0]["ContainerPort"] == int(environment["WAIT_TIMES_METRICS_PORT"])

    (collector,) = branches(sidecar)
    assert collector["Essential"] is False
    config = collector["Environment"][0]["Value"]["Fn::Sub"]
    assert f"127.0.0.1:{environment['WAIT_TIMES_METRICS_PORT']}" in config
    assert "authenticator: sigv4auth" in config

    service = RESOURCES["Service"]["Properties"]
    breaker = service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}
    assert "DesiredCount" not in service

    scaling = RESOURCES["BacklogPerTaskScaling"]["Properties"]
    metrics = scaling["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    queries = {m["Id"]: m for m in metrics["Metrics"]}
    assert [m["Id"] for m in metrics["Metrics"] if m["ReturnData"]] == ["backlog_per_task"]
    assert re.fullmatch(
        r"visible / IF\(tasks >= 1, tasks, 1\)", queries["backlog_per_task"]["Expression"]
    )
    assert RESOURCES["ScalableTarget"]["Properties"]["MinCapacity"] == {"Ref": "MinTasks"}

    dlq_alarm = RESOURCES["DeadLetterQueueAlarm"]["Properties"]
    assert dlq_alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}
    age_alarm = RESOURCES["OldestMessageAgeAlarm"]["Properties"]
    assert age_alarm["MetricName"] == "ApproximateAgeOfOldestMessage"


DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("3f2a9c1", True),  # a short commit, what docs/deploying.md deploys
        ("v1.4.0", True),
        ("release_2024-11-02", True),
        (DIGEST, True),
        ("latest", False),
        ("", False),
        ("sha256:0123", False),  # not a whole digest
        ("wait-times:3f2a9c1", False),  # a reference, not a tag
        ("-3f2a9c1", False),  # tags start with a letter, digit or underscore
        ("a" * 129, False),  # tags are at most 128 characters
    ],
)
def test_image_tag_has_no_default_and_refuses_a_mutable_tag(value: str, accepted: bool) -> None:
    parameter = TEMPLATE["Parameters"]["ImageTag"]
    assert "Default" not in parameter
    assert "latest" in parameter.get("ConstraintDescription", "")
    # CloudFormation matches AllowedPattern as a Java regex; this one (anchors, a negative
    # lookahead, classes and counts) means the same in Python's re.
    pattern = re.compile(parameter.get("AllowedPattern", ".*"))
    assert (pattern.fullmatch(value) is not None) is accepted


def evaluate(node: Any, parameters: dict[str, str]) -> Any:
    """The value of the few intrinsic functions the image reference uses."""
    if isinstance(node, dict) and len(node) == 1:
        ((function, arguments),) = node.items()
        if function == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: parameters[m.group(1)], arguments)
        if function == "Fn::Split":
            separator, source = arguments
            return evaluate(source, parameters).split(separator)
        if function == "Fn::Join":
            separator, values = arguments
            return separator.join(evaluate(values, parameters))
        raise AssertionError(f"unexpected {function}")
    return node


@pytest.mark.unit
@pytest.mark.parametrize(
    ("image_tag", "reference"),
    [
        ("3f2a9c1", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/wait-times:3f2a9c1"),
        (DIGEST, f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/wait-times@{DIGEST}"),
    ],
)
def test_image_is_pulled_by_tag_or_by_digest(image_tag: str, reference: str) -> None:
    worker = RESOURCES["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    parameters = {
        "AWS::AccountId": "123456789012",
        "AWS::Region": "eu-west-1",
        "AWS::URLSuffix": "amazonaws.com",
        "EcrRepositoryName": TEMPLATE["Parameters"]["EcrRepositoryName"]["Default"],
        "ImageTag": image_tag,
    }
    assert evaluate(worker["Image"], parameters) == reference


def dead_letter_queues(resources: dict[str, Any]) -> dict[str, str | None]:
    """Every dead-letter queue (a queue's RedrivePolicy target) with the condition of the
    queue it serves (None: unconditional)."""
    found: dict[str, str | None] = {}
    for resource in resources.values():
        redrive = resource.get("Properties", {}).get("RedrivePolicy")
        if resource["Type"] == "AWS::SQS::Queue" and redrive is not None:
            for name, _ in references(redrive["deadLetterTargetArn"]):
                if name in resources:  # not the AWS::NoValue of an Fn::If
                    found[name] = resource.get("Condition")
    return found


@pytest.mark.unit
def test_what_losing_would_hurt_survives_deletion_and_replacement() -> None:
    """Retained resources survive the stack's deletion and their own replacement; every
    dead-letter queue is one of them.

    A retained resource exists whatever the parameters, except a dead-letter queue that
    exists exactly when the queue it serves does (the board's, under WithBoard). That one
    is safe conditional: CloudFormation applies DeletionPolicy to a resource an update
    removes as well as to a deleted stack, so turning its condition off leaves it and its
    messages behind, as deleting the stack does, and docs/deploying.md's Cleanup removes
    it. What a conditional retained resource costs (turning the condition on again fails on
    "already exists" until it is removed or imported) is the price of every retained name,
    and only a dead-letter queue holds evidence worth it. Any other retained resource must
    stay unconditional, so that no parameter puts it in and out of the stack.
    """
    retained = {name for name, r in RESOURCES.items() if r.get("DeletionPolicy") == "Retain"}
    assert retained == RETAINED
    dead_letter = dead_letter_queues(RESOURCES)
    assert {"DeadLetterQueue", "BoardDeadLetterQueue"} <= set(dead_letter) <= RETAINED
    for name in RETAINED:
        assert RESOURCES[name].get("UpdateReplacePolicy") == "Retain", name
        condition = RESOURCES[name].get("Condition")
        if name in dead_letter:
            assert condition == dead_letter[name], name
        else:
            assert condition is None, name


# The AWS CLI command that removes a retained resource of each type.
REMOVE_COMMAND = {
    "AWS::SQS::Queue": "aws sqs delete-queue",
    "AWS::DynamoDB::Table": "aws dynamodb delete-table",
    "AWS::Logs::LogGroup": "aws logs delete-log-group",
}


@pytest.mark.unit
def test_the_guide_ends_with_a_cleanup_that_removes_what_is_retained() -> None:
    guide = (ROOT / "docs" / "deploying.md").read_text()
    title, _, cleanup = guide.rpartition("\n## ")[2].partition("\n")
    assert title == "Cleanup"
    assert "aws cloudformation delete-stack --stack-name wait-times" in cleanup
    assert "aws ecr delete-repository" in cleanup  # the image repository is not the stack's
    for name in RETAINED:
        assert REMOVE_COMMAND[RESOURCES[name]["Type"]] in cleanup, name


@pytest.mark.unit
def test_capacity_provider_is_a_parameter_of_the_service() -> None:
    parameter = TEMPLATE["Parameters"]["CapacityProvider"]
    assert parameter["AllowedValues"] == ["FARGATE", "FARGATE_SPOT"]
    assert parameter["Default"] == "FARGATE"
    service = RESOURCES["Service"]["Properties"]
    assert service["CapacityProviderStrategy"] == [
        {"CapacityProvider": {"Ref": "CapacityProvider"}, "Weight": 1}
    ]
    assert "LaunchType" not in service  # ECS refuses a launch type beside a strategy
    # The cluster is the stack's own: both providers enabled, so either value deploys.
    assert RESOURCES["Service"]["Properties"]["Cluster"] == {"Ref": "Cluster"}
    assert set(RESOURCES["Cluster"]["Properties"]["CapacityProviders"]) == {
        "FARGATE",
        "FARGATE_SPOT",
    }
    # Fargate Spot takes ARM64 tasks on platform version 1.4.0 or later (ECS API reference,
    # CapacityProviderStrategyItem), so no rule refuses ARM64 with FARGATE_SPOT, and the
    # service runs on LATEST, which is 1.4.0.
    assert service["PlatformVersion"] in ("LATEST", "1.4.0")
    assert "Rules" not in TEMPLATE
    assert TEMPLATE["Parameters"]["CpuArchitecture"]["AllowedValues"] == ["X86_64", "ARM64"]


def condition_implies(template: dict[str, Any], name: str, target: str) -> bool:
    """Whether condition ``name`` being true makes ``target`` true (itself, or an Fn::And
    of conditions one of which implies it)."""
    if name == target:
        return True
    definition = template.get("Conditions", {}).get(name)
    if isinstance(definition, dict) and "Fn::And" in definition:
        return any(
            isinstance(part, dict)
            and "Condition" in part
            and condition_implies(template, part["Condition"], target)
            for part in definition["Fn::And"]
        )
    return False


def references(
    node: Any, guards: frozenset[str] = frozenset()
) -> Iterator[tuple[str, frozenset[str]]]:
    """(logical id, conditions of the Fn::If true branches around it) for every Ref,
    Fn::GetAtt and ${...} of an Fn::Sub in ``node``."""
    if isinstance(node, list):
        for item in node:
            yield from references(item, guards)
    elif isinstance(node, dict):
        if "Fn::If" in node:
            condition, when_true, when_false = node["Fn::If"]
            yield from references(when_true, guards | {condition})
            yield from references(when_false, guards)
            return
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                yield value, guards
            elif key == "Fn::GetAtt":
                yield value[0], guards
            elif key == "Fn::Sub":
                text, variables = (value, {}) if isinstance(value, str) else value
                for name in re.findall(r"\$\{([^}!][^}]*)\}", text):
                    if name not in variables:
                        yield name.split(".")[0], guards
                yield from references(variables, guards)
            else:
                yield from references(value, guards)


def unguarded_references(template: dict[str, Any]) -> list[str]:
    """References to a conditional resource that are not inside an Fn::If on its condition.

    The rule every engine accepts. CloudFormation itself accepts more: a resource that
    depends on one that is not created is not created either (CloudFormation Template
    Reference, "Condition attribute"). LocalStack's engine resolves the properties of every
    resource, created or not, and every output, and refuses a template whose Fn::GetAtt or
    Fn::Sub names a resource that is not created ("Unresolved resource dependencies"); it
    does honour Fn::If, evaluating only the branch taken. DependsOn cannot be guarded."""
    resources = template["Resources"]
    conditional = {name: r["Condition"] for name, r in resources.items() if "Condition" in r}
    found = []
    for section in ("Resources", "Outputs"):
        for name, body in template.get(section, {}).items():
            refs = list(references(body))
            refs += [(d, frozenset()) for d in as_list(body.get("DependsOn", []))]
            for target, guards in refs:
                if target in conditional and not any(
                    condition_implies(template, g, conditional[target]) for g in guards
                ):
                    found.append(f"{section}.{name} -> {target}")
    return found


@pytest.mark.unit
def test_every_reference_to_a_conditional_resource_is_guarded_by_its_condition() -> None:
    assert unguarded_references(TEMPLATE) == []
    conditional = {name for name, r in RESOURCES.items() if "Condition" in r}
    guarded = {
        target
        for body in [*RESOURCES.values(), *TEMPLATE["Outputs"].values()]
        for target, guards in references(body)
        if guards and target in conditional
    }
    # The walk is not vacuous: every conditional resource that others use is reached (the
    # scaling policy and the board's queue policy are leaves nothing refers to).
    assert guarded == conditional - {"BacklogPerTaskScaling", "BoardQueuePolicy"}
    # And it catches the construct LocalStack refused (issue 13): a conditional resource
    # reading an attribute of another conditional one without an Fn::If.
    refused = {
        "Conditions": {"C": {"Fn::Equals": ["a", "b"]}},
        "Resources": {
            "LogGroup": {"Type": "AWS::Logs::LogGroup", "Condition": "C"},
            "Role": {
                "Type": "AWS::IAM::Role",
                "Condition": "C",
                "Properties": {"Resource": {"Fn::GetAtt": ["LogGroup", "Arn"]}},
            },
        },
    }
    assert unguarded_references(refused) == ["Resources.Role -> LogGroup"]


# LocalStack here serves SQS, EventBridge, CloudFormation, IAM and CloudWatch, not DynamoDB
# (it would download DynamoDB Local and a JDK): there the stack is created without its
# table, and the task role is granted the table `provision` makes on moto.
CREATED = {
    "moto": EMULATED,
    "localstack": {
        "DeadLetterQueue": "AWS::SQS::Queue",
        "Queue": "AWS::SQS::Queue",
        "QueuePolicy": "AWS::SQS::QueuePolicy",
        "OrdersRule": "AWS::Events::Rule",
        "TaskRole": "AWS::IAM::Role",
        "DeadLetterQueueAlarm": "AWS::CloudWatch::Alarm",
        "OldestMessageAgeAlarm": "AWS::CloudWatch::Alarm",
        "ExecutionRole": "AWS::IAM::Role",
        "LogGroup": "AWS::Logs::LogGroup",
        "Cluster": "AWS::ECS::Cluster",
    },
}


def without_table(table_arn: str) -> str:
    """The template as JSON, less the table (and its output), granting ``table_arn``."""
    template = load_template()
    del template["Resources"]["Table"]
    del template["Outputs"]["TableName"]
    text = json.dumps(template)
    assert text.count('{"Fn::GetAtt": ["Table", "Arn"]}') == 2  # the worker's, the board's
    assert '"Ref": "Table"' not in text
    return text.replace('{"Fn::GetAtt": ["Table", "Arn"]}', json.dumps(table_arn))


@pytest.mark.integration
@pytest.mark.parametrize(
    "cloud",
    [
        "moto",
        "localstack",
    ],
    indirect=True,
)
async def test_stack_on_the_emulator_serves_the_worker(cloud: Cloud) -> None:
    """Create the non-ECS half through CloudFormation, then run the worker on it."""
    settings = make_settings(cloud)
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)
        cloudformation = await stack.enter_async_context(
            get_session().create_client(
                "cloudformation", region_name=settings.region, endpoint_url=cloud.url
            )
        )
        await clients.events.create_event_bus(Name=settings.event_bus)  # "the existing bus"
        if cloud.localstack is None:
            body = TEMPLATE_PATH.read_text()
        else:
            await ensure_table(clients.dynamodb, settings.table_name)
            table = await clients.dynamodb.describe_table(TableName=settings.table_name)
            body = without_table(table["Table"]["TableArn"])
        await cloudformation.create_stack(
            StackName="wait-times",
            TemplateBody=body,
            Capabilities=["CAPABILITY_IAM"],
            Parameters=EMULATOR_PARAMETERS,
        )
        stack.push_async_callback(cloudformation.delete_stack, StackName="wait-times")
        with anyio.fail_after(60):  # moto creates at once; LocalStack in the background
            while True:
                described = (await cloudformation.describe_stacks(StackName="wait-times"))[
                    "Stacks"
                ][0]
                if not described["StackStatus"].endswith("_IN_PROGRESS"):
                    break
                await anyio.sleep(0.2)
        if described["StackStatus"] != "CREATE_COMPLETE":
            events = (await cloudformation.describe_stack_events(StackName="wait-times"))[
                "StackEvents"
            ]
            failed = [
                f"{e.get('LogicalResourceId')} ({e.get('ResourceType')}): "
                f"{e.get('ResourceStatusReason')}"
                for e in events
                if e.get("ResourceStatus", "").endswith("FAILED")
            ]
            raise AssertionError(f"{described['StackStatus']}: {failed}")
        created = {
            r["LogicalResourceId"]: r["ResourceType"]
            for r in (await cloudformation.describe_stack_resources(StackName="wait-times"))[
                "StackResources"
            ]
            if "LogicalResourceId" in r  # moto lists the types it skips without an id
        }
        assert created == CREATED[cloud.name]

        # What the stack made matches what `provision` makes with default settings.
        reference = Settings(
            endpoint_url=settings.endpoint_url,
            dynamodb_endpoint_url=settings.dynamodb_endpoint_url,
            region=settings.region,
            queue_name="reference",
            table_name="reference",
            rule_name="reference-orders",
        )
        await provision(reference, clients)
        assert await describe(clients, settings) == await describe(clients, reference)

        # Traffic onto the bus reaches the stack's queue through the stack's rule.
        await play_generated(
            clients.events,
            settings.event_bus,
            orders=20,
            duration=None,
            rate=5,
            speed=0,
            seed=4,
        )
        metrics = Metrics()
        with anyio.fail_after(30):
            assert (
                await run_worker(settings, burst=True, install_signals=False, metrics=metrics) == 0
            )
        windows = await scan_windows(clients, settings)
        assert windows
        assert sum(state.window.samples for state in windows.values()) > 0
        published = metrics.registry.get_sample_value("wait_times_events_published_total")
        assert published is not None
        assert published >= len(windows)

        # Every call the worker made is one the task role grants (the multi-item paths ran).
        made = {
            (s.labels["service"], s.labels["operation"])
            for s in next(iter(metrics.aws_calls.collect())).samples
            if s.name.endswith("_total") and s.value > 0
        }
        assert {("dynamodb", "TransactWriteItems"), ("dynamodb", "BatchGetItem")} <= made
        granted = set().union(*WORKER_ACTIONS.values())
        for service, operation in made:
            needed = IAM_ACTIONS_OF.get((service, operation), {f"{service}:{operation}"})
            assert needed <= granted, f"{service}.{operation} needs {needed - granted}"


@pytest.mark.integration
async def test_deleting_the_stack_leaves_what_is_retained_and_the_core_app_untouched(
    emulator: Emulator,
) -> None:
    """Create the non-ECS half, delete it: only the retained resources remain, and the bus,
    the core app's rule on it and that rule's target are as they were.

    What moto 5.2.5 does, read in its source: it honours DeletionPolicy: Retain for every
    resource type (moto/cloudformation/parsing.py, ResourceMap.delete skips resources marked
    Retain), so what remains is what the template retains, not what moto forgot. Two
    exceptions, both moto's: it has no CloudFormation delete for AWS::ECS::Cluster (the class
    defines no delete_from_cloudformation_json), so the cluster outlives the stack here and
    not on AWS; and DescribeStacks on a deleted stack resolves its Outputs again, which
    re-creates every resource they refer to, so the status is read with ListStacks.
    UpdateReplacePolicy is not exercised by a deletion. The queue policy and the alarms,
    which moto does not create, cannot be checked here.
    """
    emulator.reset()
    settings = make_settings(emulator)
    async with AsyncExitStack() as stack:
        clients = await open_clients(settings, stack)

        session, region, endpoint = get_session(), settings.region, settings.endpoint_url
        cloudformation = await stack.enter_async_context(
            session.create_client("cloudformation", region_name=region, endpoint_url=endpoint)
        )
        iam = await stack.enter_async_context(
            session.create_client("iam", region_name=region, endpoint_url=endpoint)
        )
        logs = await stack.enter_async_context(
            session.create_client("logs", region_name=region, endpoint_url=endpoint)
        )
        ecs = await stack.enter_async_context(
            session.create_client("ecs", region_name=region, endpoint_url=endpoint)
        )
        events, sqs, dynamodb = clients.events, clients.sqs, clients.dynamodb

        # The core app: its bus, and a rule of its own on it with a target.
        bus = settings.event_bus
        await events.create_event_bus(Name=bus)
        core_queue = (await sqs.create_queue(QueueName="core-app-orders"))["QueueUrl"]
        core_queue_arn = (
            await sqs.get_queue_attributes(QueueUrl=core_queue, AttributeNames=["QueueArn"])
        )["Attributes"]["QueueArn"]
        core_pattern = json.dumps({"source": ["awsserverlessda.serverlesspresso"]})
        await events.put_rule(Name="core-app-orders", EventBusName=bus, EventPattern=core_pattern)
        await events.put_targets(
            Rule="core-app-orders",
            EventBusName=bus,
            Targets=[{"Id": "orders", "Arn": core_queue_arn}],
        )

        async def core_app() -> dict[str, Any]:
            rules = (await events.list_rules(EventBusName=bus))["Rules"]
            targets = await events.list_targets_by_rule(Rule="core-app-orders", EventBusName=bus)
            return {
                "bus": (await events.describe_event_bus(Name=bus))["Name"],
                "rules": sorted(r["Name"] for r in rules),
                "pattern": json.loads(
                    (await events.describe_rule(Name="core-app-orders", EventBusName=bus))[
                        "EventPattern"
                    ]
                ),
                "targets": [(t["Id"], t["Arn"]) for t in targets["Targets"]],
            }

        before = await core_app()
        stack_id = (
            await cloudformation.create_stack(
                StackName="wait-times",
                TemplateBody=TEMPLATE_PATH.read_text(),
                Capabilities=["CAPABILITY_IAM"],
                Parameters=EMULATOR_PARAMETERS,
            )
        )["StackId"]
        physical = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in (await cloudformation.describe_stack_resources(StackName=stack_id))[
                "StackResources"
            ]
            if "LogicalResourceId" in r
        }
        assert set(physical) == set(EMULATED)
        assert (await core_app())["rules"] == sorted(["core-app-orders", settings.rule_name])

        await cloudformation.delete_stack(StackName=stack_id)
        with anyio.fail_after(30):
            while True:
                (status,) = [
                    s
                    for s in (await cloudformation.list_stacks())["StackSummaries"]
                    if s["StackId"] == stack_id
                ]
                if not status["StackStatus"].endswith("_IN_PROGRESS"):
                    break
                await anyio.sleep(0.2)
        assert status["StackStatus"] == "DELETE_COMPLETE", status.get("StackStatusReason")

        # What is left of the stack, resource by resource.
        queues = set((await sqs.list_queues()).get("QueueUrls", []))
        queue_names = {url.rsplit("/", 1)[-1] for url in queues}
        tables = set((await dynamodb.list_tables())["TableNames"])
        log_groups = {g["logGroupName"] for g in (await logs.describe_log_groups())["logGroups"]}
        roles = {r["RoleName"] for r in (await iam.list_roles())["Roles"]}
        clusters = (await ecs.describe_clusters(clusters=[physical["Cluster"]]))["clusters"]
        left = {
            "DeadLetterQueue": settings.dlq_name in queue_names,
            "Queue": settings.queue_name in queue_names,
            "Table": settings.table_name in tables,
            "LogGroup": physical["LogGroup"] in log_groups,
            "TaskRole": physical["TaskRole"] in roles,
            "ExecutionRole": physical["ExecutionRole"] in roles,
            "Cluster": any(c.get("status") == "ACTIVE" for c in clusters),
            "OrdersRule": settings.rule_name in (await core_app())["rules"],
        }
        assert set(left) == set(EMULATED)
        moto_cannot_delete = {"Cluster"}  # see the docstring; an empty cluster costs nothing
        # The board's resources are off here (EnableBoard defaults to false).
        assert {name for name, exists in left.items() if exists} - moto_cannot_delete == (
            RETAINED & set(EMULATED)
        )
        # Nothing else of the stack's either: the only queues are the DLQ and the core app's.
        assert queue_names == {settings.dlq_name, "core-app-orders"}
        with pytest.raises(ClientError):
            await events.describe_rule(Name=settings.rule_name, EventBusName=bus)

        # The core app: bus, its rule, its pattern and its target, exactly as before.
        assert await core_app() == before
        # The retained resources still work: the DLQ answers, the table is active.
        dlq = (await sqs.get_queue_url(QueueName=settings.dlq_name))["QueueUrl"]
        assert (await sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]
        table = (await dynamodb.describe_table(TableName=settings.table_name))["Table"]
        assert table["TableStatus"] == "ACTIVE"


async def describe(clients: Any, settings: Settings) -> dict[str, Any]:
    """The attributes of a provisioned set of resources that must not depend on who made it."""
    sqs = clients.sqs

    async def attributes(name: str) -> dict[str, str]:
        url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
        return (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]

    queue, dlq = await attributes(settings.queue_name), await attributes(settings.dlq_name)
    redrive = json.loads(queue["RedrivePolicy"])
    table = (await clients.dynamodb.describe_table(TableName=settings.table_name))["Table"]
    rule = await clients.events.describe_rule(
        Name=settings.rule_name, EventBusName=settings.event_bus
    )
    targets = await clients.events.list_targets_by_rule(
        Rule=settings.rule_name, EventBusName=settings.event_bus
    )
    return {
        "queue": {
            k: queue[k]
            for k in (
                "VisibilityTimeout",
                "ReceiveMessageWaitTimeSeconds",
                "MessageRetentionPeriod",
            )
        },
        "maxReceiveCount": int(redrive["maxReceiveCount"]),
        "dlq_is_the_dead_letter_target": redrive["deadLetterTargetArn"] == dlq["QueueArn"],
        "dlq_retention": dlq["MessageRetentionPeriod"],
        "key": table["KeySchema"],
        "attributes": table["AttributeDefinitions"],
        "billing": table.get("BillingModeSummary", {}).get("BillingMode"),
        "pattern": json.loads(rule["EventPattern"]),
        "state": rule["State"],
        "target_is_the_queue": [t["Arn"].rsplit(":", 1)[-1] for t in targets["Targets"]]
        == [settings.queue_name],
    }
