"""``sluice backfill``: every file under a prefix, bounded pool, loaded files skipped, per-file results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli import app

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_backfill_loads_new_files_skips_loaded_and_reports_each(sluice_env: Path) -> None:
    folder = sluice_env / "landing" / "tm" / "dailycheckins"
    folder.mkdir(parents=True)
    for day in range(3):
        (folder / f"dailycheckins-{day}.csv").write_text(
            f"user,timestamp,hours,project\nu{day},2019-01-0{day + 1} 00:00:00 UTC,1,p\n", encoding="utf-8"
        )
    (folder / "dailycheckins-bad.csv").write_text("nope\n1\n", encoding="utf-8")
    runner = CliRunner()
    first = runner.invoke(app, ["backfill", str(folder), "--dataset", "dailycheckins", "--json"])
    assert first.exit_code == 1  # one bad file
    body = json.loads(first.stdout)
    assert (body["files"], body["success"], body["failed"]) == (4, 3, 1)
    assert {Path(r["source"]).name: r["status"] for r in body["results"]}["dailycheckins-bad.csv"] == "failed"

    (folder / "dailycheckins-bad.csv").unlink()
    second = runner.invoke(app, ["backfill", str(folder), "--dataset", "dailycheckins", "--json"])
    body = json.loads(second.stdout)
    assert second.exit_code == 0 and (body["files"], body["skipped"], body["success"]) == (3, 3, 0)


def test_loads_hold_a_slot_of_the_warehouse_concurrency_limit(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from sluice.runner import run_ingest
    from sluice.settings import reload_settings

    def landed(name: str) -> str:
        path = sluice_env / "landing" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("user,timestamp,hours,project\nu,2019-01-01 00:00:00 UTC,1,p\n", encoding="utf-8")
        return str(path)

    monkeypatch.setenv("SLUICE_WAREHOUSE_CONCURRENCY_LIMIT", "sluice-test-warehouse")
    monkeypatch.setenv("SLUICE_RETRIES", "0")
    reload_settings()
    missing = run_ingest(landed("dailycheckins-a.csv"), dataset="dailycheckins")
    assert (missing.status, missing.state) == (
        "failed",
        "load",
    )  # configured but not created: no silent bypass
    assert "sluice-test-warehouse" in (missing.error or "")

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="sluice-test-warehouse", limit=1)
        )
        report = run_ingest(landed("dailycheckins-b.csv"), dataset="dailycheckins")
        limit = client.read_global_concurrency_limit_by_name("sluice-test-warehouse")
    assert (report.status, report.rows_loaded) == ("success", 1)
    assert limit.active_slots == 0  # taken for the load, given back after it
