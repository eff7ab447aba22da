"""`sluice aws setup`: the stack's outputs (deployed into moto) become the deploy's environment, the push pool's
credentials block, the ECS work pool (credentials, cluster, VPC, subnets, security group) and the alerts block."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from sluice.deploycheck import problems
from tests.deploy.conftest import REGION, MotoStack, deploy_stack, template

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("prefect_harness")


def feeds() -> dict[str, str]:
    """Output name → the variable it feeds (the first word of its Description), from the template."""
    out = {}
    for key, output in template()["Outputs"].items():
        word = (output.get("Description") or "").split()[:1]
        if word and word[0].isupper() and "_" in word[0]:
            out[key] = word[0]
    return out


@pytest.fixture(scope="module")
def stack(moto_server: str) -> MotoStack:
    return deploy_stack(moto_server)


def aws_env(stack: MotoStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", stack.admin["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stack.admin["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


_FULL: dict[str, dict[str, str]] = {}


def full_environment(stack: MotoStack) -> dict[str, str]:
    """Every output's variable with its value (moto's CloudFormation leaves out outputs of the resources it
    skips, e.g. secrets: the conftest made them from the template, and the push pool's secret is made here)."""
    if stack.endpoint in _FULL:
        return _FULL[stack.endpoint]
    iam = stack.client("iam")
    user = stack.outputs["PushPoolUserName"]
    key = iam.create_access_key(UserName=user)["AccessKey"]
    secret = stack.client("secretsmanager").create_secret(
        Name=f"sluice/push-pool-credentials-{user[-6:]}",
        SecretString=json.dumps(
            {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        ),
    )["ARN"]
    outputs = {**stack.outputs, "PushPoolCredentialsSecretArn": secret}
    env = {var: outputs[key] for key, var in feeds().items() if key in outputs}
    env.setdefault("SLUICE_TOTESYS_SOURCE_SECRET_ARN", "")
    _FULL[stack.endpoint] = env
    return env


def test_every_stack_output_feeding_prefect_yaml_is_read_from_the_stack(
    stack: MotoStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.cli.aws import stack_environment

    aws_env(stack, monkeypatch)
    env = stack_environment(stack.resolve.refs["AWS::StackName"], REGION)
    # What moto's CloudFormation reports is read as the template says (outputs of skipped resources aside).
    reported = {var for key, var in feeds().items() if key in env or var in env}
    assert {k: v for k, v in env.items() if v} == {
        k: v for k, v in full_environment(stack).items() if k in reported and v
    }
    assert env["SLUICE_SUBNET_IDS"] == stack.parameters["SubnetIds"]
    assert env["SLUICE_TOTESYS_SOURCE_SECRET_ARN"] == ""  # no source in this stack: decided, not forgotten
    # Every variable prefect.yaml needs is an output of the stack.
    needed = {line.split()[0] for line in problems((ROOT / "prefect.yaml").read_text(), {})}
    assert needed <= set(feeds().values())


def test_setup_makes_the_pool_its_credentials_and_the_alerts_block(
    stack: MotoStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from prefect.blocks.core import Block
    from prefect.client.orchestration import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_aws import AwsCredentials
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration

    from sluice.cli.aws import configure_prefect, write_env_file

    aws_env(stack, monkeypatch)
    env = full_environment(stack)
    path = write_env_file(env, tmp_path / "deploy.env")
    # The file is what `./run deploy` sources: a shell reads back every value, and the check passes on it.
    shell = subprocess.run(
        ["bash", "-c", f"set -a; . {shlex.quote(str(path))}; env"], capture_output=True, text=True, check=True
    ).stdout  # fmt: skip
    sourced = dict(line.split("=", 1) for line in shell.splitlines() if "=" in line)
    assert {k: sourced[k] for k in env} == env
    assert problems((ROOT / "prefect.yaml").read_text(), sourced) == []

    async def email_type(delete: bool = False) -> Any:
        from prefect.exceptions import ObjectNotFound

        async with get_client() as client:
            try:
                found = await client.read_block_type_by_slug("email-notification")
            except ObjectNotFound:
                return None
            if delete:
                await client.delete_block_type(found.id)
            return found

    run_coro_as_sync(
        email_type(delete=True)
    )  # an earlier test may have registered it: setup must do it itself
    for _ in range(2):  # created, then updated in place
        made = run_coro_as_sync(configure_prefect(env, "sluice-ecs-test", "ecs", REGION))
    assert run_coro_as_sync(email_type()) is not None  # setup registered the block types (it runs in a loop)
    assert made["work pool"] == "sluice-ecs-test (ecs) updated"

    keys = json.loads(
        stack.client("secretsmanager").get_secret_value(
            SecretId=env["SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN"]
        )["SecretString"]
    )
    credentials = AwsCredentials.load("sluice-push-pool")
    assert credentials.aws_access_key_id == keys["aws_access_key_id"] and credentials.region_name == REGION

    async def pool() -> Any:
        async with get_client() as client:
            return await client.read_work_pool("sluice-ecs-test")

    work_pool = run_coro_as_sync(pool())
    assert work_pool.type == "ecs"  # `--pool-type ecs:push` in Prefect Cloud; push pools are Cloud only
    config = run_coro_as_sync(ECSJobConfiguration.from_template_and_values(work_pool.base_job_template, {}))
    assert config.cluster == env["SLUICE_ECS_CLUSTER"] and config.vpc_id == env["SLUICE_VPC_ID"]
    assert config.network_configuration == {
        "subnets": env["SLUICE_SUBNET_IDS"].split(","),
        "securityGroups": [env["SLUICE_TASK_SECURITY_GROUP"]],
        "assignPublicIp": "DISABLED",
    }
    assert config.aws_credentials.aws_access_key_id == keys["aws_access_key_id"]
    # The secret key is in the credentials block's secret field only: never in the pool's template (which every
    # workspace member reads; it holds a reference to the block), nor in the env file `./run deploy` sources.
    secret_key = keys["aws_secret_access_key"]
    assert credentials.aws_secret_access_key.get_secret_value() == secret_key
    assert secret_key not in json.dumps(work_pool.base_job_template) + path.read_text()
    assert "$ref" in json.dumps(work_pool.base_job_template["variables"]["properties"]["aws_credentials"])
    # The pool's principal can reach the stack's ECS with those credentials.
    ecs = config.aws_credentials.get_client("ecs")
    assert (
        ecs.describe_clusters(clusters=[env["SLUICE_ECS_CLUSTER"]])["clusters"][0]["clusterName"] == "sluice"
    )

    alerts = Block.load("sns-notification/sluice-alerts")
    assert alerts.topic_arn == env["SLUICE_SNS_TOPIC_ARN"]


def test_setup_names_what_the_stack_lacks(stack: MotoStack, tmp_path: Path) -> None:
    """moto's stack has no PushPoolCredentialsSecretArn output (it skips secrets): one readable line, exit 1."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": stack.endpoint,
        "AWS_ACCESS_KEY_ID": stack.admin["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": stack.admin["aws_secret_access_key"],
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    result = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "aws", "setup", "--stack", stack.resolve.refs["AWS::StackName"],
         "--region", REGION, "--env-file", str(tmp_path / "deploy.env")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN" in result.stderr and "Traceback" not in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "aws", "setup", "--stack", "no-such-stack", "--region", REGION],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert missing.returncode == 1 and "no-such-stack" in missing.stderr and "Traceback" not in missing.stderr
    assert missing.stderr.startswith(f"error: stack no-such-stack in {REGION}: ")  # a wrong region shows


@pytest.fixture(autouse=True)
def _boto_default_session() -> None:
    boto3.DEFAULT_SESSION = None


def _setup(stack: MotoStack, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """`sluice aws setup ARGS` in its own process as the stack's administrator; ``env`` over this process's (None:
    unset)."""
    merged = {
        **os.environ,
        "AWS_ENDPOINT_URL": stack.endpoint,
        "AWS_ACCESS_KEY_ID": stack.admin["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": stack.admin["aws_secret_access_key"],
        **{k: v for k, v in env.items() if v is not None},
    }
    for name in (k for k, v in env.items() if v is None):
        merged.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", "aws", "setup", "--region", REGION, *args],
        cwd=ROOT, env=merged, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _stand_in(stack: MotoStack, env: dict[str, str]) -> str:
    """A stack whose outputs feed exactly ``env``'s non-empty variables (moto's CloudFormation leaves out the
    outputs of the resources it skips, so the deployed stack cannot stand for a complete one)."""
    name = f"stand-in-{uuid.uuid4().hex[:6]}"
    outputs = {
        "".join(part.title() for part in variable.split("_")): {
            "Description": f"{variable} …",
            "Value": value,
        }
        for variable, value in env.items()
        if value
    }
    body = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}, "Outputs": outputs}
    stack.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(body))
    return name


def _half_stack(stack: MotoStack, secret_string: str) -> str:
    """A stack with only the two outputs setup used to check (the push pool's credentials secret, holding
    ``secret_string``, and the alerts topic): no roles, cluster or network."""
    secret = stack.client("secretsmanager").create_secret(
        Name=f"half-{uuid.uuid4().hex[:6]}", SecretString=secret_string
    )
    env = full_environment(stack)
    return _stand_in(
        stack,
        {
            "SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN": secret["ARN"],
            "SLUICE_SNS_TOPIC_ARN": env["SLUICE_SNS_TOPIC_ARN"],
        },
    )


def test_setup_without_a_prefect_api_of_the_users_refuses_before_anything(
    stack: MotoStack, tmp_path: Path
) -> None:
    """Without `prefect cloud login` or PREFECT_API_URL, setup made the pool on the home's local server, where
    `./run deploy` (a temporary server of Prefect's own) never looked: "work pool 'sluice-ecs' does not exist"."""
    done = _setup(
        stack, "--stack", stack.resolve.refs["AWS::StackName"], "--env-file", str(tmp_path / "deploy.env"),
        PREFECT_API_URL=None, PREFECT_PROFILES_PATH=str(tmp_path / "no-profiles.toml"),
        SLUICE_HOME=str(tmp_path / "home"),
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: no Prefect API to set up: `.venv/bin/prefect cloud login` first")
    assert not (tmp_path / "deploy.env").exists() and not (tmp_path / "home" / "prefect").exists()


def test_setup_names_every_output_the_deploy_needs_and_makes_nothing_without_them(
    stack: MotoStack, tmp_path: Path
) -> None:
    """A stack with the credentials secret and the topic but no roles, cluster or network passed (exit 0) and
    updated the pool, its task role gone; the env file was written before the pool, whatever came after."""
    from prefect.settings import PREFECT_API_URL

    name = _half_stack(stack, json.dumps({"aws_access_key_id": "a", "aws_secret_access_key": "b"}))
    pool = f"half-{uuid.uuid4().hex[:6]}"
    done = _setup(
        stack, "--stack", name, "--pool", pool, "--pool-type", "ecs", "--env-file", str(tmp_path / "deploy.env"),
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"error: stack {name} in {REGION}: "), done.stderr
    said = " ".join(done.stderr.split())
    for variable in ("SLUICE_TASK_ROLE_ARN", "SLUICE_ECS_CLUSTER", "SLUICE_SUBNET_IDS", "SLUICE_IMAGE_REPO"):
        assert f"{variable}: no output for it" in said, said
    assert not (tmp_path / "deploy.env").exists()

    async def pools() -> list[str]:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return [p.name for p in await client.read_work_pools()]

    from prefect.utilities.asyncutils import run_coro_as_sync

    assert pool not in run_coro_as_sync(pools())


def test_a_credentials_secret_that_is_not_the_keys_or_an_env_file_that_cannot_be_written_is_one_line(
    stack: MotoStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Were tracebacks: JSONDecodeError, KeyError: 'aws_access_key_id', FileExistsError."""
    import typer

    from sluice.cli.aws import configure_prefect

    aws_env(stack, monkeypatch)
    for secret in ("not json", json.dumps({"access_key": "a"})):
        arn = stack.client("secretsmanager").create_secret(
            Name=f"bad-{uuid.uuid4().hex[:6]}", SecretString=secret
        )["ARN"]
        env = {**full_environment(stack), "SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN": arn}
        with pytest.raises(typer.Exit):
            asyncio.run(configure_prefect(env, "never-made", "ecs", REGION))
        said = capsys.readouterr().err
        assert (
            "is not the push pool user's key: JSON with aws_access_key_id and aws_secret_access_key" in said
        )

    from prefect.settings import PREFECT_API_URL

    (tmp_path / "a-file").write_text("")
    aws_env(stack, monkeypatch)
    done = _setup(
        stack, "--stack", _stand_in(stack, full_environment(stack)), "--env-file", str(tmp_path / "a-file" / "deploy.env"),
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )  # fmt: skip
    assert "Traceback" not in done.stderr and done.returncode == 1, done.stderr
    assert done.stderr.startswith(
        f"error: --env-file {tmp_path / 'a-file' / 'deploy.env'}: cannot write there"
    )
