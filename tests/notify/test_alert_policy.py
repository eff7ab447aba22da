"""The alert policy: failures always; successes only when the run changed something; idle and skipped runs silent
by default. ``SLUICE_NOTIFY_ON`` (failure | change | always) sets it, a block's ``@<policy>`` suffix overrides it.
Each flow (ingest-file, totesys, analytics, customers) runs for real with an SNS block and an email block."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sluice.adapters.notify import changed, split_ref, wanted
from sluice.report import IngestReport
from tests.conftest import drop_schemas, reset_totesys, shared_file
from tests.notify.conftest import Inbox, Topic

GOOD = "user,timestamp,hours,project\nned,2019-09-26 00:00:00 UTC,4.0,bizdev\n"


def report(status: str, **kw: object) -> IngestReport:
    return IngestReport(run_id="r", dataset="d", source="s", status=status, state="load", **kw)


def test_policy_matrix() -> None:
    runs = {
        "failed": report("failed", error="boom"),
        "loaded": report("success", rows_loaded=3),
        "quarantined only": report("success", rows_quarantined=2),
        "created reference tables": report("success", notes=["if_common.dim_dates created"]),
        "idle success": report("success"),
        "skipped": report("skipped", error="already loaded"),
    }
    sent = {
        policy: {k for k, r in runs.items() if wanted(r, policy)}
        for policy in ("failure", "change", "always")
    }
    assert sent["failure"] == {"failed"}
    assert sent["change"] == {"failed", "loaded", "quarantined only", "created reference tables"}
    assert sent["always"] == set(runs)
    assert not changed(runs["skipped"]) and not changed(runs["idle success"])


def test_block_policy_suffix() -> None:
    assert split_ref("sns-notification/ops") == ("sns-notification/ops", None)
    assert split_ref("email-notification/team@always") == ("email-notification/team", "always")
    with pytest.raises(ValueError, match="one of failure, change, always"):
        split_ref("sns-notification/ops@sometimes")


def subjects(topic: Topic, inbox: Inbox) -> tuple[list[str], list[str]]:
    """(SNS subjects, email subjects) received since the last call."""
    return [m["Subject"] for m in topic.drain()], [str(m["Subject"]) for m in inbox.drain()]


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    from sluice.settings import reload_settings

    for key, value in values.items():
        monkeypatch.setenv(key, value)
    reload_settings()


def override_email(monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    """Give the email block of ``notify_blocks`` its own policy suffix."""
    import os

    refs = [r.strip() for r in os.environ["SLUICE_NOTIFY_BLOCKS"].split(",")]
    refs = [f"{r}@{policy}" if r.startswith("email-notification/") else r for r in refs]
    set_env(monkeypatch, SLUICE_NOTIFY_BLOCKS=",".join(refs))


@pytest.mark.usefixtures("prefect_harness")
def test_ingest_file_alerts_on_load_not_on_the_skipped_repeat(
    sluice_env: Path, notify_blocks: tuple[Topic, Inbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.cli.runner import run_ingest

    path = sluice_env / "landing" / f"dailycheckins-{uuid.uuid4().hex[:6]}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(GOOD, encoding="utf-8")
    assert run_ingest(str(path), dataset="dailycheckins").status == "success"
    assert subjects(*notify_blocks) == (["[sluice] OK dailycheckins: 1 row loaded"],) * 2

    assert run_ingest(str(path), dataset="dailycheckins").status == "skipped"
    assert subjects(*notify_blocks) == ([], [])  # idle: silent by default

    set_env(monkeypatch, SLUICE_NOTIFY_ON="always")
    assert run_ingest(str(path), dataset="dailycheckins").status == "skipped"
    sns, mail = subjects(*notify_blocks)
    assert len(sns) == len(mail) == 1 and sns[0].startswith("[sluice] SKIPPED dailycheckins")

    set_env(monkeypatch, SLUICE_NOTIFY_ON="failure")
    other = path.with_name(f"dailycheckins-{uuid.uuid4().hex[:6]}.csv")
    other.write_text(GOOD.replace("ned", "rob"), encoding="utf-8")
    assert run_ingest(str(other), dataset="dailycheckins").status == "success"
    assert subjects(*notify_blocks) == ([], [])
    missing = str(path.with_name("gone.csv"))
    assert run_ingest(missing, dataset="dailycheckins").status == "failed"
    sns, mail = subjects(*notify_blocks)
    assert len(sns) == len(mail) == 1 and sns[0].startswith("[sluice] FAILED dailycheckins at extract")


@pytest.fixture
def totesys_source(
    sluice_env: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[sa.Engine]:
    """An empty OLTP and a warehouse without Totesys' tables, before the test and after it."""
    from sluice.adapters.totesys_source import source_engine, source_url
    from sluice.settings import reload_settings

    monkeypatch.delenv("SLUICE_TOTESYS_SOURCE_URL", raising=False)
    settings = reload_settings()
    reset_totesys(settings)
    source = source_engine(source_url(settings))
    try:
        yield source
    finally:
        source.dispose()
        reset_totesys(settings)


