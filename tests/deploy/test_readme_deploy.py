"""The README's "Deploy to AWS" block is what a user types: at most 8 commands, and every file, stack parameter,
stack output and variable it names exists."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import pytest

from tests.deploy.conftest import template

ROOT = Path(__file__).resolve().parents[2]


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", section("Deploy to AWS"), re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def output_variables() -> dict[str, str]:
    out = {}
    for key, output in template()["Outputs"].items():
        words = (output.get("Description") or "").split()
        if words and re.fullmatch(r"(AWS|SLUICE)_[A-Z0-9_]+", words[0]):
            out[words[0]] = key
    return out


def test_at_most_eight_commands_from_an_empty_account_to_rows() -> None:
    cmds = commands()
    assert 1 <= len(cmds) <= 8, cmds
    assert any(c.startswith("aws cloudformation deploy") for c in cmds)
    assert "./run sluice aws setup --stack sluice" in cmds and "./run deploy" in cmds
    assert any("aws s3 cp" in c for c in cmds)  # the upload that lands rows
    # `pip install` into the uv environment fails (no pip there) and the next `uv sync --frozen` undoes it.
    assert "pip install" not in section("Deploy to AWS")


def test_every_file_it_names_exists() -> None:
    text = " ".join(commands()) + section("Deploy to AWS")
    files = set(
        re.findall(
            r"(?<![\w/.])((?:deployments|\.github)/[\w./-]+\.(?:ya?ml|json)|prefect\.yaml|Dockerfile)", text
        )
    )
    assert {
        "deployments/cloudformation/sluice.yaml",
        "deployments/webhook-template.json",
        "prefect.yaml",
    } <= files
    for name in files:
        assert (ROOT / name).is_file(), name


def test_stack_parameters_given_are_the_template_s_and_every_required_one_is_given() -> None:
    deploy = next(c for c in commands() if c.startswith("aws cloudformation deploy"))
    args = shlex.split(deploy)
    assert (
        args[args.index("--stack-name") + 1] == "sluice"
    )  # the stack `sluice aws setup --stack sluice` reads
    given = {a.split("=", 1)[0] for a in args[args.index("--parameter-overrides") + 1 :] if "=" in a}
    parameters = template()["Parameters"]
    assert given <= set(parameters)
    assert {k for k, v in parameters.items() if "Default" not in v} <= given


def test_every_stack_output_and_variable_it_names_exists() -> None:
    text = section("Deploy to AWS")
    outputs = set(template()["Outputs"])
    named = set(re.findall(r"`([A-Z][A-Za-z]+(?:Arn|Uri|Name|Ids?))`", text))
    assert named and named <= outputs | set(template()["Parameters"]), named - outputs
    variables = set(re.findall(r"\$\{?((?:SLUICE|AWS)_[A-Z0-9_]+)", " ".join(commands())))
    assert variables and variables <= set(output_variables()), variables - set(output_variables())


def test_the_commands_it_runs_exist() -> None:
    from sluice.cli.aws import aws_app

    assert "setup" in {c.name or c.callback.__name__ for c in aws_app.registered_commands}
    run = (ROOT / "run").read_text()
    assert re.search(r"^\s+deploy\)", run, re.M) and ".sluice/deploy.env" in run
    from sluice.cli.aws import setup

    # The env file `sluice aws setup` writes by default is the one ./run deploy sources.
    assert str(inspect.signature(setup).parameters["env_file"].default) == ".sluice/deploy.env"


def test_local_deployments_are_deployed_with_their_own_file() -> None:
    text = section("Deploy to AWS")
    assert "prefect --no-prompt deploy --all --prefect-file deployments/local.yaml" in text
    assert "SLUICE_PROJECT_DIR" not in (ROOT / "README.md").read_text()


def prefect_commands() -> list[str]:
    """Every `prefect …` command the README shows, in code blocks and in inline code (without `.venv/bin/`)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = " \n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    lines = re.sub(r"\\\n\s*", " ", blocks).splitlines() + re.findall(r"`([^`\n]+)`", text)
    found = []
    for line in lines:
        for match in re.finditer(r"(?:^|[\s(])(?:\.venv/bin/)?(prefect(?: [^|;&#]*)?)", line):
            command = match.group(1).split("  ")[0].strip()
            if command != "prefect" and re.match(r"prefect (--[a-z-]+ )*[a-z]", command):
                found.append(command)
    return found


def test_every_prefect_command_and_option_it_names_is_one_the_installed_prefect_takes() -> None:
    """Parsed by Prefect's own CLI (cyclopts), not run: an unknown command or option fails here, not at the user.
    A mention without its required argument (`prefect flow-run cancel`) is a mention, not a wrong command."""
    from cyclopts.exceptions import CycloptsError, MissingArgumentError
    from prefect.cli._app import _app

    commands = prefect_commands()
    assert {
        "prefect cloud login",
        "prefect gcl create sluice-warehouse --limit 4",
        "prefect flow-run ls --flow-name ingest-file --limit 1",
        "prefect work-pool create sluice-local --type process",
        "prefect --no-prompt deploy --all --prefect-file deployments/local.yaml",
        "prefect worker start --pool sluice-local",
        "prefect automation create --from-file deployments/automations/crashed.yaml",
    } <= set(commands), commands
    wrong = []
    for command in commands:
        tokens = shlex.split(re.sub(r'"\$\((.*?)\)"', "'{}'", command))[1:]
        tokens = [t for t in tokens if t not in ("--no-prompt",)]
        try:
            _app.parse_args(tokens, exit_on_error=False, print_error=False)
        except MissingArgumentError:
            continue
        except CycloptsError as exc:  # an unknown command or option, a bad value
            wrong.append(f"{command}: {exc}")
    assert not wrong, wrong
    with pytest.raises(CycloptsError, match="flow-nam"):  # the check can fail
        _app.parse_args(["flow-run", "ls", "--flow-nam", "x"], exit_on_error=False, print_error=False)


def test_the_webhook_step_says_what_prefect_prints_and_where_its_url_is() -> None:
    """`prefect cloud webhook create` prints no URL (only its name); the URL is the `url slug` column of
    `prefect cloud webhook ls` under https://api.prefect.cloud/hooks/, which the stack's WebhookUrl takes."""
    from prefect.cli import _cloud_utils
    from prefect.cli.cloud import webhook

    created = inspect.getsource(webhook.webhook_create)
    assert "print(f\"Successfully created webhook {response['name']}\")" in created
    assert "url" not in created.split("Successfully created webhook")[1].split("\n")[0]
    assert '"url slug"' in inspect.getsource(_cloud_utils.render_webhooks_into_table)
    text = section("Deploy to AWS")
    assert "Successfully created webhook sluice-s3" in text and "prints the webhook's URL" not in text
    assert "https://api.prefect.cloud/hooks/<url slug>" in text and "prefect cloud webhook ls" in text
    deploy = next(c for c in commands() if c.startswith("aws cloudformation deploy"))
    assert "WebhookUrl=https://api.prefect.cloud/hooks/" in deploy


def upload_source_and_key() -> tuple[str, str]:
    """The local file and the landing key of the README's `aws s3 cp` line."""
    upload = next(c for c in commands() if "aws s3 cp" in c)
    found = re.search(r'aws s3 cp (\S+) "\$SLUICE_LANDING_URI/([^"]+)"', upload)
    assert found, upload
    return found.group(1), found.group(2)


def test_the_upload_is_a_file_the_demo_lands_under_a_key_its_dataset_claims() -> None:
    """The `aws s3 cp` source exists after `./run demo` (the README's prerequisite); the key it lands under is
    claimed by the same dataset, so the trigger's run loads it (no `dailycheckins.csv` the user does not have)."""
    from sluice import datasets

    source, key = upload_source_and_key()
    demo = {f".sluice/landing/{d.demo_key}": d.name for d in datasets.all_datasets() if d.demo_key}
    assert source in demo, (source, sorted(demo))
    assert datasets.resolve(key).name == demo[source]
    assert "after `./run demo`" in section("Deploy to AWS")


def test_the_stack_command_deploys_with_what_it_passes() -> None:
    """`--capabilities CAPABILITY_IAM` is enough only if no IAM resource is named (else CloudFormation asks for
    CAPABILITY_NAMED_IAM), and `--template-file` without `--s3-bucket` takes templates up to 51,200 bytes."""
    deploy = next(c for c in commands() if c.startswith("aws cloudformation deploy"))
    args = shlex.split(deploy)
    assert args[args.index("--capabilities") + 1] == "CAPABILITY_IAM" and "--s3-bucket" not in args
    path = ROOT / args[args.index("--template-file") + 1]
    assert len(path.read_bytes()) <= 51_200
    named = {"RoleName", "UserName", "GroupName", "ManagedPolicyName", "InstanceProfileName"}
    for logical, resource in template()["Resources"].items():
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group", "AWS::IAM::ManagedPolicy",
                                "AWS::IAM::InstanceProfile"):  # fmt: skip
            assert not named & set(resource.get("Properties", {})), logical


@pytest.mark.usefixtures("prefect_harness")
def test_aws_setup_deploy_check_and_upload_run_as_written(moto_server: str, tmp_path: Path) -> None:
    """`./run sluice aws setup --stack sluice` as typed (no --region, no --env-file) in a checkout, on a stack named
    as the README names it; then `./run deploy`'s check on the file it wrote, and the upload line as typed (with the
    AWS CLI, when installed) into the bucket the S3 trigger of prefect.yaml matches."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import boto3
    import yaml
    from prefect.settings import PREFECT_API_URL

    from tests.deploy.conftest import REGION, deploy_stack
    from tests.deploy.test_cli_aws import full_environment

    # The stack as the README's command makes it: its optional parameters given or not as the README gives them.
    deploy = next(c for c in commands() if c.startswith("aws cloudformation deploy"))
    args = shlex.split(deploy)
    given = {a.split("=", 1)[0] for a in args[args.index("--parameter-overrides") + 1 :] if "=" in a}
    api_key = "pnu_readme" if "PrefectApiKey" in given else ""
    real = deploy_stack(
        moto_server,
        prefect_api_key=api_key,
        totesys_source="postgresql://t@oltp/totesys" if "TotesysSourceUrl" in given else "",
    )
    # moto's CloudFormation leaves out the outputs of what it skips (the secrets): a stack named `sluice` that
    # carries the real stack's outputs, each with the template's own Description, stands in for it.
    values = {**real.outputs, "PushPoolCredentialsSecretArn": full_environment(real)[
        "SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN"]}  # fmt: skip
    outputs = {
        key: {"Value": values[key], **({"Description": o["Description"]} if "Description" in o else {})}
        for key, o in template()["Outputs"].items()
        if key in values
    }
    body = {"Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}}, "Outputs": outputs}
    real.client("cloudformation").create_stack(StackName="sluice", TemplateBody=json.dumps(body))

    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": real.endpoint,
        "AWS_ACCESS_KEY_ID": real.admin["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": real.admin["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": REGION,  # the AWS CLI's region, as `aws configure` would set it
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        # `prefect cloud login` (the README's first command) puts the workspace's key in the profile.
        "PREFECT_API_KEY": "pnu_login",
    }
    env.pop("AWS_REGION", None)
    [setup_line] = [c for c in commands() if c.startswith("./run sluice aws setup")]
    setup = subprocess.run(
        [sys.executable, "-m", "sluice.cli", *shlex.split(setup_line.removeprefix("./run sluice "))],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "Traceback" not in setup.stderr and "wrote .sluice/deploy.env" in setup.stdout, setup.stdout
    env_file = tmp_path / ".sluice" / "deploy.env"  # where `./run deploy` (run from the checkout) sources it

    check = subprocess.run(
        ["bash", "-c", f'set -a; . .sluice/deploy.env; set +a; "{sys.executable}" -m sluice.deploycheck '
         f'{shlex.quote(str(ROOT / "prefect.yaml"))}'],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"AWS_REGION={REGION}" in env_file.read_text()
    # With the README's PrefectApiKey, the containers' key comes from the stack's secret, not the RunTask request.
    secret = re.search(r"^export SLUICE_PREFECT_API_KEY_SECRET_ARN=(\S*)$", env_file.read_text(), re.M)
    assert secret and secret.group(1).startswith("arn:") == bool(api_key), env_file.read_text()

    upload = next(c for c in commands() if "aws s3 cp" in c)
    source, key = upload_source_and_key()
    (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / source).write_text("user,timestamp,hours,project\nned,2019-09-27 00:00:00 UTC,1,p\n")
    landing = real.outputs["LandingBucketName"]
    # Without the AWS CLI installed, the rest of the line still runs.
    stub = "" if shutil.which("aws") else "aws() { :; }\n"
    done = subprocess.run(
        ["bash", "-c", f"{stub}{upload}\nenv"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # The stack's variables stay out of the user's shell: the next local command must not go to the stack.
    stack_names = re.findall(r"^export (\w+)=", env_file.read_text(), re.M)
    after = {line.split("=", 1)[0] for line in done.stdout.splitlines() if "=" in line}
    assert stack_names and not [n for n in stack_names if n in after and n not in env]
    if not stub:
        s3 = boto3.client("s3", endpoint_url=real.endpoint, region_name=REGION, **real.admin)
        assert s3.head_object(Bucket=landing, Key=key)["ContentLength"] > 0
    # The bucket the upload lands in is the one the S3 trigger of every AWS deployment listens to.
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    match = prefect_yaml["definitions"]["triggers"]["s3_object_created"]["match"]["prefect.resource.id"]
    assert f"s3.bucket.{landing}".startswith(match.rstrip("*")), (landing, match)


def test_every_variable_and_secret_the_workflow_reads_is_named_in_the_readme() -> None:
    """A user setting up CI/CD learns from the README which GitHub variables and secrets to create."""
    workflow = (ROOT / ".github" / "workflows" / "sluice.yml").read_text(encoding="utf-8")
    names = set(re.findall(r"\$\{\{\s*(?:vars|secrets)\.([A-Z0-9_]+)", workflow))
    environments = set(re.findall(r"^\s+environment:\s*(\S+)", workflow, re.M))
    assert names >= {"AWS_DEPLOY_ROLE_ARN", "PREFECT_API_KEY"} and environments
    text = section("Deploy to AWS")
    assert {n for n in names if f"`{n}`" not in text} == set()
    assert {e for e in environments if f"`{e}`" not in text} == set()


def test_the_secrets_it_names_are_the_stacks_secrets() -> None:
    """ "Where each secret lives": every Secrets Manager name the README gives is one the stack creates, and each
    secret of the stack is named or reached through the output the README names."""
    text = section("Deploy to AWS")
    named = set(re.findall(r"`(sluice/[a-z0-9-]+)`", text))
    secrets = {
        logical: resource["Properties"]["Name"]
        for logical, resource in template()["Resources"].items()
        if resource["Type"] == "AWS::SecretsManager::Secret"
    }
    assert named and named <= set(secrets.values()), named - set(secrets.values())
    by_output = {
        str(output["Value"]["Ref"])
        for key, output in template()["Outputs"].items()
        if isinstance(output["Value"], dict) and f"`{key}`" in text and "Ref" in output["Value"]
    }
    assert {
        logical for logical, name in secrets.items() if name not in named and logical not in by_output
    } == set()


def real_account_checks() -> str:
    """The shell block of docs/aws-checks.md, which the README sends the user to after the first deploy."""
    text = (ROOT / "docs" / "aws-checks.md").read_text(encoding="utf-8")
    return re.search(r"```sh\n(.*?)```", text, re.S).group(1)


def test_the_real_account_checks_name_what_the_stack_and_the_checkout_have() -> None:
    """Every stack output (`out X`) and resource (`res X`) docs/aws-checks.md reads is the template's, every local
    file it uploads is one the checkout has after `./run demo` (no `dailycheckins.csv`), and every `prefect`
    command runs the checkout's Prefect (no `prefect` on the PATH is assumed) and parses."""
    from cyclopts.exceptions import CycloptsError, MissingArgumentError
    from prefect.cli._app import _app

    from sluice import datasets

    block = real_account_checks()
    outputs = set(re.findall(r"\$\(out (\w+)\)", block))
    resources = set(re.findall(r"\$\(res (\w+)\)", block))
    assert outputs and outputs <= set(template()["Outputs"]), outputs - set(template()["Outputs"])
    assert resources and resources <= set(template()["Resources"]), resources - set(template()["Resources"])
    demo = {f".sluice/landing/{d.demo_key}" for d in datasets.all_datasets() if d.demo_key}
    uploads = re.findall(r"aws s3 cp (\S+) ", block)
    assert uploads and set(uploads) <= demo, (uploads, sorted(demo))
    lines = [line for line in block.splitlines() if not line.lstrip().startswith("#")]
    wrong: list[str] = []
    bare = [line for line in lines if re.search(r"(?:^|[\s;&|(])prefect ", line)]
    assert not bare, bare
    for line in lines:
        for found in re.finditer(r"\.venv/bin/prefect ([^&|;#]+)", line):
            tokens = shlex.split(re.sub(r"\$\(out \w+\)|<[^>]+>", "x", found.group(1)))
            try:
                _app.parse_args(tokens, exit_on_error=False, print_error=False)
            except MissingArgumentError:
                continue
            except CycloptsError as exc:  # an unknown command or option
                wrong.append(f"{found.group(0)}: {exc}")
    assert not wrong, wrong


def test_the_real_account_checks_find_the_stack_s_region_and_account_however_the_cli_gets_its_region(
    moto_server: str, tmp_path: Path
) -> None:
    """The block's first lines, run with the real AWS CLI, set R and ACCOUNT, which every ARN after them is built
    from. A region given by AWS_DEFAULT_REGION (CI, a shell, an SSO helper) is not in `aws configure get region`,
    which reads only the config file: R came out empty, and `arn:aws:ecs::…` made every simulation implicitDeny."""
    import json
    import os
    import shutil
    import subprocess

    import boto3

    if shutil.which("aws") is None:
        pytest.skip("no AWS CLI here")
    region = "eu-west-2"  # not moto's default: the region must come from the stack or the CLI's environment
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto's
    cfn = boto3.client("cloudformation", endpoint_url=moto_server, region_name=region, **keys)
    body = {
        "Resources": {
            "AlertsTopic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "sluice-alerts"}}
        },
        "Outputs": {
            "AlertsTopicArn": {"Value": {"Ref": "AlertsTopic"}},
            "TaskRoleArn": {"Value": "arn:aws:iam::123456789012:role/sluice-TaskRole-X"},
            "PushPoolUserName": {"Value": "sluice-PushPoolUser-X"},
        },
    }
    cfn.create_stack(StackName="sluice", TemplateBody=json.dumps(body))
    prelude = real_account_checks().split("\n# 1 ", 1)[0]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),  # no ~/.aws/config: the region only in the environment
        "AWS_DEFAULT_REGION": region,
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"],
    }
    done = subprocess.run(
        ["bash", "-c", f'{prelude}\necho "R=$R ACCOUNT=$ACCOUNT POOL=$POOL"'],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"R={region} ACCOUNT=123456789012 POOL=arn:aws:iam::123456789012:user/sluice-PushPoolUser-X" in (
        done.stdout
    ), done.stdout + done.stderr


def test_the_prefect_commands_for_the_local_server_say_how_to_reach_it() -> None:
    """Prefect's own CLI, typed as the README shows it without PREFECT_API_URL, works on a temporary server of its
    own (~/.prefect), not the home's: `prefect worker start` refuses to start at all, and a `prefect gcl create`
    limit is not where the runs look. The self-hosted path and the concurrency limit say where the URL comes from."""
    import prefect.workers.base

    assert "`PREFECT_API_URL` must be set to start a Worker." in inspect.getsource(prefect.workers.base)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    flat = " ".join(text.split())
    start = flat.index("**Self-hosted, on a process worker**")
    hosted = flat[start : flat.index("prefect worker start --pool sluice-local", start)]
    assert "nothing to set" not in hosted
    assert "export PREFECT_API_URL=" in hosted and "./run sluice services status" in hosted, hosted
    start = flat.index("To keep many parallel runs")
    limit = flat[start : flat.index("SLUICE_WAREHOUSE_CONCURRENCY_LIMIT=sluice-warehouse", start)]
    assert "PREFECT_API_URL" in limit and "./run sluice services status" in limit, limit


def test_removing_the_stack_or_starting_again_says_what_cloudformation_does() -> None:
    """The bucket and ledger policy the README names is the template's; a failed first create is said (the stack is
    left in ROLLBACK_COMPLETE, which must be deleted before the command runs again); and the secrets are not sent
    to `restore-secret`: CloudFormation deletes a stack's secrets without a recovery window
    (aws-cloudformation/cloudformation-coverage-roadmap#1999), so a restore finds nothing."""
    flat = " ".join(section("Deploy to AWS").split())
    start = flat.index("**Removing the stack, or starting again.**")
    text = flat[start : flat.index("**What only a real account can check**")]
    policies = {
        template()["Resources"][n]["DeletionPolicy"] for n in ("LandingBucket", "DataBucket", "LedgerTable")
    }
    named = set(re.findall(r"`DeletionPolicy: (\w+)`", text))
    assert named and named == policies, (named, policies)
    assert "ROLLBACK_COMPLETE" in text and "aws cloudformation delete-stack --stack-name sluice" in text
    assert "restore-secret" not in text
