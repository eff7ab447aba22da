"""Exactly-once loading against the real PostgreSQL: crash mid-load, concurrent duplicates, chunking."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine
from sluice.datasets.tm import DAILY_CHECKINS
from sluice.loading import ensure_target, load_file


def frames(n_chunks: int, rows: int, fail_after: int | None = None) -> Iterator[pd.DataFrame]:
    for i in range(n_chunks):
        if fail_after is not None and i == fail_after:
            raise ConnectionError("simulated crash between chunks")
        yield pd.DataFrame(
            {
                "username": [f"u{i}"] * rows,
                "project": ["p"] * rows,
                "hours": [1.0] * rows,
                "timestamp": pd.to_datetime(["2020-01-01"] * rows, utc=True),
                "_source_row": range(i * rows + 1, (i + 1) * rows + 1),
            }
        )


def count() -> int:
    with get_engine().connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM tm.daily_checkins")).scalar_one()


def loaded_files() -> int:
    with get_engine().connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM sluice.file_loads")).scalar_one()


def load(sha: str, chunks: Iterator[pd.DataFrame], force: bool = False) -> object:
    return load_file(
        get_engine(),
        DAILY_CHECKINS,
        ingestion_id=uuid.uuid4(),
        source="f.csv",
        sha256=sha,
        frames=chunks,
        force=force,
    )


@pytest.fixture
def target(sluice_env: Path) -> None:
    from sluice.ledger import ensure_bookkeeping

    ensure_bookkeeping(get_engine())
    ensure_target(get_engine(), DAILY_CHECKINS)


@pytest.mark.usefixtures("target")
def test_crash_between_chunks_leaves_nothing_and_rerun_loads_once() -> None:
    sha = "a" * 64
    with pytest.raises(ConnectionError):
        load(sha, frames(5, 100, fail_after=3))
    assert (count(), loaded_files()) == (0, 0)
    outcome = load(sha, frames(5, 100))
    assert (outcome.rows_loaded, outcome.skipped, count(), loaded_files()) == (500, False, 500, 1)


@pytest.mark.usefixtures("target")
def test_same_file_ten_times_concurrently_loads_once() -> None:
    sha = "b" * 64
    outcomes: list[object] = []
    barrier = threading.Barrier(10)

    def worker() -> None:
        barrier.wait()
        outcomes.append(load(sha, frames(2, 50)))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.skipped for o in outcomes) == [False] + [True] * 9
    assert count() == 100


@pytest.mark.usefixtures("target")
def test_force_replaces_only_that_files_rows() -> None:
    load("c" * 64, frames(1, 10))
    load("d" * 64, frames(1, 7))
    outcome = load("c" * 64, frames(2, 10), force=True)
    assert (outcome.rows_loaded, count(), loaded_files()) == (20, 27, 2)


@pytest.mark.usefixtures("target")
def test_many_different_files_at_once_all_load_none_twice() -> None:
    shas = [f"{i:x}" * 64 for i in range(1, 7)]
    threads = [threading.Thread(target=load, args=(sha[:64], frames(2, 25))) for sha in shas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (count(), loaded_files()) == (6 * 50, 6)


def api_index() -> tuple[int, str, bool] | None:
    """(oid, definition, valid) of the check-in table's (username, timestamp) index."""
    with get_engine().connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT i.indexrelid::int, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
                "WHERE i.indrelid = 'tm.daily_checkins'::regclass AND NOT i.indisunique"
            )
        ).first()
    return tuple(row) if row else None


def bulk(sha: str, chunks: Iterator[pd.DataFrame], rows: int) -> object:
    return load_file(
        get_engine(),
        DAILY_CHECKINS,
        ingestion_id=uuid.uuid4(),
        source="big.csv",
        sha256=sha,
        frames=chunks,
        rows_hint=rows,
        bulk_index_rows=100,
    )


