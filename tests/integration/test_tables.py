"""The declared tables (``sluice.tables``): one ensure, binary-encodable columns, and the one upsert helper.

Each test works in a database of its own on the session's PostgreSQL, so creating every table here leaves the
warehouse the other tests see as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import time

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice import pgbinary, tables
from sluice.adapters.warehouse import Upserted, qualified, raw_connection, upsert
from sluice.tables.tm import daily_checkins


@pytest.fixture
def scratch(pg_url: str) -> Iterator[sa.Engine]:
    """An empty database on the session's PostgreSQL, dropped after the test."""
    name = f"tables_{uuid.uuid4().hex[:10]}"
    server = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(sa.make_url(pg_url).set(database=name))
    yield engine
    engine.dispose()
    with server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


def test_every_declared_table_is_created_by_ensure_and_binary_encodable(scratch: sa.Engine) -> None:
    declared = list(tables.metadata.sorted_tables)
    assert len(declared) >= 28  # every pipeline's tables and the bookkeeping, declared in one place
    with scratch.connect() as conn:
        assert not any(tables.exists(conn, t) for t in declared)
    tables.ensure(scratch, *declared)
    tables.ensure(scratch, *declared)  # idempotent
    missing: dict[str, list[str]] = {}
    with scratch.connect() as conn, raw_connection(conn) as cursor:
        assert all(tables.exists(conn, t) for t in declared)
        for table in declared:
            names = [c.name for c in table.columns]
            types = pgbinary.column_types(cursor, qualified(tables.name_of(table)).as_string(cursor), names)
            unsupported = [f"{c.name} {c.type}" for c in types if c.type not in pgbinary._ENCODERS]
            if unsupported:
                missing[tables.name_of(table)] = unsupported
    # A new table with a type pgbinary cannot encode would COPY as CSV: add an encoder (and its round-trip test).
    assert missing == {}


def test_ensure_of_tables_already_there_takes_no_lock(scratch: sa.Engine) -> None:
    """Every run ensures its tables; once they are there it is one catalogue read, not the DDL lock and DDL."""
    from sluice.tables.ledger import file_loads

    tables.ensure(scratch, daily_checkins)
    with scratch.connect() as holder:  # another process in the middle of creating tables
        holder.execute(sa.text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": tables.DDL_LOCK})
        with scratch.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            assert tables.ensure(conn, daily_checkins) == []
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"), scratch.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '200ms'"))
            # one of them missing: the full path, under the lock
            tables.ensure(conn, daily_checkins, file_loads)
        holder.execute(sa.text("SELECT pg_advisory_unlock_all()"))  # a session lock outlives the pool's reset
    tables.ensure(scratch, daily_checkins, file_loads)
    with scratch.connect() as conn:
        assert tables.exists(conn, file_loads)


def test_ensure_relaxes_old_lineage_columns_once(scratch: sa.Engine) -> None:
    with scratch.begin() as conn:  # tm.daily_checkins as Sluice 0.1 made it: per-row lineage, required
        conn.execute(sa.text("CREATE SCHEMA tm"))
        conn.execute(
            sa.text(
                "CREATE TABLE tm.daily_checkins (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                "username text NOT NULL, project text NOT NULL, hours numeric(5, 2) NOT NULL, "
                "timestamp timestamptz NOT NULL, _ingestion_id uuid NOT NULL, _source_row bigint NOT NULL, "
                "_loaded_at timestamptz NOT NULL DEFAULT now(), _source_uri text NOT NULL, "
                "_source_sha256 char(64) NOT NULL)"
            )
        )
    assert tables.ensure(scratch, daily_checkins) == [
        "daily_checkins._source_sha256 nullable",
        "daily_checkins._source_uri nullable",
    ]
    assert tables.ensure(scratch, daily_checkins) == []
    with scratch.connect() as conn:
        required = conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'tm' "
                "AND table_name = 'daily_checkins' AND is_nullable = 'NO' ORDER BY ordinal_position"
            )
        ).scalars()
        assert list(required) == [
            "id",
            "username",
            "project",
            "hours",
            "timestamp",
            "_ingestion_id",
            "_source_row",
            "_loaded_at",
        ]


# --- upsert ---------------------------------------------------------------------------------------------

