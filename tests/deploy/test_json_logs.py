"""JSON logs for CloudWatch: a real run with SLUICE_JSON_LOGS on writes one JSON object per log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_run_logs_one_json_object_per_line_with_run_dataset_source_state(sluice_env: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    source = sluice_env / "landing" / "dailycheckins.csv"
    source.parent.mkdir(parents=True)
    source.write_text(
        "user,timestamp,hours,project\nned,2018-12-20 00:00:00 UTC,1.5,bizdev\n", encoding="utf-8"
    )
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "SLUICE_JSON_LOGS": "true"}
    env.pop("PREFECT_LOGGING_SETTINGS_PATH", None)
    result = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "ingest", str(source), "--dataset", "dailycheckins", "--json", "-v"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no log lines"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    in_run = [r for r in records if r.get("flow_run_id")]
    assert in_run, records
    report = json.loads(result.stdout.strip().splitlines()[-1])
    states = [r for r in in_run if r.get("logger") == "sluice.ledger"]
    assert {r["state"] for r in states} >= {"extract", "transform", "validate", "load"}
    assert all(r["dataset"] == "dailycheckins" and r["source"] == str(source) for r in states)
    assert all(r["flow_run_id"] == report["run_id"] for r in states)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_a_warning_of_a_quiet_command_is_a_json_line_too(sluice_env: Path) -> None:
    """Without ``-v`` the CLI says Sluice's own warnings itself (runtime._StderrWarning): with JSON logs on, as one
    JSON object like every other log line (the API container's warnings go to CloudWatch this way). With no
    ``dataset`` parameter, as an S3 event's run has none, the warning names the dataset the file's name resolved
    (it had no ``dataset``, so ``filter dataset = "transactions"`` missed it) and the run's name."""
    from prefect.settings import PREFECT_API_URL

    source = sluice_env / "landing" / "transactions-2011-01.csv"
    source.parent.mkdir(parents=True)
    source.write_text(
        "transactionId|custId|transactionDate|productSold|unitsSold\n5|0000001|2011-01-01|A|3\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "SLUICE_JSON_LOGS": "true"}
    env["SLUICE_GLUE_DATABASE"] = "sluice_sertis"  # while the staging zone is a local folder: one warning
    env.pop("PREFECT_LOGGING_SETTINGS_PATH", None)
    result = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "ingest", str(source), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    warned = [r for r in records if r["level"] == "WARNING"]
    assert [r["message"] for r in warned] == ["Glue catalog skipped: the staging zone is not on S3"], records
    assert warned[0]["logger"] == "sluice.sertis"
    assert warned[0]["flow_run_id"] == json.loads(result.stdout)["run_id"]
    assert (warned[0]["dataset"], warned[0]["source"]) == ("transactions", str(source)), warned
    assert warned[0]["flow_run_name"] == "transactions · transactions-2011-01.csv", warned
