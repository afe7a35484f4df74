"""deploy/ecs/wait-times.yaml: cfn-lint, least-privilege IAM, agreement with the code, and
the stack's non-ECS half created through the emulator's CloudFormation API and served by
the worker.

moto's CloudFormation creates the queues, rule, table and task role from the template, but
has no AWS::SQS::QueuePolicy nor AWS::CloudWatch::Alarm (it skips them with a warning and
still completes), no AWS::ApplicationAutoScaling::* nor AWS::APS::Workspace, ignores the
table's TimeToLiveSpecification and PointInTimeRecoverySpecification, and fails on an
AWS::NoValue inside a task definition's ContainerDefinitions. So the test deploys with
DeployService=false and checks the rest statically. LocalStack's creates the queue policy
and the alarms too, but has no DynamoDB here (see the stack test).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from aiobotocore.session import get_session

from service.app import run_worker
from service.aws.clients import open_clients
from service.aws.provision import (
    DLQ_RETENTION_SECONDS,
    QUEUE_RETENTION_SECONDS,
    ensure_table,
    provision,
)
from service.core.events import consumed_event_pattern
from service.metrics import Metrics
from service.settings import DEFAULT_SOURCE, Settings
from service.tools.player import play_generated
from tests.helpers import Cloud, make_settings, scan_windows

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "deploy" / "ecs" / "wait-times.yaml"

# The worker's AWS calls (service/queue.py, store.py, publisher.py, app.py), one set per
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
    "Bus": {"events:PutEvents"},
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
    assert pattern == consumed_event_pattern(DEFAULT_SOURCE)
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


# LocalStack here serves SQS, EventBridge, CloudFormation, IAM and CloudWatch, not DynamoDB
# (it would download DynamoDB Local and a JDK): there the stack is created without its
# table, and the task role is granted the table `provision` makes on moto.
LOCALSTACK_LOG_GROUP = (
    "LocalStack rejects the conditional LogGroup until the template fix lands: "
    "'Template format error: Unresolved resource dependencies [LogGroup]'"
)
CREATED = {
    "moto": {
        "DeadLetterQueue": "AWS::SQS::Queue",
        "Queue": "AWS::SQS::Queue",
        "OrdersRule": "AWS::Events::Rule",
        "Table": "AWS::DynamoDB::Table",
        "TaskRole": "AWS::IAM::Role",
    },
    "localstack": {
        "DeadLetterQueue": "AWS::SQS::Queue",
        "Queue": "AWS::SQS::Queue",
        "QueuePolicy": "AWS::SQS::QueuePolicy",
        "OrdersRule": "AWS::Events::Rule",
        "TaskRole": "AWS::IAM::Role",
        "DeadLetterQueueAlarm": "AWS::CloudWatch::Alarm",
        "OldestMessageAgeAlarm": "AWS::CloudWatch::Alarm",
    },
}


def without_table(table_arn: str) -> str:
    """The template as JSON, less the table (and its output), granting ``table_arn``."""
    template = load_template()
    del template["Resources"]["Table"]
    del template["Outputs"]["TableName"]
    text = json.dumps(template)
    assert text.count('{"Fn::GetAtt": ["Table", "Arn"]}') == 1
    assert '"Ref": "Table"' not in text
    return text.replace('{"Fn::GetAtt": ["Table", "Arn"]}', json.dumps(table_arn))


@pytest.mark.integration
@pytest.mark.parametrize(
    "cloud",
    [
        "moto",
        pytest.param(
            "localstack", marks=pytest.mark.xfail(strict=True, reason=LOCALSTACK_LOG_GROUP)
        ),
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
            Parameters=[
                {"ParameterKey": "DeployService", "ParameterValue": "false"},
                {"ParameterKey": "SubnetIds", "ParameterValue": "subnet-0123456789abcdef0"},
                {"ParameterKey": "SecurityGroupIds", "ParameterValue": "sg-0123456789abcdef0"},
            ],
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
        assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
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

        # Every call the worker made is one the task role grants (the batched paths ran).
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
