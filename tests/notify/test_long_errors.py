"""A failure whose reason is huge (a 2 MB field, a 20,000-column header) still alerts and is still ledgered:
SNS takes at most 256 KB, a DynamoDB item at most 400 KB, SMTP a line of at most 998 characters, so the reason is
cut, says so, and points to quarantine, and the email's body is encoded."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from sluice.cli.runner import run_ingest
from sluice.ledger import get_ledger
from tests.notify.conftest import Inbox, Topic
from tests.notify.test_run_notifications import one_message

pytestmark = pytest.mark.usefixtures("prefect_harness")

HEADER = "user,timestamp,hours,project\n"
HUGE = {
    # A 2 MB user name: one row fails its length check in hard mode (validate).
    "validate": (HEADER + "x" * 2_000_000 + ",2019-09-26 00:00:00 UTC,4.0,bizdev\n", "hard"),
    # 20,000 wrong column names: the file cannot be read (transform).
    "transform": (",".join(f"col{i}_" + "y" * 50 for i in range(20_000)) + "\n1,2\n", None),
}


@pytest.mark.parametrize("state", list(HUGE))
def test_a_huge_reason_is_cut_and_still_alerts_and_ledgers(
    state: str, sluice_env: Path, ledger_backend: str, notify_blocks: tuple[Topic, Inbox]
) -> None:
    text, mode = HUGE[state]
    path = sluice_env / "landing" / f"dailycheckins-été-{uuid.uuid4().hex[:6]}.csv"  # non-ASCII too
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")

    report = run_ingest(str(path), dataset="dailycheckins", mode=mode)
    assert (report.status, report.state) == ("failed", state)
    assert report.error and len(report.error) <= 2_000
    assert report.quarantine_uri  # where the whole story is
    if state == "validate":
        assert report.error.endswith(f"all failures in {report.quarantine_uri}")

    subject, body, _ = one_message(*notify_blocks)  # SNS refused a body over 256 KB: no message at all
    assert subject.startswith(f"[sluice] FAILED dailycheckins at {state}: ")
    assert len(json.dumps(body)) < 16_000
    assert (body["error"], body["quarantineUri"]) == (report.error, report.quarantine_uri)
    if state == "validate":
        assert "row 1, column user: str_length" in body["error"]
        assert "2,000,000 characters" in body["error"]
    else:
        assert "missing required column(s) user, timestamp, hours, project" in body["error"]
        assert "19,980 more" in body["error"]

    history = get_ledger().history(uuid.UUID(report.run_id))  # DynamoDB refused an item over 400 KB
    assert [(e.state, e.status) for e in history][-1] == (state, "fail")
    assert all(len(e.error or "") <= 2_000 for e in history)
