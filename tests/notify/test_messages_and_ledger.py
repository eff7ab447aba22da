"""Message building (pure), the DynamoDB ledger's item format on moto, the crash automation, the CLI."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import yaml

from sluice.adapters.notify import build_message, build_subject
from sluice.ledger import LedgerEntry, summarize
from sluice.report import IngestReport
from tests.notify.conftest import Topic


def report(**kw: object) -> IngestReport:
    base: dict = {
        "run_id": "r1",
        "dataset": "dailycheckins",
        "source": "s3://b/k.csv",
        "status": "success",
        "state": "load",
        "rows_read": 10,
        "rows_loaded": 10,
        "table": "tm.daily_checkins",
    }
    return IngestReport(**{**base, **kw})


def test_subjects_name_outcome_state_reason_and_quarantine() -> None:
    failed = report(status="failed", state="validate", rows_loaded=0, error="6 rows failed checks")
    assert build_subject(failed) == "[sluice] FAILED dailycheckins at validate: 6 rows failed checks"
    missing = report(status="failed", state="extract", error="s3://b/k.csv: file not found")
    assert build_subject(missing) == "[sluice] FAILED dailycheckins at extract: file not found"
    assert build_subject(report()) == "[sluice] OK dailycheckins: 10 rows loaded"
    assert build_subject(report(rows_loaded=7, rows_quarantined=3)) == (
        "[sluice] OK dailycheckins: 7 rows loaded, 3 rows quarantined"
    )
    long = build_subject(failed.model_copy(update={"error": "x" * 500 + "\nsecond line"}))
    assert len(long) == 100 and long.endswith("...")


def test_message_is_compatible_with_the_replaced_systems() -> None:
    failed = build_message(report(status="failed", state="load", error="refused"), url="http://ui/runs/1")
    assert {
        k: failed[k] for k in ("status", "latestState", "ingestedID", "ingestedTable", "error", "url")
    } == {
        "status": "Ingestion Fail",
        "latestState": "load",
        "ingestedID": "r1",
        "ingestedTable": "tm.daily_checkins",
        "error": "refused",
        "url": "http://ui/runs/1",
    }
    assert build_message(report())["status"] == "Ingestion Success"


def test_dynamodb_ledger_keeps_one_item_per_run_with_state_history(moto_endpoint: str) -> None:
    from sluice.adapters.ledger_dynamodb import DynamoDBLedger

    table = f"ledger-{uuid.uuid4().hex[:8]}"
    ledger = DynamoDBLedger(table)
    DynamoDBLedger(table)  # a second process finds the table already there
    run, older = uuid.uuid4(), uuid.uuid4()
    t0 = datetime.now(UTC)
    ledger.record(
        LedgerEntry(
            older, "extract", "dailycheckins", "a.csv", status="success", started_at=t0 - timedelta(hours=1)
        )
    )
    for state, status, extra in [
        ("extract", "running", {}),
        ("extract", "success", {}),
        ("transform", "success", {"rows_read": 9}),
        ("validate", "fail", {"rows_read": 9, "rows_quarantined": 6, "error": "6 rows failed checks"}),
    ]:
        ledger.record(
            LedgerEntry(run, state, "dailycheckins", "b.csv", status=status, started_at=t0, **extra)
        )

    item = boto3.client("dynamodb").get_item(
        TableName=table, Key={"ingestedID": {"S": str(run)}, "ingestedTable": {"S": "dailycheckins"}}
    )["Item"]
    assert (item["state"]["S"], item["status"]["S"], item["rowsQuarantined"]["N"]) == (
        "validate",
        "fail",
        "6",
    )
    assert [(h["M"]["state"]["S"], h["M"]["status"]["S"]) for h in item["stateHistory"]["L"]] == [
        ("extract", "running"),
        ("extract", "success"),
        ("transform", "success"),
        ("validate", "fail"),
    ]
    history = ledger.history(run)
    assert [(e.state, e.status) for e in history] == [
        ("extract", "success"),
        ("transform", "success"),
        ("validate", "fail"),
    ]
    summary = summarize(history)
    assert (summary["status"], summary["state"], summary["error"]) == (
        "failed",
        "validate",
        "6 rows failed checks",
    )
    assert [r[0].ingestion_id for r in ledger.recent()] == [run, older]
    assert len(ledger.recent(limit=1)) == 1


def test_crash_automation_is_a_valid_prefect_automation() -> None:
    from prefect.events.schemas.automations import AutomationCore

    path = Path(__file__).resolve().parents[2] / "deployments" / "automations" / "crashed.yaml"
    data = yaml.safe_load(path.read_text())
    data["actions"][0]["block_document_id"] = str(uuid.uuid4())
    automation = AutomationCore.model_validate(data)
    assert automation.trigger.expect == {"prefect.flow-run.Crashed"}


@pytest.mark.usefixtures("prefect_harness")
def test_cli_adds_blocks_and_sends_a_test(sns_topic, smtp_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from sluice.cli import app

    port, inbox = smtp_server
    inbox.drain()
    runner = CliRunner()
    name = f"ops-{uuid.uuid4().hex[:6]}"
    result = runner.invoke(app, ["notify", "add-sns", name, "--topic-arn", sns_topic.arn])
    assert result.exit_code == 0, result.output
    # Whole lines whatever the width (piped: 80 columns), so that the export line can be copied as it is.
    assert f"saved sns-notification/{name} → {sns_topic.arn}\n" in result.stdout, result.stdout
    assert (
        f"add it to runs: export SLUICE_NOTIFY_BLOCKS=sns-notification/{name} (comma-separate several)\n"
        in result.stdout
    ), result.stdout
    result = runner.invoke(app, ["notify", "test", f"sns-notification/{name}"])
    assert result.exit_code == 0, result.output
    [message] = sns_topic.drain()
    assert message["Subject"] == "[sluice] test notification"
    assert json.loads(message["Message"])["status"] == "Test"

    monkeypatch.setenv("SMTP_PW", "secret")
    result = runner.invoke(
        app,
        [
            "notify",
            "add-email",
            "team",
            "--to",
            "t@example.com",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            str(port),
            "--plain",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["notify", "test", "team"])
    assert result.exit_code == 0, result.output
    [email] = inbox.drain()
    assert email["Subject"] == "[sluice] test notification" and email["To"] == "t@example.com"

    result = runner.invoke(app, ["notify", "test", "no-such-block"])
    assert result.exit_code == 1 and "no notification block" in result.output
    result = runner.invoke(app, ["notify", "add-sns", "x", "--topic-arn", "not-an-arn"])
    assert result.exit_code == 2


def test_subjects_of_runs_stopped_before_a_state_or_from_outside() -> None:
    early = report(status="failed", state=None, rows_loaded=0, error="SLUICE_LEDGER_TABLE: no such table")
    assert (
        build_subject(early) == "[sluice] FAILED dailycheckins at start: SLUICE_LEDGER_TABLE: no such table"
    )
    cancelled = report(status="cancelled", state="load", rows_loaded=0, error="cancelled: by a user")
    assert build_subject(cancelled) == "[sluice] CANCELLED dailycheckins at load: cancelled: by a user"
    assert (build_message(cancelled)["status"], build_message(cancelled)["runStatus"]) == (
        "Ingestion Fail",
        "cancelled",
    )


def test_an_sns_block_publishes_in_its_topics_region_and_says_where_credentials_come_from(
    sns_topic: Topic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``add-sns --region eu-west-2`` with a us-east-1 topic was saved and then never delivered ("NotFound ...
    Endpoint does not exist"); with no credentials at all the reason was "Unable to locate credentials"."""
    from typer.testing import CliRunner

    from sluice.cli import app

    runner = CliRunner()
    name = f"elsewhere-{uuid.uuid4().hex[:6]}"
    added = runner.invoke(
        app, ["notify", "add-sns", name, "--topic-arn", sns_topic.arn, "--region", "eu-west-2"]
    )
    assert added.exit_code == 0, added.output
    sent = runner.invoke(app, ["notify", "test", f"sns-notification/{name}"])
    assert sent.exit_code == 0, sent.output
    assert [json.loads(m["Message"])["status"] for m in sns_topic.drain()] == ["Test"]

    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    unsigned = runner.invoke(app, ["notify", "test", f"sns-notification/{name}"])
    assert unsigned.exit_code == 1
    assert (
        f"no AWS credentials to publish to {sns_topic.arn} (the block's AwsCredentials, else AWS_PROFILE"
        in (" ".join(unsigned.stderr.split()))
    ), unsigned.output
