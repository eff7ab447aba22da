"""The check before anything is deployed: every variable a deployment file needs, named when missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sluice.deploycheck import network_configuration, placeholders, problems
from tests.deploy.test_prefect_yaml import STACK_ENV

ROOT = Path(__file__).resolve().parents[2]


def run_check(env: dict[str, str], *files: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not (k.startswith("SLUICE_") or k == "AWS_REGION")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.deploycheck", *files],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_aws_file_needs_every_stack_output_that_feeds_it() -> None:
    needed = set(placeholders((ROOT / "prefect.yaml").read_text()))
    assert needed == set(STACK_ENV)


def test_a_missing_variable_fails_the_check_and_each_one_is_named() -> None:
    result = run_check({}, "prefect.yaml")
    assert result.returncode == 1
    for name in set(STACK_ENV) - {"SLUICE_TOTESYS_SOURCE_SECRET_ARN", "SLUICE_PREFECT_API_KEY_SECRET_ARN"}:
        assert f"{name} is not set" in result.stderr, name
    assert "aws setup" in result.stderr  # and what to do about it
    partial = {k: v for k, v in STACK_ENV.items() if k != "SLUICE_TASK_ROLE_ARN"}
    one = run_check(partial, "prefect.yaml")
    assert (
        one.returncode == 1 and one.stderr.count("is not set") == 1 and "SLUICE_TASK_ROLE_ARN" in one.stderr
    )


def test_a_complete_environment_passes_and_totesys_source_is_optional() -> None:
    assert run_check(STACK_ENV, "prefect.yaml").returncode == 0
    assert problems((ROOT / "prefect.yaml").read_text(), STACK_ENV) == []


def test_an_empty_or_malformed_value_is_not_a_value() -> None:
    text = (ROOT / "prefect.yaml").read_text()
    found = problems(text, {**STACK_ENV, "SLUICE_LOG_GROUP": " ", "SLUICE_TASK_ROLE_ARN": "sluice-task"})
    assert sorted(found) == [
        "SLUICE_LOG_GROUP is not set",
        "SLUICE_TASK_ROLE_ARN='sluice-task' does not start with 'arn:'",
    ]


def test_the_local_file_needs_nothing() -> None:
    assert placeholders((ROOT / "deployments" / "local.yaml").read_text()) == []
    assert run_check({}, "deployments/local.yaml").returncode == 0


def test_network_configuration_from_the_stack_outputs() -> None:
    assert network_configuration({"SLUICE_SUBNET_IDS": " subnet-a, subnet-b ,", "SLUICE_TASK_SECURITY_GROUP": "sg-1"}) == {
        "subnets": ["subnet-a", "subnet-b"], "securityGroups": ["sg-1"], "assignPublicIp": "DISABLED",
    }  # fmt: skip
    assert network_configuration({}) == {}


def test_base_images_are_pulled_unless_switched_off(monkeypatch) -> None:
    from sluice.deploycheck import check

    for name, value in {**STACK_ENV}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("SLUICE_IMAGE_PULL_BASE", raising=False)
    assert check("prefect.yaml")["pull_base_images"] is True
    monkeypatch.setenv("SLUICE_IMAGE_PULL_BASE", "false")
    assert check("prefect.yaml")["pull_base_images"] is False


def test_run_deploy_sources_the_env_file_and_stops_at_the_check(tmp_path: Path) -> None:
    """`./run deploy` as a user types it: the env file `sluice aws setup` wrote, missing one output."""
    env_file = tmp_path / "deploy.env"
    env_file.write_text(
        "".join(f"export {k}='{v}'\n" for k, v in STACK_ENV.items() if k != "SLUICE_LEDGER_TABLE"),
        encoding="utf-8",
    )
    clean = {k: v for k, v in os.environ.items() if not (k.startswith("SLUICE_") or k.startswith("PREFECT_"))}
    result = subprocess.run(
        ["./run", "deploy"], cwd=ROOT, env={**clean, "SLUICE_DEPLOY_ENV": str(env_file)},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.count("is not set") == 1 and "SLUICE_LEDGER_TABLE is not set" in result.stderr
    assert "Deploying" not in result.stdout  # prefect deploy never started


def test_the_shell_check_says_a_key_secret_needs_a_profile_with_a_key() -> None:
    """`./run deploy`'s check: the stack's PrefectApiKey with a keyless profile (a self-hosted server) is one line
    (prefect-aws's worker would fail every run with KeyError: 'PREFECT_API_KEY'; tests/deploy/test_prefect_api_key.py)."""
    env = {**STACK_ENV, "SLUICE_PREFECT_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:k"}
    no_key = run_check({**env, "PREFECT_API_KEY": ""}, "prefect.yaml")
    assert no_key.returncode == 1 and no_key.stderr.count("this Prefect profile has no API key") == 1
    assert run_check({**env, "PREFECT_API_KEY": "pnu_key"}, "prefect.yaml").returncode == 0


def test_an_env_file_with_windows_line_endings_is_refused_not_deployed_with_a_carriage_return() -> None:
    """The check stripped values while Prefect renders them raw: a CRLF deploy.env passed and deployed
    `us-east-1\\r`, a cluster ARN ending in `\\r`, and an "empty" optional secret ARN of `\\r`."""
    crlf = {name: value + "\r" for name, value in STACK_ENV.items()}
    found = problems((ROOT / "prefect.yaml").read_text(), crlf, api_key="")
    assert len(found) == len(STACK_ENV), found
    assert (
        "AWS_REGION='us-east-1\\r' has spaces around it or control characters in it (the file has Windows "
        in (" ".join(found))
    )
    assert problems((ROOT / "prefect.yaml").read_text(), {**STACK_ENV, "SLUICE_LOG_GROUP": " /x"}) == [
        "SLUICE_LOG_GROUP=' /x' has spaces around it or control characters in it (remove them)"
    ]


def test_run_deploy_says_a_missing_env_file_and_a_missing_prefect_api(tmp_path: Path) -> None:
    """`SLUICE_DEPLOY_ENV=/wrong/path ./run deploy` went on without it ("X is not set" for every variable); with no
    `prefect cloud login`, `prefect deploy` deployed to a temporary server of its own, gone when it ended."""
    clean = {k: v for k, v in os.environ.items() if not (k.startswith("SLUICE_") or k.startswith("PREFECT_"))}
    missing = subprocess.run(
        ["./run", "deploy"], cwd=ROOT, env={**clean, "SLUICE_DEPLOY_ENV": str(tmp_path / "nope.env")},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert (
        missing.returncode == 1
        and missing.stderr == f"error: SLUICE_DEPLOY_ENV={tmp_path / 'nope.env'}: no such file\n"
    )
    env_file = tmp_path / "deploy.env"
    env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in STACK_ENV.items()), encoding="utf-8")
    no_api = subprocess.run(
        ["./run", "deploy"], cwd=ROOT,
        env={**clean, "SLUICE_DEPLOY_ENV": str(env_file), "PREFECT_PROFILES_PATH": str(tmp_path / "none.toml")},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert no_api.returncode == 1, no_api.stdout[-2000:] + no_api.stderr[-2000:]
    assert "no Prefect API to deploy to: `.venv/bin/prefect cloud login` first" in no_api.stderr
    assert "Deploying" not in no_api.stdout
