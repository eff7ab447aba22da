"""A run that exceeds its flow's timeout: the ledger and the one alert say it timed out, at the state it reached (was:
the ledger's states 'fail: CancelledError', the report 'Scope timed out' at state None)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from sluice.ledger import get_ledger
from tests.notify.conftest import Inbox, Topic
from tests.notify.test_run_notifications import one_message

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_run_that_times_out_says_so_in_ledger_and_alert(
    sluice_env: Path, notify_blocks: tuple[Topic, Inbox]
) -> None:
    from flows.ingest import ingest_file
    from sluice.report import report_of

    landed = sluice_env / "landing" / "dailycheckins-big.csv"
    landed.parent.mkdir(parents=True, exist_ok=True)
    with landed.open("w", encoding="utf-8") as f:  # takes longer to load than the timeout below
        f.write("user,timestamp,hours,project\n")
        f.writelines(f"u{i % 5000},2019-09-26 00:00:00 UTC,{i % 20}.5,p{i % 7}\n" for i in range(1_000_000))

    state = ingest_file.with_options(timeout_seconds=2)(
        source=str(landed), dataset="dailycheckins", return_state=True
    )
    assert state.name == "TimedOut"
    report = report_of(state, "dailycheckins", str(landed))

    assert report.status == "failed" and report.state in ("extract", "load"), report
    assert report.error == "timed out: Flow run exceeded timeout of 2.0 second(s)"
    assert report.run_id and report.source == str(landed)
    subject, body, _ = one_message(*notify_blocks)
    assert subject == f"[sluice] FAILED dailycheckins at {report.state}: {report.error}"
    assert (body["status"], body["latestState"], body["error"]) == (
        "Ingestion Fail",
        report.state,
        report.error,
    )

    history = get_ledger().history(uuid.UUID(report.run_id))
    assert history[-1].state == report.state
    assert all(e.status in ("success", "fail") for e in history), [(e.state, e.status) for e in history]
    assert all(e.error == report.error for e in history if e.status == "fail")
    assert "CancelledError" not in str([e.error for e in history])
