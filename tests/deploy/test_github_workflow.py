"""The GitHub Actions workflow for users' repositories (actionlint is not installable here: a YAML check)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "sluice.yml"


def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(job: str) -> list[dict[str, Any]]:
    return workflow()["jobs"][job]["steps"]


def test_tests_run_on_push_and_pull_request() -> None:
    triggers = workflow()[True]  # YAML 1.1 reads the key `on` as a boolean
    assert set(triggers) == {"push", "pull_request"}
    assert any("./run test" in s.get("run", "") for s in steps("test"))


def test_deploy_on_main_only_after_tests_with_oidc_and_no_stored_aws_keys() -> None:
    job = workflow()["jobs"]["deploy"]
    assert job["needs"] == "test"
    assert "refs/heads/main" in job["if"] and "push" in job["if"]
    assert job["permissions"]["id-token"] == "write"
    aws = next(
        s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials")
    )
    assert "role-to-assume" in aws["with"]
    text = WORKFLOW.read_text()
    assert "AWS_ACCESS_KEY_ID" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    runs = [s.get("run", "") for s in job["steps"]]
    # The locked deploy tooling and the check come with ./run deploy; the stack's outputs with sluice aws setup.
    assert any("sluice aws setup" in r for r in runs) and any(r.strip() == "./run deploy" for r in runs)
    assert not any("pip install" in r for r in runs)
    setup = next(i for i, r in enumerate(runs) if "sluice aws setup" in r)
    assert setup < next(i for i, r in enumerate(runs) if r.strip() == "./run deploy")
    assert workflow()["permissions"] == {"contents": "read"}  # least privilege by default


def test_actionlint_when_available() -> None:
    binary = shutil.which("actionlint")
    if binary is None:
        pytest.skip("actionlint is not installable here; the structure is checked above")
    result = subprocess.run([binary, str(WORKFLOW)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
