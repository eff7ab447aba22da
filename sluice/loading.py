"""Exactly-once loading: COPY into a staging table, move into the target, record the file, one transaction.

The file's content hash is the identity: under a transaction-scoped advisory lock on (dataset, sha256)
the load checks ``sluice.file_loads``; a file already there is skipped unless forced, and a forced load
deletes that file's earlier rows in the same transaction. A crash anywhere rolls everything back.

A bulk load (at least ``bulk_index_rows`` rows into a table holding fewer) drops the target's non-unique
indexes, COPYs, and builds them again, all in its one transaction: a sorted index build after the COPY is
2-3x cheaper than maintaining the index row by row (ADR 0003), and a crash rolls the drop back too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from psycopg2 import sql

from sluice import progress, tables
from sluice.adapters.warehouse import copy_frames, qualified, raw_connection, upsert
from sluice.registry import Dataset
from sluice.tables.ledger import file_loads  # the exactly-once registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOutcome:
    rows_loaded: int
    skipped: bool
    by: uuid.UUID | None = None  # skipped: the run that loaded this content (a concurrent one)


def ensure_target(engine: sa.Engine, dataset: Dataset) -> None:
    """Create the dataset's schema and table, and the ``sluice.file_loads`` guard, if they do not exist.

    The guard is created here, not only with the PostgreSQL run ledger: with the DynamoDB ledger (on ECS) nothing
    else creates it, and the first load into a fresh warehouse would fail on a missing ``sluice.file_loads``.
    """
    if dataset.table is not None:
        tables.ensure(engine, file_loads, dataset.table)


def _run_that_loaded(conn: sa.Connection, dataset: str, sha256: str) -> uuid.UUID | None:
    """The run that loaded this content into ``dataset`` (the file registry), or None if none did."""
    query = sa.select(file_loads.c.ingestion_id).where(
        file_loads.c.dataset == dataset, file_loads.c.sha256 == sha256
    )
    return conn.execute(query).scalar()


def already_loaded(conn: sa.Connection, dataset: str, sha256: str) -> bool:
    return _run_that_loaded(conn, dataset, sha256) is not None


def loaded_by(engine: sa.Engine, dataset: str, sha256: str) -> uuid.UUID | None:
    """The run that loaded this content into ``dataset``, or None if none did."""
    with engine.connect() as conn:
        return _run_that_loaded(conn, dataset, sha256)


def already_loaded_reason(sha256: str, run: object) -> str:
    """Why a file was skipped as loaded before, as ``sluice ingest``, its ledger entry and ``sluice backfill`` say
    it (one wording)."""
    return (
        f"already loaded by run {run} (sha256 {sha256[:12]}): nothing loads twice; sluice ingest --force reloads it "
        "(force=true for a deployment run)"
    )


def _lock(conn: sa.Connection, dataset: str, sha256: str) -> None:
    conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"sluice.load:{dataset}:{sha256}"}
    )


def load_file(
    engine: sa.Engine,
    dataset: Dataset,
    *,
    ingestion_id: uuid.UUID,
    source: str,
    sha256: str,
    frames: Iterable[pd.DataFrame],
    force: bool = False,
    rows_hint: int | None = None,
    bulk_index_rows: int = 0,
) -> LoadOutcome:
    """Load one file's valid rows exactly once. ``frames`` carry output columns plus ``_source_row``.

    ``rows_hint`` (the rows about to load) with ``bulk_index_rows`` > 0 enables the bulk path above.
    """
    table = dataset.table
    assert table is not None, f"dataset {dataset.name} has no target table"
    target = tables.name_of(table)
    copy_columns = [*dataset.output_columns, "_source_row", "_ingestion_id"]

    with engine.begin() as conn:
        _lock(conn, dataset.name, sha256)
        earlier = conn.execute(
            sa.select(file_loads.c.ingestion_id).where(
                file_loads.c.dataset == dataset.name, file_loads.c.sha256 == sha256
            )
        ).scalar()
        # Loaded by another run: skipped. By this run itself, its earlier attempt: that commit went through and
        # what came after it failed (the warehouse restarting, say); the retry was "already loaded by a concurrent
        # run", its counts 0 and, for Sertis, its bronze and silver never written. It loads again, replacing its
        # own rows, as a forced load does.
        if earlier is not None and not force and earlier != ingestion_id:
            return LoadOutcome(rows_loaded=0, skipped=True, by=earlier)
        # Whether the bulk path drops the indexes, decided (and the table locked for it) before this load's
        # transaction touches the table. The rows are counted on a connection of their own: counted in this
        # transaction, the count's ACCESS SHARE lock stayed until commit and the LOCK below upgraded it, and two
        # loads doing so deadlocked (as a forced load's delete, then the lock, did).
        dropping = False
        if bulk_index_rows and rows_hint is not None and rows_hint >= bulk_index_rows:
            with engine.connect() as counting:
                dropping = _holds_fewer(counting, target, rows_hint)
        if dropping:
            with raw_connection(conn) as cursor:
                cursor.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(qualified(target)))
        if earlier is not None:
            # Forced: the earlier load of this content goes, in this same transaction.
            conn.execute(sa.delete(table).where(table.c._ingestion_id == earlier))
            conn.execute(
                sa.delete(file_loads).where(
                    file_loads.c.dataset == dataset.name, file_loads.c.sha256 == sha256
                )
            )

        def with_lineage(frame: pd.DataFrame) -> pd.DataFrame:
            return frame.assign(_ingestion_id=str(ingestion_id))

        deferred = defer_indexes(conn, target, rows_hint) if dropping and rows_hint is not None else []

        if dataset.load_mode == "append":
            # Straight into the target: the open transaction is the staging area (nothing is visible
            # before COMMIT, a crash rolls every chunk back) and it avoids writing every row twice.
            rows = copy_frames(conn, target, copy_columns, (with_lineage(f) for f in frames))
        else:
            rows = upsert(
                conn,
                table,
                (with_lineage(f) for f in frames),
                keys=dataset.keys if dataset.load_mode == "upsert" else (),
                on_conflict="last_row_wins" if dataset.load_mode == "upsert" else "replace",
                columns=copy_columns,
            ).copied
        if deferred:
            rebuild_indexes(conn, deferred)

        progress.checkpoint()  # the last place a cancelled run stops before its load commits
        conn.execute(
            file_loads.insert().values(
                dataset=dataset.name,
                sha256=sha256,
                source=source,
                ingestion_id=ingestion_id,
                target=target,
                rows_loaded=rows,
            )
        )
    return LoadOutcome(rows_loaded=rows, skipped=False)


def _holds_fewer(conn: sa.Connection, target: str, rows: int) -> bool:
    """Whether the target holds fewer than ``rows`` rows (read without a lock: readers and other loads go on)."""
    with raw_connection(conn) as cursor:
        cursor.execute(
            sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) AS existing").format(qualified(target)),
            (rows,),
        )
        return bool(cursor.fetchone()[0] < rows)


def defer_indexes(conn: sa.Connection, target: str, rows: int) -> list[str]:
    """When ``rows`` outnumber the target's rows: drop its non-unique indexes (this transaction only);
    returns their definitions. The caller locked the table (``ACCESS EXCLUSIVE``, readers wait until the load
    commits) only once it knew the table holds fewer rows than the load: a load into a bigger table keeps its
    indexes and takes no such lock (it locked every load of 100,000 rows or more, and every reader with it)."""
    if not _holds_fewer(conn, target, rows):  # a load committed meanwhile: the indexes stay
        return []
    with raw_connection(conn) as cursor:
        cursor.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = %s::regclass AND NOT i.indisunique AND i.indisvalid "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) "
            "ORDER BY 1",
            (qualified(target).as_string(cursor.connection),),
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {name}")  # regclass text: already quoted and qualified
    if indexes:
        logger.info(
            "%s: bulk load of about %d rows, rebuilding %d index(es) after the COPY",
            target,
            rows,
            len(indexes),
        )
    return [definition for _, definition in indexes]


def rebuild_indexes(conn: sa.Connection, definitions: list[str]) -> None:
    """Create the indexes ``defer_indexes`` dropped (sorted builds, with room to sort in memory)."""
    with raw_connection(conn) as cursor:
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for definition in definitions:
            cursor.execute(definition)
