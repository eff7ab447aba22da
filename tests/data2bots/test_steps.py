"""A Data2bots run's tasks as Prefect ran them: reads and writes retried, transform and validate pure; failed
checks quarantined by a retried task before the run halts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_data2bots
from sluice.ledger import get_ledger, summarize
from tests.data2bots.test_reference import drop_tiny_staging, tiny_staging
from tests.steps import (
    final_state,
    quarantine_fails_once,
    rejected_after_a_retried_quarantine,
    retried_as_configured,
    steps,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def _no_tiny_staging_after(sluice_env: Path) -> Iterator[None]:
    """Later tests (and the demo) ingest into the real staging tables."""
    yield
    drop_tiny_staging()


def test_a_run_is_its_steps_in_order_io_retried_the_rest_pure(sluice_env: Path) -> None:
    tiny_staging()
    report = run_data2bots()
    assert report.status == "success", report.error
    # "N loaded into analytics" counts the analytics tables' rows, not the reference tables this first run made
    # (it said 758 for 3 analytics rows: 730 days of if_common.dim_dates and 25 products)
    analytics = sum(rows for name, rows in report.loaded.items() if not name.startswith("dim_"))
    assert set(report.loaded) > {"agg_public_holiday", "agg_shipments", "best_performing_product"}, (
        report.loaded
    )
    assert report.rows_loaded == analytics < sum(report.loaded.values()), report.loaded
    [entry] = [summarize(r) for r in get_ledger().recent(5) if str(r[0].ingestion_id) == report.run_id]
    assert entry["rows_loaded"] == analytics
    runs = steps(report.flow_run_id, last="export")
    assert [s.name for s in runs] == ["extract", "transform", "validate", "ensure", "load", "export"]
    retried_as_configured(runs, io={"extract", "ensure", "load", "export"})


def test_a_day_that_already_ran_ends_completed_named_skipped(sluice_env: Path) -> None:
    """The Prefect UI tells a run that did nothing on purpose from one that built the tables (it said Completed
    for both, while the ledger said skipped)."""
    tiny_staging()
    built, again = run_data2bots(), run_data2bots()
    assert (built.status, again.status) == ("success", "skipped"), (built.error, again.error)
    rows = f"{built.rows_read:,} read, {built.rows_loaded:,} loaded into analytics, 0 quarantined"
    assert final_state(built.flow_run_id) == ("COMPLETED", "Completed", rows)  # what the UI shows of it
    kind, name, message = final_state(again.flow_run_id)
    assert (kind, name) == ("COMPLETED", "Skipped") and message == again.error and "already ran" in message
    # it read staging to decide: its report counts what its ledger entry does (the report said 0)
    [entry] = [summarize(r) for r in get_ledger().recent(5) if str(r[0].ingestion_id) == again.run_id]
    assert again.rows_read == entry["rows_read"] == built.rows_read > 0


def test_a_day_that_already_ran_is_known_without_reading_staging(sluice_env: Path) -> None:
    """Saying "already ran" read and grouped all of staging first (7.7 s on 30 million rows). It now asks for the
    latest order day and the day's run record only: with ``staging.reviews`` out of the way, the skip is the same
    (it failed with "no reviews in staging yet"), and a run that must build says what is missing."""
    tiny_staging()
    built = run_data2bots()
    assert built.status == "success", built.error
    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE staging.reviews RENAME TO reviews_away"))
    try:
        again = run_data2bots()
        assert again.status == "skipped" and "already ran" in again.error, again.error
        assert again.rows_read == built.rows_read
        forced = run_data2bots(force=True)
        assert forced.status == "failed" and "no reviews in staging yet" in forced.error, forced.error
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE staging.reviews_away RENAME TO reviews"))


def test_analytics_that_break_their_model_are_quarantined_with_a_retry_then_rejected(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reviews of a product -2 put into staging behind Sluice's back make it the best performing product: the
    run fails at validate, its failed checks in quarantine, nothing loaded. The quarantine zone cannot be written
    at first (a file stands where the ``analytics`` folder goes) until the ledger shows the write failed."""
    tiny_staging()
    with get_engine().begin() as conn:
        conn.execute(sa.text("INSERT INTO staging.reviews VALUES (5, -2), (5, -2)"))
    with quarantine_fails_once(sluice_env, "analytics", "analytics", "validate", monkeypatch):
        report = run_data2bots()
    assert report.status == "failed" and report.state == "validate", report.error
    assert re.search(r"analytics: [\d,]+ checks? failed, nothing loaded", report.error)
    assert report.rows_quarantined and report.quarantine_uri and report.quarantine_uri in report.error
    failures = pd.read_csv(report.quarantine_uri)
    assert "best_performing_product" in set(failures["table"])
    assert "product_id" in set(failures["column"])
    runs = rejected_after_a_retried_quarantine(report.flow_run_id)
    assert [s.name for s in runs] == ["extract", "transform", "validate", "quarantine", "reject"]
    with get_engine().connect() as conn:
        assert (
            conn.execute(sa.text("SELECT to_regclass('analytics.best_performing_product')")).scalar() is None
        )
