"""The flow-run containers' Prefect API key never travels in plain text: the stack keeps it in a secret that only the
execution role reads, and the ECS job (prefect-aws's own preparation of the task definition and the RunTask
request, from prefect.yaml's job variables) names the secret instead of carrying the key in the container's
environment, where anyone allowed ``ecs:DescribeTasks`` (and CloudTrail's RunTask records) would read it."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.deploy.conftest import template
from tests.deploy.test_cloudformation import resolver, resources
from tests.deploy.test_prefect_yaml import STACK_ENV, rendered

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("prefect_harness")
API_KEY = "pnu_Sluice-S3cr3t-Canary-prefect-key"
KEY_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/prefect-api-key-AbCdEf"


def ecs_job(
    env: dict[str, str], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, api_key: str | None = API_KEY
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task definition, RunTask request) for an s3-event run, as prefect-aws's ECS worker prepares them from
    the pool's default template and prefect.yaml's rendered job variables, in a process holding ``api_key``
    (the network configuration is checked against moto's EC2, as the worker checks it against AWS)."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import PREFECT_API_KEY, temporary_settings
    from prefect_aws import AwsClientParameters, AwsCredentials
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"t-{uuid.uuid4().hex[:6]}", Description="t", VpcId=vpc)
    env = {
        **env,
        "SLUICE_VPC_ID": vpc,
        "SLUICE_SUBNET_IDS": subnet,
        "SLUICE_TASK_SECURITY_GROUP": group["GroupId"],
    }
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "s3-event")
    with temporary_settings(
        {PREFECT_API_KEY: API_KEY}
    ):  # deployed from a profile with a key (the check needs it)
        variables = rendered(deployment, env, monkeypatch)["work_pool"]["job_variables"]
    template_ = ECSWorker.get_default_base_job_template()
    configuration = asyncio.run(
        ECSJobConfiguration.from_template_and_values(template_, {**variables, "aws_credentials": None})
    )
    configuration.aws_credentials = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=moto_endpoint),
    )
    flow_run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="canary-run")
    with temporary_settings({PREFECT_API_KEY: api_key}):
        configuration.prepare_for_flow_run(flow_run)
    worker = ECSWorker(work_pool_name="sluice-ecs")
    definition = worker._prepare_task_definition(configuration, region="us-east-1", flow_run=flow_run)
    request = worker._prepare_task_run_request(
        configuration, definition, "arn:aws:ecs:us-east-1:123456789012:task-definition/sluice:1", True
    )
    return definition, request


def test_the_prefect_api_key_reaches_the_container_from_the_secret_never_in_the_run_request(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**STACK_ENV, "SLUICE_PREFECT_API_KEY_SECRET_ARN": KEY_ARN}
    definition, request = ecs_job(env, moto_endpoint, monkeypatch)
    # The request still carries the run's environment (the scan looks at the real thing)...
    environment = request["overrides"]["containerOverrides"][0]["environment"]
    assert {"name": "SLUICE_LEDGER", "value": "dynamodb"} in environment
    # ...but not the key, neither there nor in the task definition: ECS injects it from the secret.
    assert API_KEY not in json.dumps(request, default=str)
    assert API_KEY not in json.dumps(definition, default=str)
    (container,) = definition["containerDefinitions"]
    assert container["secrets"] == [{"name": "PREFECT_API_KEY", "valueFrom": KEY_ARN}]
    assert definition["executionRoleArn"] == STACK_ENV["SLUICE_EXECUTION_ROLE_ARN"]  # the role that reads it


def test_without_the_secret_a_deploy_still_renders_and_the_key_stays_where_prefect_aws_puts_it(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A self-hosted server needs no key: an empty variable is no secret (and no KeyError in prefect-aws)."""
    env = {**STACK_ENV, "SLUICE_PREFECT_API_KEY_SECRET_ARN": ""}
    definition, request = ecs_job(env, moto_endpoint, monkeypatch)
    assert "secrets" not in definition["containerDefinitions"][0]
    environment = request["overrides"]["containerOverrides"][0]["environment"]
    assert {
        "name": "PREFECT_API_KEY",
        "value": API_KEY,
    } in environment  # what the stack's PrefectApiKey avoids


@pytest.mark.parametrize("configured", [True, False])
def test_the_stack_keeps_the_key_in_a_secret_only_the_execution_role_reads(configured: bool) -> None:
    parameter = template()["Parameters"]["PrefectApiKey"]
    assert parameter["NoEcho"] is True and parameter["Default"] == ""
    secret = resources()["PrefectApiKeySecret"]
    assert secret["Condition"] == "HasPrefectApiKey"
    assert secret["Properties"]["SecretString"] == {"Ref": "PrefectApiKey"}
    resolve = resolver(totesys=True, prefect_api_key=configured)

    def readers(role: str) -> list[dict[str, Any]]:
        (policy,) = resources()[role]["Properties"]["Policies"]
        statements = resolve(policy["PolicyDocument"])["Statement"]
        return [s for s in statements if "<PrefectApiKeySecret>" in json.dumps(s)]

    assert readers("ExecutionRole") == (
        [{"Sid": "PrefectApiKey", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
          "Resource": "<PrefectApiKeySecret>"}] if configured else []
    )  # fmt: skip
    assert readers("TaskRole") == [] and readers("PushPoolUser") == []
    output = template()["Outputs"]["PrefectApiKeySecretArn"]
    assert output["Condition"] == "HasPrefectApiKey" and output["Value"] == {"Ref": "PrefectApiKeySecret"}
    assert output["Description"].split()[0] == "SLUICE_PREFECT_API_KEY_SECRET_ARN"


def test_a_key_secret_with_a_profile_without_a_key_fails_the_deploy_check_not_every_run(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's PrefectApiKey set, a self-hosted server (no key in the worker's profile): prefect-aws's own
    preparation of each run fails with a bare ``KeyError: 'PREFECT_API_KEY'``. The deploy check, the first step of
    ``prefect deploy`` and of ``./run deploy``, says it in one line first; with a key (Prefect Cloud) it passes."""
    from prefect.settings import PREFECT_API_KEY, temporary_settings

    from sluice.deploycheck import DeployCheckFailed, check, problems

    env = {**STACK_ENV, "SLUICE_PREFECT_API_KEY_SECRET_ARN": KEY_ARN}
    with pytest.raises(KeyError, match="PREFECT_API_KEY"):  # what the worker did with every run
        ecs_job(env, moto_endpoint, monkeypatch, api_key=None)

    text = (ROOT / "prefect.yaml").read_text(encoding="utf-8")
    (line,) = problems(text, env, api_key="")
    assert line.startswith(
        "SLUICE_PREFECT_API_KEY_SECRET_ARN is set (the stack's PrefectApiKey) but this Prefect profile has no API key"
    )
    assert "KeyError: 'PREFECT_API_KEY'" in line and "PrefectApiKey empty" in line
    assert problems(text, env, api_key=API_KEY) == []
    assert (
        problems(text, {**env, "SLUICE_PREFECT_API_KEY_SECRET_ARN": ""}, api_key="") == []
    )  # self-hosted, no secret

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    with temporary_settings({PREFECT_API_KEY: None}), pytest.raises(DeployCheckFailed, match="no API key"):
        check("prefect.yaml")  # the build step, reading the profile's settings itself
    with temporary_settings({PREFECT_API_KEY: API_KEY}):
        assert check("prefect.yaml")["network_configuration"]
