"""``sluice aws setup``: from a deployed CloudFormation stack to everything ``prefect deploy`` needs.

Reads the stack's outputs (each output that feeds a deployment has a Description whose first word is the
variable it feeds), then: writes them to an env file that ``./run deploy`` sources, registers Sluice's block
types, saves the push pool's ``AwsCredentials`` block from the stack's credentials secret, creates or updates
the ECS push work pool (credentials, cluster, VPC, subnets and the task security group as its defaults; never
``--provision-infra``: the stack owns the infrastructure), and saves the ``sns-notification/sluice-alerts`` block.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from sluice.cli.output import console, fail
from sluice.deploycheck import network_configuration
from sluice.runtime import prepare

aws_app = typer.Typer(help="AWS: configure Prefect from the deployed stack (see README 'Deploy to AWS').")

VARIABLE = re.compile(r"^(AWS|SLUICE)_[A-Z0-9_]+$")
# Written even when the stack has no such output, so the deploy sees a decided (empty) value.
OPTIONAL = ("SLUICE_TOTESYS_SOURCE_SECRET_ARN", "SLUICE_PREFECT_API_KEY_SECRET_ARN")
CREDENTIALS_BLOCK = "sluice-push-pool"
ALERTS_BLOCK = "sluice-alerts"


def register(app: typer.Typer) -> None:
    app.add_typer(aws_app, name="aws")


def stack_environment(stack: str, region: str | None = None) -> dict[str, str]:
    """``{variable: value}`` for every output whose Description starts with a ``SLUICE_*``/``AWS_*`` name."""
    import boto3  # AWS modules only when AWS is used; kept off `sluice --help`

    described = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)
    env: dict[str, str] = {}
    for output in described["Stacks"][0].get("Outputs", []):
        words = (output.get("Description") or "").split()
        if words and VARIABLE.match(words[0]):
            env[words[0]] = output["OutputValue"]
    for name in OPTIONAL:
        env.setdefault(name, "")
    return env


def write_env_file(env: dict[str, str], path: Path) -> Path:
    """``export NAME='value'`` lines, for ``set -a; . file`` or ``source``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `sluice aws setup` from the stack's outputs; `./run deploy` sources it."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pool_job_template(env: dict[str, str], credentials_block_id: str) -> dict[str, Any]:
    """prefect-aws's ECS base job template with the stack's credentials, cluster and network as defaults."""
    # after prepare: Prefect reads its environment once, at import
    from prefect_aws.workers.ecs_worker import ECSWorker

    template = ECSWorker.get_default_base_job_template()
    props = template["variables"]["properties"]
    props["aws_credentials"]["default"] = {"$ref": {"block_document_id": credentials_block_id}}
    defaults = {
        "cluster": env.get("SLUICE_ECS_CLUSTER"),
        "vpc_id": env.get("SLUICE_VPC_ID"),
        "network_configuration": network_configuration(env) or None,
        "execution_role_arn": env.get("SLUICE_EXECUTION_ROLE_ARN"),
        "task_role_arn": env.get("SLUICE_TASK_ROLE_ARN"),
    }
    for name, value in defaults.items():
        if value and name in props:
            props[name]["default"] = value
    return template


