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
from sluice.errors import described
from sluice.runtime import prepare, users_api_url
from sluice.warm import project_root

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


def stack_lacks(env: dict[str, str]) -> list[str]:
    """What the deploy needs that ``env`` (the stack's outputs) lacks or holds malformed, as the deploy check says it
    (``SLUICE_TASK_ROLE_ARN is not set``), from this checkout's ``prefect.yaml``; the setup's own two without one."""
    from sluice.deploycheck import problems  # the same check `./run deploy` runs

    prefect_file = project_root() / "prefect.yaml"
    if prefect_file.is_file():
        # api_key: the profile's key is the deploy's business, not the stack's
        found = problems(prefect_file.read_text(encoding="utf-8"), env, api_key="set")
    else:
        found = []
    for name in ("SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN", "SLUICE_SNS_TOPIC_ARN"):
        line = f"{name} is not set"
        if not env.get(name, "").strip() and line not in found:
            found.append(line)
    return [line.replace(" is not set", ": no output for it") for line in found]


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

    arn = env["SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN"]
    secret = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=arn)
    try:
        keys = json.loads(secret["SecretString"])
        keys = {name: str(keys[name]) for name in ("aws_access_key_id", "aws_secret_access_key")}
    except (ValueError, KeyError, TypeError) as exc:  # a traceback (JSONDecodeError, KeyError) before
        raise fail(
            f"secret {arn.rsplit(':', 1)[-1]} (PushPoolCredentialsSecretArn) is not the push pool user's key: "
            f"JSON with aws_access_key_id and aws_secret_access_key ({type(exc).__name__}: {exc})"
        ) from None
    register_blocks()
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

    if users_api_url() is None:
        # It went to this home's local server, where `./run deploy` (a temporary server of Prefect's) never looks
        raise fail(
            "no Prefect API to set up: `.venv/bin/prefect cloud login` first (the ecs:push pool is Prefect Cloud's), "
            "or set PREFECT_API_URL to your self-hosted server and pass --pool-type ecs"
        )
    prepare(False, remote=True)  # the pool and blocks go where `prefect cloud login` (the profile) points
    # after prepare: Prefect reads its environment once, at import
    from prefect.settings import get_current_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    api = get_current_settings().api.url
    try:
        env = stack_environment(stack, region)
        region = region or env.get("AWS_REGION") or boto3.session.Session().region_name
        if not region:
            raise fail("no region: pass --region or set AWS_REGION", code=2)
        env.setdefault("AWS_REGION", region)
        lacking = stack_lacks(env)
        if lacking:  # before anything is made: a pool updated from half a stack lost its role
            raise fail(f"stack {stack} in {region}: {'; '.join(lacking)}: is it Sluice's stack, up to date?")
        # Before the pool: a path that cannot be written fails here, not after the pool was made.
        try:
            env_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(f"--env-file {env_file}: cannot write there ({exc.strerror or exc})") from None
        try:
            made = run_coro_as_sync(configure_prefect(env, pool, pool_type, region))
        except Exception as exc:  # the Prefect API's own: unreachable, refused
            if isinstance(exc, (typer.Exit, BotoCoreError, ClientError)):
                raise
            raise fail(f"the Prefect API at {api}: {described(exc)}") from None
        # Last: the file `./run deploy` sources says what the pool was made from, never a half-done setup
        path = write_env_file(env, env_file)
    except NoRegionError:
        raise fail("no region: pass --region or set AWS_REGION (or AWS_DEFAULT_REGION)", code=2) from None
    except (BotoCoreError, ClientError) as exc:
        where = region or boto3.session.Session().region_name or "no region"
        raise fail(f"stack {stack} in {where}: {exc}") from None
    console.print(f"wrote [bold]{path}[/] ({len(env)} variables from stack {stack})")
    console.print(f"Prefect API: [bold]{api}[/]", highlight=False)
    for what, name in (made or {}).items():
        console.print(f"{what}: [bold]{name}[/]")
    if not env.get("SLUICE_TOTESYS_SOURCE_SECRET_ARN"):
        console.print("no TotesysSourceSecretArn output: totesys deploys without an active schedule")
