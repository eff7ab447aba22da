"""The CloudFormation template as data, a resolver for its intrinsics, and the stack deployed into a moto server
of its own (a subprocess: IAM enforcement and the stack's fixed names never reach the session's moto server)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deployments" / "cloudformation" / "sluice.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account

# moto's CloudFormation has no AWS::Events::Connection / ApiDestination: the webhook delivery path (and what
# refers to it) is left out of the moto deployment and covered by cfn-lint and the structural tests.
NOT_IN_MOTO = {
    "WebhookConnection",
    "WebhookDestination",
    "EventsInvokeRole",
    "ObjectCreatedRule",
    "UndeliveredEventsPolicy",
}


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


_NO_VALUE = object()


@dataclass
class Resolver:
    """Evaluates Ref / GetAtt / Sub / Join / If / conditions against known values (as CloudFormation would)."""

    refs: dict[str, Any]
    atts: dict[tuple[str, str], Any] = field(default_factory=dict)
    conditions: dict[str, bool] = field(default_factory=dict)

    def __call__(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self(item) for item in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, value), *_ = node.items()
            if key == "Ref":
                return _NO_VALUE if value == "AWS::NoValue" else self.refs[value]
            if key == "Fn::GetAtt":
                return self.atts[(value[0], value[1])]
            if key == "Fn::Sub":
                return self._sub(value)
            if key == "Fn::Join":
                return value[0].join(str(v) for v in self(value[1]))
            if key == "Fn::If":
                return self(value[1] if self.conditions[value[0]] else value[2])
        out = {k: self(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    def _sub(self, text: str) -> str:
        import re

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if "." in name and not name.startswith("AWS::"):
                return str(self.atts[tuple(name.split(".", 1))])  # type: ignore[index]
            return str(self.refs[name])

        return re.sub(r"\$\{([^}!]+)\}", one, text)


@dataclass
class MotoStack:
    """The stack on a moto server: its endpoint, outputs, resolver and an administrator's keys."""

    endpoint: str
    outputs: dict[str, str]
    resolve: Resolver
    admin: dict[str, str]
    parameters: dict[str, str]

    def client(self, service: str, keys: dict[str, str] | None = None) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **(keys or self.admin))

    def policies(self, logical_id: str) -> list[dict[str, Any]]:
        """The inline policy documents of a role or user, resolved against this stack."""
        props = template()["Resources"][logical_id]["Properties"]
        return [self.resolve(policy["PolicyDocument"]) for policy in props["Policies"]]

    def enforce_iam(self) -> None:
        """From now on every request must be signed by a known key and allowed by its principal's policies."""
        import requests

        requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()


