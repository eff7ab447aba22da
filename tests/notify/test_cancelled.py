"""A run cancelled from Prefect (`prefect flow-run cancel`, the UI's Cancel) while it loads, on a real server with a
process worker: nothing of the file is loaded, the ledger says ``cancelled`` with the reason (not a bare
``TerminationSignal``, not ``running`` until reaped as crashed), and one alert says so."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.deploy.test_local_server import (  # noqa: F401  (server: a fixture)
    PREFECT,
    ROOT,
    cli,
    server,
    wait_for,
)
from tests.notify.conftest import Inbox

pytestmark = pytest.mark.slow
SLUICE = str(Path(sys.executable).parent / "sluice")


def ledger_rows(pg_url: str, run_id: str) -> list[tuple[str, str, str | None]]:
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT state, status, error FROM sluice.run_ledger WHERE ingestion_id = :id ORDER BY seq"
            ),
            {"id": run_id},
        )
        return [tuple(r) for r in rows]


def test_a_run_cancelled_while_it_loads_is_ledgered_and_alerted_as_cancelled(
    server: tuple[str, dict[str, str]],  # noqa: F811
    pg_url: str,
    sluice_env: Path,
    smtp_server: tuple[int, Inbox],
) -> None:
    from sluice.ledger import ensure_bookkeeping

    ensure_bookkeeping(sa.create_engine(pg_url, poolclass=sa.pool.NullPool))  # the ledger this test reads
    api, env = server
    port, inbox = smtp_server
    inbox.drain()
    block = f"team-{uuid.uuid4().hex[:6]}"
    env = {**env, "SLUICE_WARM": "0", "SLUICE_NOTIFY_BLOCKS": f"email-notification/{block}"}
    added = subprocess.run(
        [SLUICE, "notify", "add-email", block, "--to", "t@example.com", "--smtp-host", "127.0.0.1",
         "--smtp-port", str(port), "--plain"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    cli(env, "work-pool", "create", "sluice-local", "--type", "process")
    cli(env, "--no-prompt", "deploy", "--name", "local", "--prefect-file", "deployments/local.yaml")

    landed = sluice_env / "landing" / "dailycheckins-big.csv"
    landed.parent.mkdir(parents=True, exist_ok=True)
    with landed.open("w", encoding="utf-8") as f:  # big enough to be cancelled in the middle of its load
        f.write("user,timestamp,hours,project\n")
        f.writelines(f"u{i % 5000},2019-09-26 00:00:00 UTC,{i % 20}.5,p{i % 7}\n" for i in range(1_500_000))

    worker_log = (sluice_env / "worker.log").open("w")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "sluice-local", "--limit", "1"],
        env=env, cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        out = cli(env, "deployment", "run", "ingest-file/local", "--param", f"source={landed}",
                  "--param", "dataset=dailycheckins")  # fmt: skip
        run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
        wait_for(
            lambda: ("load", "running") in [(s, st) for s, st, _ in ledger_rows(pg_url, run_id)],
            240, "the run's load", worker,
        )  # fmt: skip
        cli(env, "flow-run", "cancel", run_id)
        wait_for(
            lambda: httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state_type"] == "CANCELLED",
            120, "the run to be cancelled", worker,
        )  # fmt: skip
        wait_for(lambda: inbox.messages, 60, "the cancellation's alert", worker)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()

    states = ledger_rows(pg_url, run_id)
    assert states[-1][:2] == ("load", "cancelled"), states
    assert all(status in ("success", "cancelled") for _, status, _ in states), states
    assert states[-1][2].startswith("cancelled: "), states
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        loaded = conn.execute(
            sa.text("SELECT count(*) FROM tm.daily_checkins WHERE _ingestion_id = :id"), {"id": run_id}
        )
        assert loaded.scalar_one() == 0

    [email] = inbox.drain()
    assert email["Subject"].startswith("[sluice] CANCELLED dailycheckins at load: cancelled: ")
    body = json.loads(email.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
    assert (body["status"], body["runStatus"], body["latestState"]) == ("Ingestion Fail", "cancelled", "load")
    assert body["ingestedID"] == run_id and body["error"] == states[-1][2]

    listed = subprocess.run(
        [SLUICE, "ledger", "--json", "--limit", "5"], env=env, capture_output=True, text=True, timeout=120
    )
    [run] = [r for r in json.loads(listed.stdout) if r["run_id"] == run_id]
    assert (run["status"], run["state"]) == ("cancelled", "load")
