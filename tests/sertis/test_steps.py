"""A Sertis gold build's tasks as Prefect ran them: reads and writes retried, transform and validate pure;
failed checks quarantined by a retried task before the build halts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice.cli.runner import run_ingest, run_sertis
from sluice.warehouse import get_engine
from tests.steps import healed_after_first_failure, steps

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_build_is_its_steps_in_order_io_retried_the_rest_pure(sluice_env: Path) -> None:
    from sluice.settings import get_settings

    report = run_sertis()
    assert report.status == "success", report.error
    runs = steps(report.flow_run_id, last="load")
    assert [s.name for s in runs] == ["extract", "transform", "validate", "load"]
    retries = get_settings().retries
    assert retries > 0
    assert {s.name: s.retries for s in runs} == {
        "extract": retries,
        "transform": 0,
        "validate": 0,
        "load": retries,
    }


def test_a_gold_table_that_breaks_its_model_is_quarantined_with_a_retry_then_rejected(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silver edited in the warehouse behind Sluice's back (a customer id that is not digits): the gold build
    fails at validate, its failed checks in quarantine. The quarantine zone cannot be written at first (a file
    stands where the ``customers`` folder goes) until the ledger shows the write failed; the retry writes it."""
    from sluice.settings import reload_settings

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
    monkeypatch.setenv("SLUICE_RETRY_DELAY_SECONDS", "1")
    reload_settings()
    blocker = sluice_env / "quarantine" / "customers"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    with healed_after_first_failure(get_engine(), "customers", "validate", blocker.unlink) as healed:
        report = run_sertis()
    assert healed.is_set(), "the quarantine write never failed: the fault did not take"
    assert report.status == "failed" and report.state == "validate"
    assert "customers: 1 checks failed, nothing loaded" in report.error and "x23587" in report.error
    assert report.rows_quarantined == 1 and report.quarantine_uri and report.quarantine_uri in report.error
    failures = pd.read_csv(report.quarantine_uri)
    assert (failures.loc[0, "table"], failures.loc[0, "column"]) == ("customers", "customer_id")
    runs = steps(report.flow_run_id, last="reject")
    assert [(s.name, s.run_count, s.state) for s in runs] == [
        ("extract", 1, "COMPLETED"),
        ("transform", 1, "COMPLETED"),
        ("validate", 1, "COMPLETED"),
        ("quarantine", 2, "COMPLETED"),
        ("reject", 1, "FAILED"),
    ]
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('sertis.customers')")).scalar() is None
