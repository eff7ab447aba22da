"""PostgreSQL restarted during the load: the load task retries against the restarted server; no duplicates."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Path, str | None]]:
    """A PostgreSQL of this test alone (restarting the session's would disturb the other tests)."""
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="sluice-pg-"))  # short: the unix socket lives here
    server = pgserver.get_server(folder / "data", cleanup_mode=None)
    url = server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    yield url, folder / "data", server.system_user
    with contextlib.suppress(Exception):  # already down: nothing to stop
        pgserver.pg_ctl(["-w", "stop", "-m", "immediate"], pgdata=folder / "data", user=server.system_user)
    shutil.rmtree(folder, ignore_errors=True)


def test_postgres_restart_during_load_is_retried_and_loads_once(
    sluice_env: Path, own_postgres: tuple[str, Path, str | None]
) -> None:
    import pgserver
    from prefect.settings import PREFECT_API_URL

    url, pgdata, system_user = own_postgres
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    rows = 400_000
    source = sluice_env / "landing" / "dailycheckins.csv"
    source.parent.mkdir(parents=True)
    source.write_text(
        "user,timestamp,hours,project\n" + "ned,2018-12-20 00:00:00 UTC,1.5,bizdev\n" * rows, encoding="utf-8"
    )
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "SLUICE_DATABASE_URL": url,
        "SLUICE_CHUNK_ROWS": "20000",
        "SLUICE_RETRIES": "5",
        "SLUICE_RETRY_DELAY_SECONDS": "1",
    }
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice.cli",
            "ingest",
            str(source),
            "--dataset",
            "dailycheckins",
            "--json",
            "-v",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    state = conn.execute(
                        sa.text("SELECT status FROM sluice.run_ledger WHERE state = 'load'")
                    ).scalar()
                    # The load state opens before its first chunk is ready (the stages overlap): wait for the
                    # COPY itself, a session inside the load transaction that has started copying.
                    copying = conn.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'COPY %'"
                            " AND state IN ('active', 'idle in transaction')"
                        )
                    ).scalar()
            except sa.exc.ProgrammingError:  # the ledger table does not exist yet
                state, copying = None, 0
            if state == "running" and copying:
                break
            assert child.poll() is None, "the ingest ended before its load could be interrupted"
            time.sleep(0.02)
        else:
            pytest.fail("the load never started")
        # A real restart: the postmaster stops (fast: sessions are terminated) and starts again.
        pgserver.pg_ctl(["-w", "restart", "-m", "fast"], pgdata=pgdata, user=system_user, timeout=60)
        output, _ = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()

    assert child.returncode == 0, output[-3000:]
    report = json.loads(output.strip().splitlines()[-1])
    assert (report["status"], report["rows_loaded"]) == ("success", rows)
    # The restart hit the load (the server terminated its COPY, or refused the load's next connection while it
    # went down and came back) and the task was retried.
    hit = (
        "AdminShutdown",
        "terminating connection",
        "server closed the connection",
        "the database system is shutting down",
        "the database system is starting up",
        "connection to server on socket",  # its socket file is gone while the postmaster is down
        "connection already closed",  # the load's connection, closed by the server's termination, used again
    )
    assert any(h in output for h in hit), f"the restart did not hit the load:\n{output[-4000:]}"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tm.daily_checkins")).scalar() == rows
        assert (
            conn.execute(sa.text("SELECT count(DISTINCT _source_row) FROM tm.daily_checkins")).scalar()
            == rows
        )
        assert conn.execute(sa.text("SELECT count(*) FROM sluice.file_loads")).scalar() == 1
    engine.dispose()