def _wait_until_up(endpoint: str, process: subprocess.Popen[bytes]) -> None:
    import requests

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"moto server exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            requests.get(f"{endpoint}/moto-api/data.json", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start in 30 s")


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """A moto server in its own process (IAM enforcement is process-wide in moto; the session's stays open)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(endpoint, process)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def deploy_stack(
    endpoint: str,
    *,
    totesys_source: str = "",
    warehouse_url: str = "postgresql://u:p@db/w",
    prefect_api_key: str = "",
    totesys_source_group: bool = False,
) -> MotoStack:
    """Create the stack with moto's CloudFormation, then what moto's CloudFormation skips (secrets, the Glue
    database) from the template's own properties; returns the outputs and a resolver for the policies."""
    plain = {"endpoint_url": endpoint, "region_name": REGION}
    bootstrap = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
    ec2 = boto3.client("ec2", **plain, **bootstrap)
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.7.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    database_sg = ec2.create_security_group(GroupName="aurora", Description="aurora", VpcId=vpc)["GroupId"]
    parameters = {
        "WebhookUrl": "https://api.prefect.cloud/hooks/test",
        "AlertEmail": "ops@example.com",
        "WarehouseUrl": warehouse_url,
        "WebhookApiKey": "pnu_test",
        "VpcId": vpc,
        "SubnetIds": ",".join(subnets),
        "DatabaseSecurityGroupId": database_sg,
        "TotesysSourceUrl": totesys_source,
        "PrefectApiKey": prefect_api_key,
    }
    if totesys_source_group:  # an OLTP with a security group of its own
        oltp = ec2.create_security_group(GroupName="oltp", Description="oltp", VpcId=vpc)["GroupId"]
        parameters["TotesysSourceSecurityGroupId"] = oltp
    body = template()
    defaults = {k: str(v.get("Default", "")) for k, v in body["Parameters"].items()}
    body["Resources"] = {k: v for k, v in body["Resources"].items() if k not in NOT_IN_MOTO}
    cfn = boto3.client("cloudformation", **plain, **bootstrap)
    name = f"sluice-{uuid.uuid4().hex[:6]}"
    cfn.create_stack(
        StackName=name,
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    physical = {
        r["LogicalResourceId"]: r.get("PhysicalResourceId")
        for r in cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
        if r.get("LogicalResourceId")
    }
    values = {**defaults, **parameters}
    refs: dict[str, Any] = {
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": "aws",
        "AWS::StackName": name,
        **values,
        "SubnetIds": subnets,
        **physical,
    }
    conditions = {
        "HasPrefix": bool(values["LandingPrefix"]),
        "HasTotesysSource": bool(totesys_source),
        "HasTotesysSourceGroup": bool(values["TotesysSourceSecurityGroupId"]),
        "HasLandingObjectsKey": bool(values["LandingObjectsKeyArn"]),
        "HasPrefectApiKey": bool(values["PrefectApiKey"]),
    }
    iam = boto3.client("iam", **plain, **bootstrap)
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    atts: dict[tuple[str, str], Any] = {
        ("LandingBucket", "Arn"): f"arn:aws:s3:::{physical['LandingBucket']}",
        ("DataBucket", "Arn"): f"arn:aws:s3:::{physical['DataBucket']}",
        ("LedgerTable", "Arn"): arn.format("dynamodb", f"table/{physical['LedgerTable']}"),
        ("AlertsKey", "Arn"): arn.format("kms", f"key/{physical['AlertsKey']}"),
        ("FlowRunLogs", "Arn"): arn.format("logs", f"log-group:{physical['FlowRunLogs']}:*"),
        ("Cluster", "Arn"): arn.format("ecs", f"cluster/{physical['Cluster']}"),
        ("Repository", "Arn"): arn.format("ecr", f"repository/{physical['Repository']}"),
        ("Repository", "RepositoryUri"): f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{physical['Repository']}",
        ("TaskRole", "Arn"): iam.get_role(RoleName=physical["TaskRole"])["Role"]["Arn"],
        ("ExecutionRole", "Arn"): iam.get_role(RoleName=physical["ExecutionRole"])["Role"]["Arn"],
    }
    resolve = Resolver(refs, atts, conditions)

    # What moto's CloudFormation skips, made from the template's properties.
    secrets = boto3.client("secretsmanager", **plain, **bootstrap)
    for logical, resource in body["Resources"].items():
        condition = resource.get("Condition")
        if condition and not conditions[condition]:
            continue
        if resource["Type"] == "AWS::SecretsManager::Secret" and logical != "PushPoolCredentials":
            props = resolve(resource["Properties"])
            refs[logical] = secrets.create_secret(
                Name=props["Name"], Description=props["Description"], SecretString=props["SecretString"]
            )["ARN"]
        elif resource["Type"] == "AWS::Glue::Database":
            props = resolve(resource["Properties"])
            boto3.client("glue", **plain, **bootstrap).create_database(DatabaseInput=props["DatabaseInput"])
            refs[logical] = props["DatabaseInput"]["Name"]
    outputs: dict[str, str] = {}
    for key, output in body["Outputs"].items():
        condition = output.get("Condition")
        if condition and not conditions[condition]:
            continue
        if key == "PushPoolCredentialsSecretArn":
            continue  # the secret holds the access key moto's CloudFormation made: not needed here
        outputs[key] = str(resolve(output["Value"]))

    # An administrator for the test's own set-up and read-backs once IAM is enforced.
    iam.create_user(UserName="test-admin")
    iam.put_user_policy(
        UserName="test-admin",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="test-admin")["AccessKey"]
    admin = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    return MotoStack(endpoint=endpoint, outputs=outputs, resolve=resolve, admin=admin, parameters=parameters)


def user_with_policies(stack: MotoStack, name: str, documents: list[dict[str, Any]]) -> dict[str, str]:
    """An IAM user holding exactly ``documents`` as inline policies; returns its keys."""
    iam = stack.client("iam")
    iam.create_user(UserName=name)
    for i, document in enumerate(documents):
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-{i}", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


# --- the task role's principal under enforcement (shared by the IAM modules; each module deploys its own `stack`) ---


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def moto_view(document: dict[str, Any]) -> dict[str, Any]:
    """The policy as moto can check it: S3 statements unchanged, other services' resources ``*``."""
    statements = []
    for statement in document["Statement"]:
        actions = as_list(statement["Action"])
        if all(a.startswith("s3:") for a in actions):
            statements.append(statement)
        else:
            statements.append({**statement, "Resource": "*"})
    return {**document, "Statement": statements}


@pytest.fixture(scope="module")
def fresh_warehouse(pg_url: str) -> Iterator[str]:
    """A new, empty database on the session's PostgreSQL: the warehouse as a first deploy finds it."""
    from sluice.adapters.warehouse import dispose_engines

    name = f"sluice_iam_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield pg_url.replace("/postgres?", f"/{name}?", 1)
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def alerts_queue(stack: MotoStack) -> str:
    """An SQS queue subscribed to the stack's topic, to read back what the flows published."""
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName="alerts-readback")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stack.client("sns").subscribe(
        TopicArn=stack.outputs["AlertsTopicArn"], Protocol="sqs", Endpoint=queue_arn
    )
    return url


@pytest.fixture(scope="module")
def outside_bucket(stack: MotoStack) -> str:
    stack.client("s3").create_bucket(Bucket="someone-elses-bucket")
    return "someone-elses-bucket"


@pytest.fixture(scope="module")
def task_keys(stack: MotoStack, alerts_queue: str, outside_bucket: str) -> dict[str, str]:
    """Keys of a principal holding the task role's policies; IAM is enforced from here on."""
    documents = [moto_view(d) for d in stack.policies("TaskRole")]
    keys = user_with_policies(stack, "sluice-task", documents)
    stack.enforce_iam()
    return keys


def drain(stack: MotoStack, queue_url: str) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    got = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            got.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return got
