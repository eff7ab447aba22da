"""The CloudFormation template: cfn-lint clean, deploys into moto's server-mode CloudFormation, IAM least-privilege."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deployments" / "cloudformation" / "sluice.yaml"
# Actions AWS grants only on "*" (no resource-level permissions exist for them).
STAR_ONLY_ACTIONS = {"ecr:GetAuthorizationToken"}


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    """Short-form intrinsics (``!Sub``) → their JSON form (``{"Fn::Sub": …}``)."""
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def test_cfn_lint_is_clean() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def statements() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, resource in template()["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                found.append((f"{name}/{policy['PolicyName']}/{statement.get('Sid', '?')}", statement))
        assert not resource["Properties"].get("ManagedPolicyArns"), (
            f"{name}: managed policies are not least-privilege"
        )
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_iam_statement_grants_star_where_a_specific_one_exists() -> None:
    found = statements()
    assert len(found) >= 8
    for where, statement in found:
        assert statement["Effect"] == "Allow"
        actions = as_list(statement["Action"])
        resources = as_list(statement["Resource"])
        assert all(a != "*" and not a.endswith(":*") for a in actions), f"{where}: wildcard action {actions}"
        if "*" in resources:
            assert set(actions) <= STAR_ONLY_ACTIONS, (
                f"{where}: {actions} on '*' (a specific resource exists)"
            )


def test_task_role_touches_only_its_own_resources() -> None:
    role = template()["Resources"]["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    by_sid = {s["Sid"]: s for s in role}
    assert by_sid["ReadLanding"]["Resource"] == {"Fn::Sub": "${LandingBucket.Arn}/*"}
    assert "s3:PutObject" not in as_list(by_sid["ReadLanding"]["Action"])  # the landed file is only ever read
    assert not any("s3:DeleteObject" in as_list(s["Action"]) for s in role)
    assert by_sid["Alerts"]["Resource"] == {"Ref": "AlertsTopic"}
    assert by_sid["Ledger"]["Resource"] == {"Fn::GetAtt": ["LedgerTable", "Arn"]}
    assert by_sid["WarehouseUrl"]["Resource"] == {"Ref": "WarehouseSecret"}


def test_landing_bucket_is_locked_down_and_notifies_eventbridge() -> None:
    bucket = template()["Resources"]["LandingBucket"]["Properties"]
    assert bucket["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rule = template()["Resources"]["ObjectCreatedRule"]["Properties"]
    assert rule["EventPattern"]["detail-type"] == ["Object Created"]
    assert template()["Resources"]["FlowRunLogs"]["Properties"]["RetentionInDays"] == {
        "Ref": "LogRetentionDays"
    }


# moto's CloudFormation has no AWS::Events::Connection / ApiDestination: the webhook delivery path (and what
# refers to it) is left out of the moto deployment and covered by cfn-lint and the structural tests above.
# (moto also skips AWS::SecretsManager::Secret and AWS::SNS::Subscription: created by no one there, checked by lint.)
NOT_IN_MOTO = {
    "WebhookConnection",
    "WebhookDestination",
    "EventsInvokeRole",
    "ObjectCreatedRule",
    "UndeliveredEventsPolicy",
}


def test_stack_deploys_into_moto_server(moto_endpoint: str) -> None:
    import json

    body = template()
    body["Resources"] = {k: v for k, v in body["Resources"].items() if k not in NOT_IN_MOTO}
    cfn = boto3.client("cloudformation", endpoint_url=moto_endpoint)
    cfn.create_stack(
        StackName="sluice-test",
        TemplateBody=json.dumps(body),
        Parameters=[
            {"ParameterKey": "WebhookUrl", "ParameterValue": "https://api.prefect.cloud/hooks/test"},
            {"ParameterKey": "AlertEmail", "ParameterValue": "ops@example.com"},
            {"ParameterKey": "WarehouseUrl", "ParameterValue": "postgresql://u:p@aurora:5432/warehouse"},
        ],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cfn.describe_stacks(StackName="sluice-test")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    resources = {
        r.get("LogicalResourceId", "?"): r.get("PhysicalResourceId")
        for r in cfn.list_stack_resources(StackName="sluice-test")["StackResourceSummaries"]
    }

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert resources["LandingBucket"] in buckets and resources["DataBucket"] in buckets
    s3.head_bucket(Bucket=resources["LandingBucket"])  # (versioning and encryption: see the structural test)
    topics = [t["TopicArn"] for t in boto3.client("sns", endpoint_url=moto_endpoint).list_topics()["Topics"]]
    assert any(t.endswith(":sluice-alerts") for t in topics)
    table = boto3.client("dynamodb", endpoint_url=moto_endpoint).describe_table(
        TableName="sluice-run-ledger"
    )["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["ingestedID", "ingestedTable"]
    roles = {r["RoleName"] for r in boto3.client("iam", endpoint_url=moto_endpoint).list_roles()["Roles"]}
    assert resources["TaskRole"] in roles and resources["ExecutionRole"] in roles
    if outputs:  # moto resolves the outputs that feed prefect.yaml
        assert outputs["LandingUri"] == f"s3://{resources['LandingBucket']}"


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
