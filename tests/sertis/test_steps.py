"""A Sertis gold build's tasks as Prefect ran them: reads and writes retried, transform and validate pure;
failed checks quarantined by a retried task before the build halts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_ingest, run_sertis
from tests.steps import (
    quarantine_fails_once,
    rejected_after_a_retried_quarantine,
    retried_as_configured,
    steps,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def _no_edited_silver_after(sluice_env: Path) -> Iterator[None]:
    """Silver edited by hand must not reach a later gold build (the demo's)."""
    yield
    with get_engine().begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS sertis CASCADE"))


def test_a_build_is_its_steps_in_order_io_retried_the_rest_pure(sluice_env: Path) -> None:
    report = run_sertis()
    assert report.status == "success", report.error
    runs = steps(report.flow_run_id, last="publish")
    assert [s.name for s in runs] == ["extract", "transform", "validate", "ensure", "load", "publish"]
    retried_as_configured(runs, io={"extract", "ensure", "load", "publish"})


def test_a_gold_table_that_breaks_its_model_is_quarantined_with_a_retry_then_rejected(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silver edited in the warehouse behind Sluice's back (a customer id that is not digits): the gold build
    fails at validate, its failed checks in quarantine. The quarantine zone cannot be written at first (a file
    stands where the ``customers`` folder goes) until the ledger shows the write failed; the retry writes it."""
    with get_engine().begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS sertis CASCADE"))
    landed = sluice_env / "landing" / "sertis" / "transactions" / "tiny.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text(
        "transactionId|custId|transactionDate|productSold|unitsSold\n"
        "20110111-0023586|0023586|2011-01-11|DETA800|176\n"
        "20110112-0023587|0023587|2011-01-12|SUPA101|193\n"
    )
    assert run_ingest(str(landed), dataset="transactions", mode="hard").status == "success"
    with get_engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE sertis.transactions SET customer_id = 'x23587' WHERE customer_id = '0023587'")
        )
    with quarantine_fails_once(sluice_env, "customers", "customers", "validate", monkeypatch):
        report = run_sertis()
    assert report.status == "failed" and report.state == "validate"
    assert "customers: 1 check failed, nothing loaded" in report.error and "x23587" in report.error
    assert report.rows_quarantined == 1 and report.quarantine_uri and report.quarantine_uri in report.error
    failures = pd.read_csv(report.quarantine_uri)
    assert (failures.loc[0, "table"], failures.loc[0, "column"]) == ("customers", "customer_id")
    runs = rejected_after_a_retried_quarantine(report.flow_run_id)
    assert [s.name for s in runs] == ["extract", "transform", "validate", "quarantine", "reject"]
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('sertis.customers')")).scalar() is None