versions = sa.Table(  # a test-only shape, in its own MetaData
    "versions",
    sa.MetaData(),
    sa.Column("k", sa.Integer, primary_key=True),
    sa.Column("v", sa.Text),
    sa.Column("at", sa.Time, nullable=False),
    sa.Column("_source_row", sa.BigInteger, nullable=False),
    schema="public",
)


def rows(*values: tuple[int, str | None, time, int]) -> pd.DataFrame:
    return pd.DataFrame(values, columns=["k", "v", "at", "_source_row"]).astype({"at": object})


def run(engine: sa.Engine, frames: list[pd.DataFrame], **kwargs: object) -> tuple[Upserted, list[tuple]]:
    with engine.begin() as conn:
        done = upsert(conn, versions, frames, **kwargs)  # type: ignore[arg-type]
    with engine.connect() as conn:
        return done, [tuple(r) for r in conn.execute(sa.select(versions).order_by(versions.c.k))]


T0, T1, T2 = time(0, 0), time(12, 0), time(23, 59, 59, 999_999)


@pytest.fixture
def seeded(scratch: sa.Engine) -> sa.Engine:
    versions.metadata.create_all(scratch)
    run(scratch, [rows((1, "a", T1, 1), (2, "b", T1, 2))], keys=["k"], on_conflict="new_versions")
    return scratch


def test_update_changed_inserts_new_keys_and_updates_only_rows_that_differ(seeded: sa.Engine) -> None:
    frame = rows((1, "z", T1, 1), (2, "b", T1, 2), (3, "c", T0, 3))
    done, after = run(seeded, [frame], keys=["k"], on_conflict="update_changed")
    assert done == Upserted(copied=3, written=2)  # 1 updated, 3 inserted, 2 unchanged (not rewritten)
    assert after == [(1, "z", T1, 1), (2, "b", T1, 2), (3, "c", T0, 3)]


def test_new_versions_appends_only_keys_not_there(seeded: sa.Engine) -> None:
    done, after = run(
        seeded, [rows((1, "z", T2, 9), (4, "d", T2, 4))], keys=["k"], on_conflict="new_versions"
    )
    assert done.written == 1
    assert after == [(1, "a", T1, 1), (2, "b", T1, 2), (4, "d", T2, 4)]


def test_last_row_of_the_file_wins_across_chunks(seeded: sa.Engine) -> None:
    chunks = [rows((1, "first", T0, 1), (3, "only", T0, 2)), rows((1, "last", T2, 3))]
    done, after = run(seeded, chunks, keys=["k"], on_conflict="last_row_wins")
    assert done == Upserted(copied=3, written=2)
    assert after == [(1, "last", T2, 3), (2, "b", T1, 2), (3, "only", T0, 2)]


def test_replace_leaves_exactly_the_staged_rows(seeded: sa.Engine) -> None:
    done, after = run(seeded, [rows((7, None, T2, 1))], keys=["k"], on_conflict="replace")
    assert done == Upserted(copied=1, written=1)
    assert after == [(7, None, T2, 1)]


stamped = sa.Table(  # a test-only shape with the lineage column every dataset's table has
    "stamped",
    sa.MetaData(),
    sa.Column("k", sa.Integer, primary_key=True),
    sa.Column("v", sa.Text),
    sa.Column("_source_row", sa.BigInteger, nullable=False),
    sa.Column("_loaded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    schema="public",
)


@pytest.mark.parametrize("on_conflict", ["last_row_wins", "update_changed"])
def test_an_updated_row_says_when_it_was_loaded(scratch: sa.Engine, on_conflict: str) -> None:
    """An upserted row took the new file's values and ``_ingestion_id`` but kept the first load's ``_loaded_at``;
    a row the load left alone keeps its time."""
    stamped.metadata.create_all(scratch)

    def load(*values: tuple[int, str, int]) -> dict[int, object]:
        frame = pd.DataFrame(values, columns=["k", "v", "_source_row"])
        with scratch.begin() as conn:
            upsert(conn, stamped, [frame], keys=["k"], on_conflict=on_conflict)  # type: ignore[arg-type]
        with scratch.connect() as conn:
            return dict(conn.execute(sa.select(stamped.c.k, stamped.c._loaded_at)).tuples().all())

    first = load((1, "a", 1), (2, "b", 2))
    again = load((1, "z", 1), (2, "b", 2))
    assert again[1] > first[1]  # updated: loaded again
    if on_conflict == "update_changed":
        assert again[2] == first[2]  # unchanged: not rewritten
