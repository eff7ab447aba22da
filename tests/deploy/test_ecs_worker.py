"""prefect-aws's ECS worker submits Sluice's s3-event deployment against moto's server-mode ECS over HTTP:
the task definition carries the image, cpu, memory and env of prefect.yaml, and a second run reuses it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from tests.deploy.test_prefect_yaml import STACK_ENV, rendered

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("prefect_harness")
IMAGE_REPO = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sluice"


def s3_event_job_variables(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """prefect.yaml's s3-event job variables as `prefect deploy` renders them (its check and tag steps run)."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "s3-event")
    return rendered(deployment, env, monkeypatch)["work_pool"]["job_variables"]


async def submit_through_worker(
    worker: Any,
    client: Any,
    deployment: Any,
    flow: Any,
    source: str,
    template: dict[str, Any],
    variables: dict[str, Any],
    credentials: Any,
) -> None:
    """What the ECS worker does for one deployment run: the job configuration rendered from the pool's template
    and the deployment's variables (with the given credentials), then ``worker.run`` (RegisterTaskDefinition,
    RunTask...). A ``ClientError`` from AWS is the caller's to judge."""
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration

    flow_run = await client.create_flow_run_from_deployment(deployment.id, parameters={"source": source})
    configuration = await ECSJobConfiguration.from_template_and_values(
        template, {**variables, "aws_credentials": None}
    )
    configuration.aws_credentials = credentials
    configuration.prepare_for_flow_run(flow_run, deployment, flow)
    await worker.run(flow_run, configuration)


async def submit(moto_endpoint: str, runs: int, variables: dict[str, Any]) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect_aws import AwsClientParameters, AwsCredentials
    from prefect_aws.workers.ecs_worker import ECSWorker

    failures: list[str] = []
    template = ECSWorker.get_default_base_job_template()
    credentials = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=moto_endpoint),
    )
    async with get_client() as client:
        pool = await client.create_work_pool(
            WorkPoolCreate(name="sluice-ecs", type="ecs", base_job_template=template)
        )
        flow_id = await client.create_flow_from_name("ingest-file")
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name="s3-event",
            work_pool_name=pool.name,
            entrypoint="flows/ingest.py:ingest_file",
            job_variables=variables,
        )
        deployment = await client.read_deployment(deployment_id)
        flow = await client.read_flow(flow_id)
        async with ECSWorker(work_pool_name=pool.name) as worker:
            for n in range(runs):
                source = f"s3://sluice-landing/tm/dailycheckins/{n}.csv"
                try:
                    await submit_through_worker(
                        worker, client, deployment, flow, source, template, variables, credentials
                    )
                except ClientError as exc:
                    # moto 5.2.5's RunTask fails on a Fargate task whose memory is set on the task, not the
                    # container (models.py _calculate_task_resource_requirements: int += None): a moto gap.
                    assert exc.operation_name == "RunTask", exc
                    failures.append(str(exc))
    return failures


def test_ecs_worker_registers_the_task_definition_and_submits_runs_on_moto(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AWS_ECS_WORKER_CREATE_TASK_RUN_MAX_ATTEMPTS", "1")
    ecs = boto3.client("ecs", endpoint_url=moto_endpoint, region_name="us-east-1")
    cluster = ecs.create_cluster(clusterName="sluice")["cluster"]["clusterArn"]
    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{n}.0/24")["Subnet"]["SubnetId"] for n in (1, 2)
    ]
    group = ec2.create_security_group(GroupName="sluice-tasks", Description="tasks", VpcId=vpc)["GroupId"]
    env = {
        **STACK_ENV,
        "SLUICE_ECS_CLUSTER": cluster,
        "SLUICE_VPC_ID": vpc,
        "SLUICE_SUBNET_IDS": ",".join(subnets),
        "SLUICE_TASK_SECURITY_GROUP": group,
    }
    variables = s3_event_job_variables(env, monkeypatch)
    failures = asyncio.run(submit(moto_endpoint, runs=2, variables=variables))

    families = ecs.list_task_definitions(familyPrefix="sluice")["taskDefinitionArns"]
    assert len(families) == 1, (
        families
    )  # a stable family, matched on the second run: no task-definition churn
    definition = ecs.describe_task_definition(taskDefinition=families[0])["taskDefinition"]
    container = definition["containerDefinitions"][0]
    assert container["image"] == variables["image"] and container["image"].startswith(IMAGE_REPO + ":")
    assert (str(definition["cpu"]), str(definition["memory"])) == ("1024", "4096")
    # taskRoleArn and env travel in the run request overrides (prefect-aws), not in the definition
    assert definition["executionRoleArn"] == STACK_ENV["SLUICE_EXECUTION_ROLE_ARN"]
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    logs = container["logConfiguration"]
    assert logs["logDriver"] == "awslogs" and logs["options"]["awslogs-group"] == "/sluice/flow-runs"
    assert logs["options"]["awslogs-create-group"] == "false"  # the execution role may not create groups
    tasks = ecs.list_tasks(cluster="sluice")["taskArns"]
    if failures:  # moto could not start the task (see above): the run request reached RunTask, twice
        assert len(failures) == 2 and not tasks
    else:
        assert len(tasks) == 2
