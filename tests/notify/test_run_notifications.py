"""Every run sends exactly one message (SNS and email) naming its outcome; the ledger agrees; outages are harmless."""

from __future__ import annotations

import json
import logging
import uuid
from email.message import EmailMessage as Message
from pathlib import Path
from typing import Any

import pytest

from sluice.cli.runner import run_ingest
from sluice.ledger import get_ledger
from tests.notify.conftest import Inbox, Topic

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOOD = (
    "user,timestamp,hours,project\n"
    "ned,2019-09-26 00:00:00 UTC,4.0,bizdev\n"
    "jaime,2018-12-20 00:00:00 UTC,1.5,project-00\n"
)
BAD_ROWS = "bran,2019-01-01 00:00:00 UTC,25,infra\n,2019-01-01 00:00:00 UTC,1,infra\njon,not a time,1,infra\n"


def land(folder: Path, text: str | None) -> str:
    path = folder / "landing" / f"dailycheckins-{uuid.uuid4().hex[:6]}.csv"
    if text is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return str(path)


def one_message(topic: Topic, inbox: Inbox) -> tuple[str, dict[str, Any], Message]:
    """Exactly one SNS message and one email: (SNS subject, SNS body as JSON, the email)."""
    published = topic.drain()
    emails = inbox.drain()
    assert len(published) == 1, [p.get("Subject") for p in published]
    assert len(emails) == 1, [m["Subject"] for m in emails]
    email_body = json.loads(emails[0].get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
    sns_body = json.loads(published[0]["Message"])
    assert email_body == sns_body
    assert emails[0]["Subject"] == published[0]["Subject"]
    return published[0]["Subject"], sns_body, emails[0]


def break_warehouse_for_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The load's COPY goes to a closed port: a real 'connection refused' while the ledger still works."""
    import sqlalchemy as sa

    import tasks.ingest
    from tests.conftest import free_port

    dead = sa.create_engine(f"postgresql+psycopg2://nobody@127.0.0.1:{free_port()}/none?connect_timeout=2")
    real = tasks.ingest.load_file
    monkeypatch.setattr(tasks.ingest, "load_file", lambda _engine, *a, **k: real(dead, *a, **k))


FAILURES = {
    "extract": (None, None),  # the landed file is missing
    "transform": ("this is not a check-in file;\n1;2;3\n", None),  # unparseable: no expected columns
    "validate": (GOOD + BAD_ROWS, "hard"),
    "load": (GOOD, None),
}


@pytest.mark.parametrize("state", list(FAILURES))
def test_failure_at_each_state_sends_one_message_and_ledger_says_fail(
    state: str,
    sluice_env: Path,
    ledger_backend: str,
    notify_blocks: tuple[Topic, Inbox],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text, mode = FAILURES[state]
    if state == "load":
        break_warehouse_for_load(monkeypatch)
    report = run_ingest(land(sluice_env, text), dataset="dailycheckins", mode=mode)
    assert (report.status, report.state) == ("failed", state)

    subject, body, _ = one_message(*notify_blocks)
    assert subject.startswith(f"[sluice] FAILED dailycheckins at {state}: ")
    assert body["status"] == "Ingestion Fail"
    assert body["latestState"] == state
    assert body["ingestedID"] == report.run_id
    assert body["error"] and body["error"] == report.error
    if state == "validate":
        assert subject.startswith("[sluice] FAILED dailycheckins at validate: 3 rows failed checks")

    history = get_ledger().history(uuid.UUID(report.run_id))
    assert [(e.state, e.status) for e in history][-1] == (state, "fail")


def test_success_and_soft_quarantine_messages(sluice_env: Path, notify_blocks: tuple[Topic, Inbox]) -> None:
    report = run_ingest(land(sluice_env, GOOD), dataset="dailycheckins")
    assert report.status == "success"
    subject, body, _ = one_message(*notify_blocks)
    assert subject == "[sluice] OK dailycheckins: 2 rows loaded"
    assert body["status"] == "Ingestion Success"
    assert (body["latestState"], body["rowsRead"], body["rowsLoaded"], body["rowsQuarantined"]) == (
        "load",
        2,
        2,
        0,
    )

    report = run_ingest(
        land(sluice_env, GOOD.replace("ned", "rob") + BAD_ROWS), dataset="dailycheckins", mode="soft"
    )
    assert (report.status, report.rows_loaded, report.rows_quarantined) == ("success", 2, 3)
    subject, body, _ = one_message(*notify_blocks)
    assert subject == "[sluice] OK dailycheckins: 2 rows loaded, 3 rows quarantined"
    assert body["rowsQuarantined"] == 3


def test_sns_and_smtp_outages_do_not_fail_the_run(
    sluice_env: Path,
    moto_endpoint: str,
    smtp_server: tuple[int, Inbox],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect_aws import AwsCredentials
    from prefect_email import EmailServerCredentials, SMTPType

    from sluice.adapters.notify import EmailNotification, SnsNotification
    from sluice.settings import reload_settings
    from tests.conftest import free_port

    suffix = uuid.uuid4().hex[:8]
    SnsNotification(
        topic_arn="arn:aws:sns:us-east-1:123456789012:no-such-topic",
        aws_credentials=AwsCredentials(region_name="us-east-1"),
    ).save(f"gone-{suffix}")
    EmailNotification(
        to="x@example.com",
        credentials=EmailServerCredentials(
            smtp_server="127.0.0.1", smtp_port=free_port(), smtp_type=SMTPType.INSECURE
        ),
    ).save(f"refused-{suffix}")
    monkeypatch.setenv(
        "SLUICE_NOTIFY_BLOCKS", f"sns-notification/gone-{suffix},email-notification/refused-{suffix}"
    )
    reload_settings()

    with caplog.at_level(logging.WARNING, logger="sluice.adapters.notify"):
        report = run_ingest(land(sluice_env, GOOD), dataset="dailycheckins")
    assert (report.status, report.rows_loaded) == ("success", 2)
    warnings = [r.getMessage() for r in caplog.records if r.name == "sluice.adapters.notify"]
    assert len(warnings) == 2, warnings
    assert all("not delivered" in w for w in warnings)
    history = get_ledger().history(uuid.UUID(report.run_id))
    assert [(e.state, e.status) for e in history][-1] == ("load", "success")
