"""A Totesys cycle of `sluice totesys` cancelled from Prefect (the UI's Cancel): it stops at its next stage or chunk,
before its load commits, or, cancelled after that, completes and says so with its own report. It used to be checked
only on its way into a state: cancelled during its load, it loaded on for 21 s, committed, and said "too late"."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from tests.totesys.conftest import Env
from tests.totesys.test_pipeline import count, cycle, marks


def cancel_at(stage: str) -> Callable[[str], None]:
    """A listener of the cycle's stages that cancels the run as the UI does when ``stage`` begins, and gives the
    run's watcher time to read it before the run goes on."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Cancelling

    asked: list[str] = []

    def listener(line: str) -> None:
        if line.startswith(stage) and not asked:
            asked.append(flow_run.get_id())
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(asked[0], Cancelling(message="cancelled by a test"), force=True)
            time.sleep(0.5)

    return listener


@pytest.fixture
def seeded(totesys_env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    from sluice.fakes.totesys import generate, seed
    from tasks.toolkit import Cancellation

    monkeypatch.setattr(Cancellation, "POLL", 0.1)
    seed(totesys_env.source, generate(40, random.Random(5)))
    return totesys_env


def test_a_cycle_cancelled_during_its_load_stops_and_loads_nothing(seeded: Env) -> None:
    from sluice import progress

    with progress.listening(cancel_at("load fact_sales_order")):
        report = cycle()
    assert (report.status, report.state, report.error) == ("failed", "load", "cancelled: cancelled by a test")
    assert count(seeded.warehouse, "warehouse.fact_sales_order") == 0 and marks(seeded.warehouse) == {}
    with seeded.warehouse.connect() as conn:
        last = conn.execute(
            sa.text("SELECT state, status FROM sluice.run_ledger WHERE ingestion_id = :id ORDER BY seq DESC"),
            {"id": report.run_id},
        ).first()
    assert tuple(last) == ("load", "cancelled")
    again = cycle()  # nothing moved: the next cycle loads it all
    assert again.status == "success" and count(seeded.warehouse, "warehouse.fact_sales_order") == 40


def test_a_cycle_cancelled_too_late_completes_with_its_own_report(
    seeded: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancellation the run never sees before its commit (here its watcher does not look): it commits, and the
    command gets the cycle's own report (its tables' counts, which `sluice totesys` prints; it printed nothing),
    with the note."""
    from flows.totesys import TotesysReport
    from sluice import progress
    from tasks.toolkit import Cancellation

    monkeypatch.setattr(Cancellation, "POLL", 3600.0)
    with progress.listening(cancel_at("load fact_sales_order")):
        report = cycle()
    assert isinstance(report, TotesysReport) and report.status == "success", report
    assert report.loaded and report.loaded["fact_sales_order"] == 40
    assert report.notes[-1] == "cancelled: cancelled by a test: too late, the run had done its work"
    assert marks(seeded.warehouse) != {}