@pytest.mark.usefixtures("target")
def test_bulk_load_rebuilds_the_index_after_copy_and_a_crash_keeps_the_old_one() -> None:
    before = api_index()
    assert before is not None and before[2]

    with pytest.raises(
        ConnectionError
    ):  # crash mid bulk load: the dropped index comes back with the rollback
        bulk("e" * 64, frames(4, 100, fail_after=2), 400)
    assert (count(), loaded_files(), api_index()) == (0, 0, before)

    outcome = bulk("e" * 64, frames(4, 100), 400)  # 400 rows into an empty table: drop, COPY, build
    after = api_index()
    assert (outcome.rows_loaded, count()) == (400, 400)
    assert after is not None and after[0] != before[0] and after[1:] == before[1:]  # rebuilt, same definition

    bulk(
        "f" * 64, frames(1, 150), 150
    )  # fewer rows than the table holds: the index is maintained, not rebuilt
    assert api_index() == after and count() == 550
    with get_engine().connect() as conn:
        conn.execute(sa.text("SET enable_seqscan = off"))
        plan = conn.execute(
            sa.text("EXPLAIN SELECT * FROM tm.daily_checkins WHERE username = 'u1' ORDER BY timestamp")
        ).scalars()
        assert "ix_daily_checkins_username_timestamp" in " ".join(plan)


def exclusive_locks() -> int:
    """ACCESS EXCLUSIVE locks on the check-in table, held or asked for, seen from another connection."""
    with get_engine().connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE relation = 'tm.daily_checkins'::regclass "
                "AND mode = 'AccessExclusiveLock'"
            )
        ).scalar_one()


@pytest.mark.usefixtures("target")
def test_a_bulk_load_into_a_table_that_holds_more_rows_shuts_no_reader_out() -> None:
    """A load of at least SLUICE_BULK_INDEX_ROWS rows took the table's ACCESS EXCLUSIVE lock before it counted the
    rows there, and kept it to its commit though it dropped no index: every API read and every other load of the
    table waited for the whole load. Only a load that drops the indexes (into a table holding fewer rows) takes it."""
    bulk("a" * 64, frames(5, 100), 500)
    seen: list[int] = []

    def watched(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for chunk in chunks:
            yield chunk
            seen.append(exclusive_locks())
            with get_engine().connect() as conn:  # a reader, as the query API is: answered at once
                conn.execute(sa.text("SET lock_timeout = '2s'"))
                assert conn.execute(sa.text("SELECT count(*) FROM tm.daily_checkins")).scalar_one() == 500

    bulk("b" * 64, watched(frames(2, 100)), 200)  # 200 rows into 500: the indexes stay, no lock
    assert seen == [0, 0] and count() == 700

    seen.clear()
    with get_engine().begin() as conn:
        conn.execute(sa.text("TRUNCATE tm.daily_checkins, sluice.file_loads"))
    bulk("c" * 64, (chunk for chunk in frames(2, 100) if not seen.append(exclusive_locks())), 200)
    assert seen[0] == 1  # into an empty table: the indexes are dropped, the table locked for it


@pytest.mark.usefixtures("target")
def test_a_bulk_load_asks_for_the_tables_lock_holding_none_on_it_so_two_never_deadlock() -> None:
    """Two bulk loads into a table holding fewer rows: each counted the table in its own transaction (a share lock
    kept until commit), then asked for ACCESS EXCLUSIVE: each waited on the other's share lock, a deadlock, and one
    load was read, checked and COPYed again from the start. A load must ask for the lock holding nothing on the
    table. Here a reader holds the table while the load asks."""
    table = "'tm.daily_checkins'::regclass"
    outcome: list[object] = []
    with get_engine().connect() as reader:
        reader.execute(
            sa.text("SELECT count(*) FROM tm.daily_checkins")
        )  # its share lock, held until rollback
        loading = threading.Thread(target=lambda: outcome.append(bulk("d" * 64, frames(3, 100), 300)))
        loading.start()
        deadline = time.monotonic() + 30
        waiting = None
        while waiting is None and time.monotonic() < deadline:
            with get_engine().connect() as probe:
                waiting = probe.execute(
                    sa.text(
                        f"SELECT pid FROM pg_locks WHERE relation = {table} AND NOT granted "
                        "AND mode = 'AccessExclusiveLock'"
                    )
                ).scalar()
                held = probe.execute(
                    sa.text(
                        f"SELECT array_agg(mode) FROM pg_locks WHERE relation = {table} AND granted AND pid = :p"
                    ),
                    {"p": waiting},
                ).scalar()
            time.sleep(0.05)
        assert waiting is not None, "the load never asked for the table's lock"
        assert held is None, f"the load asked for ACCESS EXCLUSIVE holding {held} on the table"
        reader.rollback()
    loading.join(30)
    assert outcome and count() == 300