async def configure_prefect(env: dict[str, str], pool: str, pool_type: str, region: str) -> dict[str, str]:
    """Block types, the pool's AwsCredentials block, the work pool and the alerts block; returns what it made."""
    # AWS and Prefect modules after prepare (Prefect reads its env once, at import); kept off `sluice --help`
    import boto3
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect_aws import AwsCredentials

    from sluice.adapters.notify import SnsNotification, register_blocks

    register_blocks()
    secret = boto3.client("secretsmanager", region_name=region).get_secret_value(
        SecretId=env["SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN"]
    )
    keys = json.loads(secret["SecretString"])
    credentials = AwsCredentials(
        aws_access_key_id=keys["aws_access_key_id"],
        aws_secret_access_key=keys["aws_secret_access_key"],
        region_name=region,
    )
    credentials_id = await credentials.save(CREDENTIALS_BLOCK, overwrite=True)
    template = pool_job_template(env, str(credentials_id))
    async with get_client() as client:
        try:
            await client.create_work_pool(
                WorkPoolCreate(name=pool, type=pool_type, base_job_template=template)
            )
            action = "created"
        except ObjectAlreadyExists:
            await client.update_work_pool(pool, WorkPoolUpdate(base_job_template=template))
            action = "updated"
    # The tasks publish with their task role: no keys in this block, only the region.
    await SnsNotification(
        topic_arn=env["SLUICE_SNS_TOPIC_ARN"], aws_credentials=AwsCredentials(region_name=region)
    ).save(ALERTS_BLOCK, overwrite=True)
    return {
        "work pool": f"{pool} ({pool_type}) {action}",
        "credentials": f"aws-credentials/{CREDENTIALS_BLOCK}",
        "alerts": f"sns-notification/{ALERTS_BLOCK}",
    }


#: The work pool types ``setup`` makes: a push pool (Prefect Cloud) or one served by an ECS worker (self-hosted).
POOL_TYPES = ("ecs:push", "ecs")


@aws_app.command("setup")
def setup(
    stack: Annotated[str, typer.Option("--stack", help="The CloudFormation stack's name.")] = "sluice",
    region: Annotated[str | None, typer.Option("--region", help="Default: the AWS CLI's region.")] = None,
    pool: Annotated[str, typer.Option("--pool", help="Work pool to create or update.")] = "sluice-ecs",
    pool_type: Annotated[
        str, typer.Option("--pool-type", help="ecs:push (Prefect Cloud) or ecs (self-hosted, with a worker).")
    ] = "ecs:push",
    env_file: Annotated[
        Path, typer.Option("--env-file", help="Where to write the deploy's environment.")
    ] = Path(".sluice/deploy.env"),
) -> None:
    """Read the stack's outputs; write the deploy's env file; create the pool, its credentials and alerts blocks."""
    if pool_type not in POOL_TYPES:  # was found out after reading the stack (or not at all without a region)
        raise fail(f"--pool-type must be {' or '.join(POOL_TYPES)}, not {pool_type!r}", code=2)
    # AWS modules only when AWS is used: kept off `sluice --help`
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

    prepare(False, remote=True)  # the pool and blocks go where `prefect cloud login` (the profile) points
    # after prepare: Prefect reads its environment once, at import
    from prefect.settings import get_current_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    try:
        env = stack_environment(stack, region)
        region = region or env.get("AWS_REGION") or boto3.session.Session().region_name
        if not region:
            raise fail("no region: pass --region or set AWS_REGION", code=2)
        env.setdefault("AWS_REGION", region)
        missing = [
            n for n in ("SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN", "SLUICE_SNS_TOPIC_ARN") if not env.get(n)
        ]
        if missing:
            raise fail(
                f"stack {stack} has no output for {', '.join(missing)}: is it Sluice's stack, up to date?"
            )
        path = write_env_file(env, env_file)
        made = run_coro_as_sync(configure_prefect(env, pool, pool_type, region))
    except NoRegionError:
        raise fail("no region: pass --region or set AWS_REGION (or AWS_DEFAULT_REGION)", code=2) from None
    except (BotoCoreError, ClientError) as exc:
        raise fail(f"stack {stack}: {exc}") from None
    console.print(f"wrote [bold]{path}[/] ({len(env)} variables from stack {stack})")
    console.print(f"Prefect API: [bold]{get_current_settings().api.url}[/]", highlight=False)
    for what, name in (made or {}).items():
        console.print(f"{what}: [bold]{name}[/]")
    if not env.get("SLUICE_TOTESYS_SOURCE_SECRET_ARN"):
        console.print("no TotesysSourceSecretArn output: totesys deploys without an active schedule")
