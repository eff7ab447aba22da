"""A Totesys cycle's tasks as Prefect ran them: one step or one side effect each, I/O retried, the rest pure."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.steps import (
    quarantine_fails_once,
    rejected_after_a_retried_quarantine,
    retried_as_configured,
    steps,
)
from tests.totesys.conftest import Env
from tests.totesys.test_pipeline import cycle

#: A cycle's tasks up to its checks, in order.
BUILT = ["ensure", "extract", "read_lookups", "transform", "write_processed", "validate"]

#: The tasks that touch the outside (databases, zones): retried with the configured policy.
IO = {"ensure", "extract", "read_lookups", "write_processed", "quarantine", "load"}


def bad_batch(env: Env) -> None:
    """A good cycle loaded, then a currency code the star schema's model refuses ('G1P')."""
    from sluice.fakes.totesys import generate, seed

    seed(env.source, generate(30, random.Random(3)))
    assert cycle().status == "success"
    with env.source.begin() as conn:
        conn.execute(sa.text("INSERT INTO currency (currency_code) VALUES ('g1p')"))


def test_a_cycle_is_its_steps_in_order_each_io_retried(totesys_env: Env) -> None:
    from sluice.fakes.totesys import generate, seed

    seed(totesys_env.source, generate(20, random.Random(1)))
    report = cycle()
    assert report.status == "success", report.error
    runs = steps(report.flow_run_id, last="load")
    assert [s.name for s in runs] == [*BUILT, "load"]
    retried_as_configured(runs, IO)


def test_a_bad_batch_is_validated_then_quarantined_then_rejected(totesys_env: Env) -> None:
    bad_batch(totesys_env)
    report = cycle()
    assert report.status == "failed" and report.state == "validate"
    runs = steps(report.flow_run_id, last="reject")
    assert [s.name for s in runs] == [*BUILT, "quarantine", "reject"]
    assert [s.state for s in runs][-3:] == ["COMPLETED", "COMPLETED", "FAILED"]
    retried_as_configured(runs, IO)


def test_a_quarantine_write_that_fails_once_is_retried(
    totesys_env: Env, sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quarantine zone cannot be written (a file stands where its ``totesys`` folder goes) until the ledger
    shows the first attempt failed; the retry writes the failures, and the cycle fails for its bad rows, not
    for the zone."""
    bad_batch(totesys_env)
    with quarantine_fails_once(sluice_env, "totesys", "totesys", "validate", monkeypatch):
        report = cycle()
    assert report.status == "failed" and report.state == "validate"
    assert re.search(r"[\d,]+ checks? failed", report.error) and "currency_code" in report.error
    assert report.quarantine_uri and Path(report.quarantine_uri).is_file()
    assert pd.read_csv(report.quarantine_uri).loc[0, "column"] == "currency_code"
    rejected_after_a_retried_quarantine(report.flow_run_id)
    with totesys_env.warehouse.connect() as conn:
        ledger = conn.execute(
            sa.text(
                "SELECT state, status, rows_quarantined, quarantine_uri FROM sluice.run_ledger "
                "WHERE ingestion_id = :id ORDER BY seq"
            ),
            {"id": report.run_id},
        ).all()
    assert [tuple(r) for r in ledger] == [
        ("extract", "success", None, None),
        ("transform", "success", None, None),
        ("validate", "fail", report.rows_quarantined, report.quarantine_uri),
    ]