def test_totesys_idle_cycle_is_silent_unless_a_block_asks(
    totesys_source: sa.Engine, notify_blocks: tuple[Topic, Inbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.cli.runner import run_totesys
    from sluice.fakes.totesys import generate, seed

    seed(totesys_source, generate(15, random.Random(2)))
    totesys_source.dispose()
    first = run_totesys()
    assert first.status == "success" and first.rows_loaded > 0
    sns, mail = subjects(*notify_blocks)
    assert len(sns) == len(mail) == 1 and sns[0].startswith("[sluice] OK totesys")

    idle = run_totesys()
    assert idle.status == "skipped"
    assert subjects(*notify_blocks) == ([], [])  # today: "SKIPPED totesys: already loaded", 72 times a day

    # Ops want failures only; the team's mailbox wants every cycle.
    set_env(monkeypatch, SLUICE_NOTIFY_ON="failure")
    override_email(monkeypatch, "always")
    assert run_totesys().status == "skipped"
    sns, mail = subjects(*notify_blocks)
    assert sns == [] and len(mail) == 1 and mail[0].startswith("[sluice] SKIPPED totesys")


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.acceptance
def test_analytics_alerts_when_tables_are_rebuilt_not_when_the_day_already_ran(
    sluice_env: Path,
    notify_blocks: tuple[Topic, Inbox],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from sluice.cli.runner import run_data2bots, run_ingest

    drop_schemas("staging", "analytics", "if_common")
    request.addfinalizer(lambda: drop_schemas("staging", "analytics", "if_common"))
    folder = shared_file("data2bots", "orders.csv").parent
    for name in ("orders", "reviews", "shipment_deliveries"):
        assert run_ingest(str(folder / f"{name}.csv"), mode="hard").status == "success"
    subjects(*notify_blocks)

    assert run_data2bots().status == "success"
    sns, mail = subjects(*notify_blocks)
    assert len(sns) == len(mail) == 1 and sns[0].startswith("[sluice] OK analytics")

    assert run_data2bots().status == "skipped"  # that day already ran
    assert subjects(*notify_blocks) == ([], [])

    set_env(monkeypatch, SLUICE_NOTIFY_ON="failure")
    assert run_data2bots(force=True).status == "success"
    assert subjects(*notify_blocks) == ([], [])


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.acceptance
def test_customers_alerts_on_rebuild_and_follows_the_setting(
    sluice_env: Path,
    notify_blocks: tuple[Topic, Inbox],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from sluice.cli.runner import run_ingest, run_sertis

    drop_schemas("sertis")
    request.addfinalizer(lambda: drop_schemas("sertis"))
    empty = run_sertis()  # no silver yet: nothing rebuilt from nothing
    assert empty.status == "success" and empty.rows_loaded == 0
    assert subjects(*notify_blocks) == ([], [])

    sample = shared_file("sertis", "transaction_sample.csv")
    landed = sluice_env / "landing" / "sertis" / "transactions" / sample.name
    landed.parent.mkdir(parents=True)
    landed.write_bytes(sample.read_bytes())
    assert run_ingest(str(landed), mode="hard").status == "success"
    subjects(*notify_blocks)

    gold = run_sertis()
    assert gold.status == "success" and gold.rows_loaded > 0
    sns, mail = subjects(*notify_blocks)
    assert len(sns) == len(mail) == 1 and sns[0].startswith("[sluice] OK customers")

    set_env(monkeypatch, SLUICE_NOTIFY_ON="failure")
    assert run_sertis().status == "success"
    assert subjects(*notify_blocks) == ([], [])


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_that_creates_reference_tables_says_so_in_its_alert(
    sluice_env: Path, notify_blocks: tuple[Topic, Inbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from sluice.cli.runner import run_data2bots
    from tests.data2bots.test_reference import drop_tiny_staging, tiny_staging

    set_env(monkeypatch, SLUICE_NOTIFY_ON="change")
    tiny_staging()
    try:
        report = run_data2bots()
    finally:
        drop_tiny_staging()
    assert report.status == "success" and len(report.notes) == 2
    topic, inbox = notify_blocks
    published, emails = topic.drain(), inbox.drain()
    assert len(published) == len(emails) == 1
    assert json.loads(published[0]["Message"])["notes"] == report.notes
    assert published[0]["Subject"].startswith(
        # the analytics tables' 3 rows, not with the reference tables the run created (it said 393)
        "[sluice] OK analytics: 3 rows loaded; note: if_common.dim_dates created (it was absent)"
    )
    assert "created (it was absent)" in emails[0].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
