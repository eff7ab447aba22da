"""SIGKILL during the load: nothing of the file is visible, the ledger says crashed, the rerun loads once (and\nremoves the killed run's spool)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_ingest
from sluice.ledger import LOST
from sluice.settings import get_settings

pytestmark = pytest.mark.usefixtures("prefect_harness")
ROOT = Path(__file__).resolve().parents[2]


def scalar(sql: str) -> object:
    with get_engine().connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def test_sigkill_during_load_then_rerun(sluice_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL

    from sluice.ledger import ensure_bookkeeping

    ensure_bookkeeping(get_engine())
    rows = 400_000
    line = "ned,2018-12-20 00:00:00 UTC,1.5,bizdev\n"
    source = sluice_env / "landing" / "dailycheckins.csv"
    source.parent.mkdir(parents=True)
    source.write_text("user,timestamp,hours,project\n" + line * rows, encoding="utf-8")

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "SLUICE_CHUNK_ROWS": "20000"}
    child = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "ingest", str(source), "--dataset", "dailycheckins"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = scalar("SELECT status FROM sluice.run_ledger WHERE state = 'load'")
            if state == "running":
                break
            assert child.poll() is None, "the ingest ended before its load could be interrupted"
            time.sleep(0.02)
        else:
            pytest.fail("the load never started")
        time.sleep(0.3)  # well inside the COPY of 400k rows
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()

    assert scalar("SELECT count(*) FROM tm.daily_checkins") == 0
    assert scalar("SELECT count(*) FROM sluice.file_loads") == 0
    killed = scalar("SELECT ingestion_id FROM sluice.run_ledger WHERE state = 'load'")
    spool = get_settings().work_dir / uuid.UUID(str(killed)).hex
    assert spool.is_dir()  # the killed run's spool, which nothing cleaned up

    # what the killed command's message says to run: it closes the run in the ledger, and must not leave it to
    # Prefect's UI as Running for good (it took the reaping the next run would have told Prefect about)
    listed = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "ledger", "--limit", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0 and "process killed or lost" in listed.stdout, listed.stdout + listed.stderr
    report = run_ingest(str(source), dataset="dailycheckins")
    assert (report.status, report.rows_loaded) == ("success", rows)
    assert scalar("SELECT count(*) FROM tm.daily_checkins") == rows
    statuses = scalar(
        "SELECT string_agg(status, ',' ORDER BY started_at) FROM sluice.run_ledger WHERE state = 'load'"
    )
    assert statuses == "crashed,success"
    assert not spool.exists()  # the rerun swept it: its owner was dead
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # the UI showed the killed run Running for good
        state = client.read_flow_run(uuid.UUID(str(killed))).state
    assert state is not None and (state.type.value, state.message) == ("CRASHED", LOST)


def test_a_run_killed_between_two_states_is_closed_not_left_a_success(sluice_env: Path) -> None:
    """Killed after its ``extract`` succeeded and before ``transform`` began: ``sluice ledger`` called the run a
    success, at ``extract``, of a file that never loaded (the reaper closed ``running`` states only). A dead run's
    next state is now recorded ``crashed``; a live one's (it holds its lock) is left alone."""
    from sluice.ledger import LOST, LedgerEntry, get_ledger, hold_run, release_run, summarize

    ledger = get_ledger()
    dead, alive = uuid.uuid4(), uuid.uuid4()
    for run in (dead, alive):
        ledger.record(
            LedgerEntry(
                ingestion_id=run, state="extract", dataset="dailycheckins", source=f"/landing/{run}.csv",
                status="success", rows_read=10,
            )
        )  # fmt: skip
    live = get_ledger()  # another session holds the live run's lock, as its process does
    hold_run(live, alive)
    try:
        assert ledger.reap() >= 1
        assert [(e.state, e.status) for e in ledger.history(alive)] == [("extract", "success")]
    finally:
        release_run(live)
    closed = ledger.history(dead)
    assert [(e.state, e.status, e.error) for e in closed] == [
        ("extract", "success", None),
        ("transform", "crashed", LOST),
    ]
    assert summarize(closed)["status"] == "failed"
    ledger.reap()
    assert ledger.history(dead) == closed  # closed once


def test_a_run_killed_after_its_load_committed_is_closed_as_the_load_it_was(sluice_env: Path) -> None:
    """Killed between the load's commit and the ledger's next write: the reaper called the run crashed, with 0 rows
    loaded, while its rows were in the table and a re-run skipped the file "already loaded by" it. The file
    registry has the truth: the states it left open close as a success, the load with the registry's rows."""
    from sluice.ledger import COMMITTED, LedgerEntry, file_loads, get_ledger, summarize

    ledger = get_ledger()
    run = uuid.uuid4()
    for state in ("extract", "transform", "validate", "load"):
        ledger.record(
            LedgerEntry(
                ingestion_id=run, state=state, dataset="dailycheckins", source="/landing/x.csv",
                status="success" if state == "extract" else "running", rows_read=12,
            )
        )  # fmt: skip
    with get_engine().begin() as conn:
        conn.execute(
            file_loads.insert().values(
                dataset="dailycheckins", sha256="d" * 64, source="/landing/x.csv", ingestion_id=run,
                target="tm.daily_checkins", rows_loaded=12,
            )
        )  # fmt: skip
    assert ledger.reap() >= 3
    closed = ledger.history(run)
    assert [(e.state, e.status) for e in closed] == [
        ("extract", "success"), ("transform", "success"), ("validate", "success"), ("load", "success"),
    ]  # fmt: skip
    assert all(e.error == COMMITTED for e in closed[1:]) and closed[-1].rows_loaded == 12
    assert summarize(closed)["status"] == "success" and ledger.reaped_runs == {run: True}
