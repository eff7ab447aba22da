"""The fused pass (ADR 0004): the load starts while the file is still being validated, in one transaction;
hard mode still loads nothing and names every bad row; a file Arrow's reader refuses loads as pandas reads it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_ingest

pytestmark = pytest.mark.usefixtures("prefect_harness")

HEADER = "user,timestamp,hours,project\n"


def rows(sql: str) -> list[tuple]:
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def checkins(n: int, bad: dict[int, str] | None = None) -> str:
    """``n`` records; record i (1-based) replaced by ``bad[i]`` where given."""
    bad = bad or {}
    lines = [
        bad.get(
            i, f"u{i % 13},2019-01-{1 + i % 28:02d} 10:00:00.{i % 10_000:04d} UTC,{(i % 48) / 2},p{i % 5}\n"
        )
        for i in range(1, n + 1)
    ]
    return HEADER + "".join(lines)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_CHUNK_ROWS", "2000")
    reload_settings()


def land(folder: Path, text: str, name: str = "dailycheckins.csv") -> str:
    path = folder / "landing" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_load_starts_before_the_file_is_validated(sluice_env: Path, small_chunks: None) -> None:
    report = run_ingest(land(sluice_env, checkins(30_000)), dataset="dailycheckins", mode="hard")
    assert (report.status, report.rows_read, report.rows_loaded) == ("success", 30_000, 30_000)
    times = {
        state: (started, finished)
        for state, started, finished in rows("SELECT state, started_at, finished_at FROM sluice.run_ledger")
    }
    assert set(times) == {"extract", "transform", "validate", "load"}
    # Overlap: the COPY began while chunks were still being validated (the old engine validated first).
    assert times["load"][0] < times["validate"][1]
    assert rows(
        "SELECT count(DISTINCT _source_row), min(_source_row), max(_source_row) FROM tm.daily_checkins"
    ) == [(30_000, 1, 30_000)]


def test_hard_mode_rolls_back_chunks_already_copied_and_names_every_bad_row(
    sluice_env: Path, small_chunks: None
) -> None:
    bad = {
        9_000: "bran,2019-01-01 00:00:00 UTC,25,infra\n",
        15_000: ",2019-01-01 00:00:00 UTC,1,infra\n",
        19_999: "jon,not a time,1,infra\n",
    }
    report = run_ingest(land(sluice_env, checkins(20_000, bad)), dataset="dailycheckins", mode="hard")
    assert (report.status, report.state, report.rows_loaded) == ("failed", "validate", 0)
    assert "3 rows failed checks (hard mode, nothing loaded)" in report.error
    assert rows("SELECT count(*) FROM tm.daily_checkins") == [
        (0,)
    ]  # chunks 1-4 were COPYed, then rolled back
    assert rows("SELECT count(*) FROM sluice.file_loads") == [(0,)]
    quarantined = pd.read_csv(report.quarantine_uri, keep_default_na=False)
    assert sorted(quarantined["row"]) == [9_000, 15_000, 19_999]
    states = dict(rows("SELECT state, status FROM sluice.run_ledger"))
    assert states == {"extract": "success", "transform": "success", "validate": "fail", "load": "fail"}
    assert "rolled back" in rows("SELECT error FROM sluice.run_ledger WHERE state = 'load'")[0][0]
    # the run's artifact in the UI has the table of the first failures, as a soft run's has (it had none)
    from tests.data2bots.test_reference import artifact_markdown

    assert report.run_id is not None
    shown = artifact_markdown(report.run_id)
    assert "### First validation failures" in shown and "| 9000 | hours |" in shown, shown


def test_soft_mode_across_chunks_loads_exactly_the_rows_it_does_not_quarantine(
    sluice_env: Path, small_chunks: None
) -> None:
    bad = {i: f"u,2019-01-01 00:00:00 UTC,{24 + i},p\n" for i in (1, 2_000, 2_001, 7_777, 10_000)}
    report = run_ingest(land(sluice_env, checkins(10_000, bad)), dataset="dailycheckins", mode="soft")
    assert (report.status, report.rows_read, report.rows_loaded, report.rows_quarantined) == (
        "success",
        10_000,
        9_995,
        5,
    )
    quarantined = sorted(pd.read_csv(report.quarantine_uri)["row"])
    loaded = {r for (r,) in rows("SELECT _source_row FROM tm.daily_checkins")}
    assert quarantined == sorted(bad)
    assert loaded == set(range(1, 10_001)) - set(bad)


def test_a_file_arrow_refuses_loads_as_pandas_reads_it(sluice_env: Path, small_chunks: None) -> None:
    # Record 4,500 has three fields: Arrow's reader refuses the file after chunks were COPYed; the pass starts
    # again with pandas' parser, in a new transaction, which reads the short row as missing values (quarantined).
    text = checkins(5_000, {4_500: "ned,2018-12-20 00:00:00 UTC,1.5\n"})
    report = run_ingest(land(sluice_env, text), dataset="dailycheckins", mode="soft")
    assert (report.status, report.rows_loaded, report.rows_quarantined) == ("success", 4_999, 1)
    assert pd.read_csv(report.quarantine_uri)["row"].tolist() == [4_500]
    assert rows("SELECT count(*), count(DISTINCT _source_row) FROM tm.daily_checkins") == [(4_999, 4_999)]
    assert rows("SELECT count(*) FROM sluice.file_loads") == [(1,)]


def test_a_record_with_the_wrong_number_of_fields_never_loads(sluice_env: Path, small_chunks: None) -> None:
    # Record 2,500: an unquoted comma inside the project (pandas, given the header's columns, used to drop the
    # extra field and load the cut row); 4,100: a short record whose missing field is optional-looking text;
    # 4,101: a trailing delimiter with nothing after it loses nothing and loads.
    bad = {
        2_500: "ned,2019-01-01 10:00:00 UTC,4.0,bizdev, marketing\n",
        4_100: "ned,2019-01-01 10:00:00 UTC,4.0\n",
        4_101: "ned,2019-01-01 10:00:00 UTC,2.0,ops,\n",
    }
    report = run_ingest(land(sluice_env, checkins(5_000, bad)), dataset="dailycheckins", mode="soft")
    assert (report.status, report.rows_read, report.rows_loaded, report.rows_quarantined) == (
        "success",
        5_000,
        4_998,
        2,
    )
    quarantined = pd.read_csv(report.quarantine_uri, keep_default_na=False)
    assert quarantined[["row", "column", "check"]].values.tolist() == [
        [2_500, "*", "field count: 5 fields, the header has 4"],
        [4_100, "*", "field count: 3 fields, the header has 4"],
    ]
    assert quarantined["value"].tolist()[0] == "ned,2019-01-01 10:00:00 UTC,4.0,bizdev, marketing"
    loaded = {r for (r,) in rows("SELECT _source_row FROM tm.daily_checkins")}
    assert loaded == set(range(1, 5_001)) - {2_500, 4_100}
    assert rows("SELECT project FROM tm.daily_checkins WHERE _source_row = 4101") == [("ops",)]

    hard = run_ingest(
        land(sluice_env, checkins(300, {7: bad[2_500]}), "dailycheckins-hard.csv"),
        dataset="dailycheckins",
        mode="hard",
    )
    assert (hard.status, hard.rows_loaded) == ("failed", 0)
    assert "row 7, column *: field count: 5 fields, the header has 4" in str(hard.error)


def test_the_same_file_twice_at_once_loads_once_and_both_runs_complete(sluice_env: Path) -> None:
    """S3 delivers at least once: two runs of one file both pass extract, one loads, the other waits on the load
    lock, finds the file loaded and completes as skipped (it used to fail formatting its report's rows)."""
    import hashlib
    import time
    from concurrent.futures import ThreadPoolExecutor

    from sluice.ledger import ensure_bookkeeping

    source = sluice_env / "landing" / "dailycheckins.csv"
    source.parent.mkdir(parents=True)
    source.write_text(checkins(200), encoding="utf-8")
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    ensure_bookkeeping(get_engine())  # the ledger table, polled below before the runs create it
    with ThreadPoolExecutor(2) as pool, get_engine().connect() as holder:
        # The load's own lock, held by another session until both runs wait on it.
        holder.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
            {"k": f"sluice.load:dailycheckins:{sha256}"},
        )
        futures = [pool.submit(run_ingest, str(source), dataset="dailycheckins") for _ in range(2)]
        deadline = time.monotonic() + 120
        while rows(
            "SELECT count(*) FROM sluice.run_ledger WHERE state = 'extract' AND status = 'success'"
        ) != [(2,)]:
            assert time.monotonic() < deadline, "both runs should pass extract while the load is locked"
            time.sleep(0.1)
        holder.rollback()  # releases the lock: one run loads, the other finds the file loaded
        reports = [f.result(timeout=120) for f in futures]
    assert sorted(r.status for r in reports) == ["skipped", "success"], [r.error for r in reports]
    assert sorted(r.rows_read for r in reports) == [0, 200]
    # the skip names the run that loaded it, as every other skip does (it said "a concurrent run")
    [loaded] = [r for r in reports if r.status == "success"]
    [skip] = [r for r in reports if r.status == "skipped"]
    assert skip.error and skip.error.startswith(
        f"already loaded by run {loaded.run_id} (sha256 {sha256[:12]})"
    )
    assert rows("SELECT count(*) FROM tm.daily_checkins") == [(200,)]
