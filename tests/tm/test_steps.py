"""An ingest run's tasks as Prefect ran them (TM's files go through ``ingest-file``): every one an I/O task,
retried; the fused pass's quarantine write is retried with it, and the file still loads once."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_ingest
from tests.steps import quarantine_fails_once, steps
from tests.tm.test_ingest import BAD_ROWS, GOOD, land

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_an_ingest_is_extract_and_load_each_retried(sluice_env: Path) -> None:
    from sluice.settings import get_settings

    report = run_ingest(land(sluice_env, "dailycheckins.csv", GOOD), dataset="dailycheckins")
    assert report.status == "success", report.error
    runs = steps(report.flow_run_id, last="load")
    assert [s.name for s in runs] == ["extract", "load"]  # the table is ensured inside extract
    assert {s.retries for s in runs} == {get_settings().retries} != {0}


def test_a_quarantine_write_that_fails_once_is_retried_and_the_file_loads_once(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Soft mode, three bad rows: the quarantine zone cannot be written (a file stands where the dataset's folder
    goes) until the ledger shows the load failed; the retried pass loads the good rows once and quarantines the
    bad ones."""
    source = land(sluice_env, "dailycheckins.csv", GOOD + BAD_ROWS)
    with quarantine_fails_once(sluice_env, "dailycheckins", "dailycheckins", "load", monkeypatch):
        report = run_ingest(source, dataset="dailycheckins", mode="soft")
    assert report.status == "success", report.error
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (8, 5, 3)
    assert report.quarantine_uri and len(pd.read_csv(report.quarantine_uri)) == 3
    load = {s.name: s for s in steps(report.flow_run_id, last="load")}["load"]
    assert load.run_count == 2 and load.state == "COMPLETED"
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tm.daily_checkins")).scalar_one() == 5
        ledger = conn.execute(
            sa.text("SELECT state, status FROM sluice.run_ledger WHERE ingestion_id = :id ORDER BY seq"),
            {"id": report.run_id},
        ).all()
    assert [tuple(r) for r in ledger] == [
        ("extract", "success"),
        ("transform", "success"),
        ("validate", "success"),
        ("load", "success"),
    ]
