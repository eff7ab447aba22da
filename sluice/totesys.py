"""Totesys I/O: incremental extraction from the OLTP, the star schema in the warehouse, and its atomic load.

Watermarks live in the warehouse (``sluice.totesys_watermarks``), one per source table: the greatest
``last_updated`` already loaded. Each run re-reads ``SLUICE_TOTESYS_OVERLAP_SECONDS`` behind it so that rows
committed late with an older ``last_updated`` are not missed; versions already loaded inside that window are
remembered (``sluice.totesys_recent``) and dropped, so an idle run extracts nothing. The watermark moves in the
same transaction as the load: it never passes rows that did not load.

The star schema and the bookkeeping tables are declared in ``sluice.tables.totesys``; rows go in through
``sluice.adapters.warehouse.upsert`` (binary COPY into a temp table, one ``INSERT … SELECT``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import shutil
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from psycopg2 import sql
from sqlalchemy.dialects.postgresql import insert as pg_insert

from schemas.totesys import MODELS
from sluice import checks, progress
from sluice.adapters import storage
from sluice.adapters.totesys_source import readable_errors
from sluice.adapters.warehouse import raw_connection, redact, run_copy, upsert
from sluice.errors import BadFile, SluiceError, listed
from sluice.settings import Settings
from sluice.tables import ensure
from sluice.tables.totesys import (
    BOOKKEEPING,
    WAREHOUSE_TABLES,
    lookups,
    max_ids,
    recent,
    snapshot,
    watermarks,
)
from sluice.tables.totesys import SCHEMA as SCHEMA
from sluice.transforms.totesys import (
    DIMENSIONS,
    FACTS,
    LOOKUP_TABLES,
    TABLES,
    BadRow,
    Rejection,
    dim_date,
    required_columns,
    star_schema,
)

logger = logging.getLogger(__name__)

LOCK = "sluice.totesys"
#: Held (session-level, on its own connection) from a cycle's extract to its end: at most one cycle at a time.
CYCLE_LOCK = "sluice.totesys.cycle"
BUSY = "another totesys cycle is running: this one extracted nothing (the next one picks up)"


# --- zones ----------------------------------------------------------------------------------------------


def ingestion_zone(settings: Settings) -> str:
    return settings.totesys_ingestion_uri or storage.join(settings.zone("staging"), "totesys/ingestion")


def processed_zone(settings: Settings) -> str:
    return settings.totesys_processed_uri or storage.join(settings.zone("staging"), "totesys/processed")


def batch_key(table: str, at: datetime, suffix: str = "csv") -> str:
    """``{table}/{YYYY}/{MM}/{DD}/{HH-MM}/{table}-{YYYY-MM-DD_HH.MM.SS}.{suffix}``."""
    return f"{table}/{at:%Y/%m/%d/%H-%M}/{table}-{at:%Y-%m-%d_%H.%M.%S}.{suffix}"


# --- warehouse set-up -----------------------------------------------------------------------------------


#: Where the warehouse keeps each source table's ids (``sluice.totesys_max_ids`` starts from them).
LOADED_IDS: dict[str, tuple[str, str]] = {
    "address": ("warehouse.dim_location", "location_id"),
    "counterparty": ("warehouse.dim_counterparty", "counterparty_id"),
    "currency": ("warehouse.dim_currency", "currency_id"),
    "department": ("sluice.totesys_lookups", "row_id"),
    "design": ("warehouse.dim_design", "design_id"),
    "staff": ("warehouse.dim_staff", "staff_id"),
    "sales_order": ("warehouse.fact_sales_order", "sales_order_id"),
    "purchase_order": ("warehouse.fact_purchase_order", "purchase_order_id"),
    "payment_type": ("warehouse.dim_payment_type", "payment_type_id"),
    "transaction": ("warehouse.dim_transaction", "transaction_id"),
    "payment": ("warehouse.fact_payment", "payment_id"),
}


def ensure_warehouse(engine: sa.Engine) -> None:
    """Create the star schema and the cycle's bookkeeping where missing, old column names renamed in place.

    A warehouse loaded before ``sluice.totesys_max_ids`` existed gets each table's greatest id from what it holds
    (else the first cycle would re-read every row above the first batch's ids); one made when the facts'
    ``agreed_delivery_location_id`` was required stops requiring it."""
    ensure(engine, *WAREHOUSE_TABLES.values(), *BOOKKEEPING)
    with engine.begin() as conn:
        for table in ("fact_sales_order", "fact_purchase_order"):  # NOT NULL in warehouses made before
            required = conn.execute(
                sa.text(
                    "SELECT is_nullable = 'NO' FROM information_schema.columns WHERE table_schema = :s "
                    "AND table_name = :t AND column_name = 'agreed_delivery_location_id'"
                ),
                {"s": SCHEMA, "t": table},
            ).scalar()
            if required:
                conn.execute(
                    sa.text(
                        f"ALTER TABLE {SCHEMA}.{table} ALTER COLUMN agreed_delivery_location_id DROP NOT NULL"
                    )
                )
        for table, (where, column) in LOADED_IDS.items():
            only = "WHERE table_name = 'department'" if table == "department" else ""
            conn.execute(
                sa.text(
                    f"INSERT INTO sluice.totesys_max_ids (table_name, max_id) SELECT :t, max({column}) "
                    f"FROM {where} {only} HAVING max({column}) IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM sluice.totesys_max_ids WHERE table_name = :t) ON CONFLICT DO NOTHING"
                ),
                {"t": table},
            )


def read_watermarks(engine: sa.Engine) -> dict[str, datetime]:
    with engine.connect() as conn:
        return {r.table_name: r.last_updated for r in conn.execute(sa.select(watermarks))}


def behind_watermarks(
    seeded: dict[str, datetime], marks: dict[str, datetime], new_ids: Collection[str] = ()
) -> str | None:
    """A note when a (re)seeded source holds nothing past the warehouse's watermarks: the next cycle extracts
    only rows changed after them or with a new id (``new_ids``: the tables holding an id above the greatest
    loaded), so it would find "no new data" with no word why."""
    behind = sorted(t for t, stamp in seeded.items() if t in marks and stamp <= marks[t] and t not in new_ids)
    if not behind:
        return None
    newest = max(seeded[t] for t in behind)
    fresh = sorted(t for t in new_ids if t in seeded)
    also = (
        f" (it does extract the rows of {listed(fresh)} with a new id, stamped however far behind)"
        if fresh
        else ""
    )
    return (
        f"the warehouse has already loaded Totesys up to its watermarks (sluice.totesys_watermarks), and "
        f"{listed(behind)} hold nothing changed after them (seeded up to {newest:%Y-%m-%d %H:%M:%S}): "
        f"`sluice totesys` will not extract those rows again{also}. To load this source from scratch, use a new "
        "SLUICE_HOME (a warehouse of its own) or point SLUICE_DATABASE_URL at an empty warehouse"
    )


# --- one cycle at a time --------------------------------------------------------------------------------


def claim_cycle(engine: sa.Engine) -> sa.Connection | None:
    """The cycle lock, held by the returned connection until ``release_cycle``; None if another cycle holds it.

    A cycle that dies loses its connection and with it the lock: a killed cycle never blocks the next one.
    """
    conn = engine.connect()
    try:
        got = conn.execute(
            sa.text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": CYCLE_LOCK}
        ).scalar_one()
        conn.commit()
    except Exception:
        conn.invalidate()
        conn.close()
        raise
    if not got:
        conn.close()
        return None
    return conn


def release_cycle(conn: sa.Connection) -> None:
    try:
        conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": CYCLE_LOCK})
        conn.commit()
    except Exception:
        conn.invalidate()  # never back to the pool still holding the lock
    finally:
        conn.close()


# --- extract --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One source table's new rows of this run: spooled on local disk as the CSV the ingestion zone holds."""

    table: str
    path: Path
    uri: str
    rows: int
    max_last_updated: datetime

    def chunks(self, size: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """The batch's rows (every value text; only ``columns``, if given), ``size`` at a time; each chunk's index
        is its rows' position in the batch (from 0), so a row is named alike whatever the chunking."""
        offset = 0
        with pd.read_csv(
            self.path, dtype=str, keep_default_na=False, encoding="utf-8", chunksize=size, usecols=columns
        ) as reader:
            for chunk in reader:
                chunk.index = pd.RangeIndex(offset, offset + len(chunk))
                offset += len(chunk)
                yield chunk

    def frame(self) -> pd.DataFrame:
        """The whole batch (for the reference tables dimensions join: bounded by the OLTP's reference data)."""
        return pd.read_csv(self.path, dtype=str, keep_default_na=False, encoding="utf-8")


#: The one source a warehouse loads from (``sluice.totesys_snapshot``'s key).
SOURCE = "totesys"


@dataclass
class Snapshot:
    """The source snapshot a cycle read through: when (by the cycle's UTC clock), the source's wall clock then,
    and the source transactions still in progress (their rows were invisible to it)."""

    taken_at: datetime
    source_clock: datetime
    in_progress: list[int]


def read_snapshot(engine: sa.Engine) -> Snapshot | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(snapshot).where(snapshot.c.source == SOURCE)).one_or_none()
    return None if row is None else Snapshot(row.taken_at, row.source_clock, list(row.in_progress))


def remember_snapshot(conn: sa.Connection, taken: Snapshot, run_id: uuid.UUID) -> None:
    """The snapshot this cycle has read all through (loaded, or found nothing new in): where the next one starts."""
    values = {
        "taken_at": taken.taken_at,
        "source_clock": taken.source_clock,
        "in_progress": taken.in_progress,
        "ingestion_id": run_id,
    }
    conn.execute(
        pg_insert(snapshot)
        .values(source=SOURCE, **values)
        .on_conflict_do_update(index_elements=[snapshot.c.source], set_=values)
    )


@dataclass
class Extracted:
    run_at: datetime
    run_id: uuid.UUID
    batches: dict[str, Batch] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    #: The watermarks this run read from (``load`` refuses to apply the run if another cycle moved them since).
    marks: dict[str, datetime] = field(default_factory=dict)
    #: The snapshot read (``remember_snapshot`` once the cycle's rows are loaded, or found to be nothing new).
    snapshot: Snapshot | None = None
    #: Why nothing was extracted, when it is not "no new data" (another cycle is running).
    note: str | None = None
    #: The run's spool folder on local disk (``discard`` removes it) and the rows per streamed chunk.
    work: Path | None = None
    chunk_rows: int = 200_000

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.batches.values())

    @property
    def source_now(self) -> datetime | None:
        """The source's clock when its snapshot was taken: no watermark moves past it."""
        return self.snapshot.source_clock if self.snapshot else None

    @property
    def why_nothing(self) -> str:
        """Why a cycle extracted nothing: another cycle runs, nothing changed, or nothing was ever there."""
        if self.note:
            return self.note
        if self.marks:
            return "no new data since the watermarks"
        return "the source's Totesys tables hold no rows yet: nothing to extract"


def spool_folder(settings: Settings, run_id: uuid.UUID) -> Path:
    """Where a cycle spools its batches and star-schema chunks: removed at its end, success or failure."""
    return settings.work_dir / run_id.hex


def discard(extracted: Extracted | None) -> None:
    """Remove the cycle's spool files (the zones and the warehouse keep what it produced)."""
    if extracted is not None and extracted.work is not None:
        shutil.rmtree(extracted.work, ignore_errors=True)


def _check_shape(cursor: Any) -> None:
    """Every source table there with every column the star schema needs, else one error naming what is missing."""
    cursor.execute(
        "SELECT t.name, a.attname FROM unnest(%s::text[]) AS t(name) "
        "LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(quote_ident(t.name)) "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        (list(TABLES),),
    )
    present: dict[str, set[str]] = {table: set() for table in TABLES}
    for table, column in cursor.fetchall():
        if column is not None:
            present[table].add(column)
    if not any(present.values()):  # nothing of Totesys there: a source never filled, not one that changed
        raise BadFile(
            "the Totesys source has no Totesys tables: fill it with `sluice totesys seed-source` (generated rows, "
            "or --from DIR of CSVs), or point SLUICE_TOTESYS_SOURCE_URL (or --source-url) at the Totesys OLTP"
        )
    problems = []
    for table in TABLES:
        if not present[table]:
            problems.append(f"table {table} does not exist")
            continue
        missing = [c for c in required_columns(table) if c not in present[table]]
        if missing:
            problems.append(f"table {table} has no column {', '.join(missing)}")
    if problems:
        raise BadFile(
            f"the Totesys source has changed shape: {'; '.join(problems)}. Nothing was extracted or loaded; "
            "the next cycle extracts from the same watermarks once the source has these again"
        )


def read_max_ids(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {r.table_name: r.max_id for r in conn.execute(sa.select(max_ids))}


#: The source's version stamps. A ``timestamptz`` column comes out of COPY in the session's time zone with its
#: offset (``…10:00:00.5+01``): the offset is dropped, so every stamp is the session's wall time, as ``timestamp``
#: columns and the source's clock (``clock_timestamp()::timestamp``) are.
STAMPS = ("created_at", "last_updated")
_OFFSET = r"^(.*\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)[+-]\d{2}(?::?\d{2}){0,2}$"


def _copy_since(
    cursor: Any,
    table: str,
    since: datetime | None,
    above: int | None,
    written_by: Collection[int],
    dest: Path,
) -> None:
    """The table's rows with ``last_updated > since``, an id above ``above``, or written by a transaction of
    ``written_by`` (all rows when ``since`` is None), as CSV with a header, via COPY straight into the file
    ``dest`` (not memory)."""
    where = sql.SQL("")
    if since is not None:
        where = sql.SQL("WHERE last_updated > {}").format(sql.Literal(since))
        if above is not None:
            where = sql.SQL("{} OR {} > {}").format(where, sql.Identifier(f"{table}_id"), sql.Literal(above))
        if written_by:
            # A row's xmin is the 32-bit transaction id that wrote it; the snapshot gives 64-bit ones.
            xids = sorted({xid % 2**32 for xid in written_by})
            where = sql.SQL("{} OR xmin::text::bigint = ANY({})").format(where, sql.Literal(xids))
    query = sql.SQL(
        "COPY (SELECT * FROM {} {} ORDER BY last_updated, {}) TO STDOUT WITH (FORMAT csv, HEADER)"
    ).format(sql.Identifier(table), where, sql.Identifier(f"{table}_id"))
    with dest.open("wb") as out:
        run_copy(cursor, query, out)


def _read_copied(path: Path, size: int) -> Iterator[pd.DataFrame]:
    """A COPY spool's rows, ``size`` at a time, every value as text, zoned stamps as wall time."""
    with pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", chunksize=size) as reader:
        for frame in reader:
            for column in STAMPS:
                if column in frame.columns:
                    frame[column] = frame[column].str.replace(_OFFSET, r"\1", regex=True)
            yield frame


def _seen(engine: sa.Engine, table: str, since: datetime) -> set[tuple[int, datetime]]:
    query = sa.select(recent.c.row_id, recent.c.last_updated).where(
        recent.c.table_name == table, recent.c.last_updated > since
    )
    with engine.connect() as conn:
        return {(int(r.row_id), r.last_updated) for r in conn.execute(query)}


def extract(
    source: sa.Engine, warehouse: sa.Engine, settings: Settings, run_at: datetime, run_id: uuid.UUID
) -> Extracted:
    """Each table's rows changed since its watermark (minus the overlap), new versions only, to the ingestion zone.

    All tables are read in one ``REPEATABLE READ`` snapshot: rows committed together (a new staff member and
    their first sales order) are extracted together or not at all, so a batch never references a row that a
    later table's read saw but an earlier one's did not.
    """
    marks = read_watermarks(warehouse)
    highest = read_max_ids(warehouse)
    overlap = timedelta(seconds=settings.totesys_overlap_seconds)
    work = spool_folder(settings, run_id)
    shutil.rmtree(work, ignore_errors=True)  # a retried extract starts its spool afresh
    (work / "source").mkdir(parents=True)
    (work / "batch").mkdir()
    result = Extracted(
        run_at=run_at, run_id=run_id, marks=dict(marks), work=work, chunk_rows=settings.chunk_rows
    )
    since_of: dict[str, datetime | None] = {}
    before = read_snapshot(warehouse)
    with readable_errors(source.url), source.begin() as conn, raw_connection(conn) as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT clock_timestamp()::timestamp")  # the first query takes the snapshot
        source_now: datetime = cursor.fetchone()[0]
        cursor.execute("SELECT txid_snapshot_xip(txid_current_snapshot())")
        result.snapshot = Snapshot(datetime.now(UTC), source_now, [int(r[0]) for r in cursor.fetchall()])
        _check_shape(cursor)
        start = _read_from(before, result.snapshot)
        for table in TABLES:
            mark = marks.get(table)
            # A watermark ahead of the source's clock (written before it was capped, or a clock set back since:
            # a DST fall-back on `timestamp DEFAULT now()` columns) reads from where the clock was then.
            since = min(mark, start) - overlap if mark else None
            progress.tell(f"extract {table}")
            # New rows are also found by id: one inserted with a stamp behind the window (a slow application
            # clock) is still read. Rows of a transaction that was still open at the last cycle's snapshot are
            # read by the transaction, whatever their ids and stamps (it may have committed an id below one
            # that loaded, stamped with its start, long before the window).
            _copy_since(
                cursor,
                table,
                since,
                highest.get(table),
                before.in_progress if before else (),
                work / "source" / f"{table}.csv",
            )
            since_of[table] = since
    zone = ingestion_zone(settings)
    for table, since in since_of.items():
        copied = work / "source" / f"{table}.csv"
        batch = _new_versions(warehouse, table, since, copied, work / "batch" / f"{table}.csv", result)
        copied.unlink()
        if batch is None:
            continue
        # A row stamped ahead of the source's clock (a clock that was fast) loads now, but the watermark stops at
        # the clock: rows stamped correctly afterwards are still above it. The stamped-ahead row is re-read (and
        # dropped as already loaded, ``sluice.totesys_recent``) until the clock passes it.
        batch.max_last_updated = min(batch.max_last_updated, source_now)
        batch.uri = storage.join(zone, batch_key(table, run_at))
        storage.put_file(batch.path, batch.uri)
        result.batches[table] = batch
    if not result.batches and result.snapshot is not None:  # read through, nothing new: start here next time
        with warehouse.begin() as conn:
            remember_snapshot(conn, result.snapshot, run_id)
    return result


def _read_from(before: Snapshot | None, now: Snapshot) -> datetime:
    """The source clock reading that rows written since the last snapshot are stamped at or after: the clock
    now, less the time that really passed (by the cycle's UTC clock). Without a step it is the last snapshot's
    clock; after the source's clock was set back (a DST fall-back repeats an hour of ``timestamp`` stamps), it
    is that much earlier, and the rows stamped in the repeated hour are read."""
    if before is None:
        return now.source_clock
    return now.source_clock - max(now.taken_at - before.taken_at, timedelta(0))


def _new_versions(
    warehouse: sa.Engine, table: str, since: datetime | None, copied: Path, dest: Path, result: Extracted
) -> Batch | None:
    """The copied rows minus the versions already loaded (``sluice.totesys_recent``), chunk by chunk into
    ``dest``; None when none is left. Counts the rows read in ``result.read``."""
    seen = _seen(warehouse, table, since) if since is not None else set()
    read = kept = 0
    newest: datetime | None = None
    with dest.open("w", encoding="utf-8", newline="") as out:
        for frame in progress.counted(_read_copied(copied, result.chunk_rows), f"extract {table}"):
            read += len(frame)
            stamps = pd.to_datetime(frame["last_updated"], format="ISO8601")
            if seen:
                ids = pd.to_numeric(frame[f"{table}_id"]).astype("int64")
                known = [(i, t.to_pydatetime()) in seen for i, t in zip(ids, stamps, strict=True)]
                keep = ~pd.Series(known, index=frame.index)
                frame, stamps = frame[keep], stamps[keep]
            if frame.empty:
                continue
            frame.to_csv(out, index=False, header=kept == 0)
            kept += len(frame)
            top = stamps.max().to_pydatetime()
            newest = top if newest is None else max(newest, top)
    result.read[table] = read
    if not kept or newest is None:
        dest.unlink()
        return None
    return Batch(table, dest, "", kept, newest)


# --- transform + validate -------------------------------------------------------------------------------


def read_lookups(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    """The latest rows of the tables dimensions join to, as loaded by earlier runs (text, like a batch)."""
    frames: dict[str, pd.DataFrame] = {}
    with engine.connect() as conn:
        for table in LOOKUP_TABLES:
            rows = conn.execute(sa.select(lookups.c.row).where(lookups.c.table_name == table)).scalars().all()
            frames[table] = pd.DataFrame(list(rows), dtype="str") if rows else pd.DataFrame()
    return frames


#: Source tables whose batches go through transform, checks and load chunk by chunk: the OLTP's traffic. The
#: others (reference data the dimensions join, ``LOOKUP_TABLES`` and the small code tables) are built whole.
STREAMED: tuple[str, ...] = ("transaction", "sales_order", "purchase_order", "payment")


@dataclass
class Spooled:
    """One star-schema table of a cycle on local disk: its chunks (as built, for the load) and its Parquet."""

    name: str
    folder: Path
    rows: int = 0
    chunks: list[Path] = field(default_factory=list)

    @property
    def parquet(self) -> Path:
        return self.folder / f"{self.name}.parquet"

    def frames(self) -> Iterator[pd.DataFrame]:
        """The table's chunks in order, typed as built (one in memory at a time)."""
        for path in self.chunks:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            frame = table.to_pandas(types_mapper=_AS_BUILT.get)
            del table
            yield frame
            del frame
            give_back()


def give_back() -> None:
    """Hand what a finished chunk freed back to the system: Arrow's pool (mimalloc) and glibc's heap both keep
    freed memory for reuse, and the next chunk's arrays, sized differently, did not fit it, so a cycle's RSS rose
    chunk after chunk although no frame outlived its chunk (load peak 545 → 491 MB at 4M rows, same time).
    Fixing glibc's mmap threshold at 128 KiB instead held it flat (472 MB) but cost 10% more time."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): no malloc_trim
        ctypes.CDLL(None).malloc_trim(0)


#: Arrow → the pandas types ``sluice.transforms.totesys`` builds (the others come back as it builds them:
#: decimals as ``Decimal``, dates as ``datetime.date``, times as ``datetime.time``).
_AS_BUILT: dict[pa.DataType, Any] = {
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): pd.StringDtype(),
}


@dataclass
class Built:
    """A cycle's star-schema tables (spooled), and every row it cannot load, with why and its source row."""

    tables: dict[str, Spooled] = field(default_factory=dict)
    failures: pd.DataFrame = field(default_factory=lambda: _no_failures())


class _Builder:
    """Builds, checks and spools the star schema chunk by chunk (see ``build``)."""

    def __init__(self, extracted: Extracted) -> None:
        assert extracted.work is not None, "an extracted batch has a spool folder"
        self.extracted = extracted
        self.folder = extracted.work / "star"
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.built = Built()
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rejections: list[dict[str, object]] = []
        self.failed: dict[str, list[dict[str, object]]] = {}
        self.dates: set[object] = set()

    def add(self, tables: Mapping[str, pd.DataFrame], sources: Mapping[str, pd.DataFrame]) -> None:
        """Spool and check star-schema chunks built from ``sources`` (source table → its rows in this chunk)."""
        offsets: dict[str, int] = {}
        for name, frame in tables.items():
            if frame.empty:
                continue
            spooled = self.built.tables.setdefault(name, Spooled(name, self.folder))
            offsets[name] = spooled.rows
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = self.writers.get(name)
            if writer is None:
                schema = _arrow_schema(name, table.schema)
                writer = self.writers[name] = pq.ParquetWriter(spooled.parquet, schema)
            table = table.cast(writer.schema)
            writer.write_table(table)  # one row group per chunk
            path = self.folder / f"{name}-{len(spooled.chunks):05d}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as chunk:
                chunk.write_table(table)  # for the load: Arrow IPC, read back without parsing
            spooled.chunks.append(path)
            spooled.rows += len(frame)
        self._check(tables, sources, offsets)

    def _check(
        self, tables: Mapping[str, pd.DataFrame], sources: Mapping[str, pd.DataFrame], offsets: dict[str, int]
    ) -> None:
        index: dict[str, dict[str, list[Any]]] = {}
        failed = checks.failure_cases(
            {name: (MODELS[name], frame) for name, frame in tables.items() if not frame.empty}
        )
        for case in failed.to_dict("records"):
            name = str(case["table"])
            source: dict[str, object] = {}
            origin = SOURCES.get(name)
            frame = tables[name]
            has_row = case["row"] is not None and not pd.isna(case["row"])
            if origin is not None and has_row:
                key = frame[origin[1]].iloc[int(case["row"]) - 1]
                stamp = _version(frame.iloc[int(case["row"]) - 1]) if name in FACTS else None
                source = _source(self.extracted, sources, origin[0], str(key), stamp, index)
            if has_row:
                case["row"] = int(case["row"]) + offsets.get(name, 0)
            where = f"{name} row {int(case['row'])}" if has_row else name
            came = f"; from {source['source_table']} {source['source_id']}" if source else ""
            if "batch_row" in source:
                came += f" (row {source['batch_row']} of {source['batch']})"
            reason = f"{where}, column {case['column']}: {case['check']} (value {case['value']!r}){came}"
            self.failed.setdefault(name, []).append({**case, **source, "reason": reason})

    def reject(self, rejected: list[Rejection], sources: Mapping[str, pd.DataFrame]) -> None:
        """Rows the transform set aside (a value that cannot be typed, a reference to a row that is nowhere)."""
        index: dict[str, dict[str, list[Any]]] = {}
        for rejection in rejected:
            source = _source(
                self.extracted, sources, rejection.table, rejection.row_id, rejection.last_updated, index
            )
            where = f" (row {source['batch_row']} of {source['batch']})" if "batch_row" in source else ""
            self.rejections.append(
                {
                    "table": rejection.table,
                    "row": source.get("batch_row"),
                    "column": rejection.column,
                    "check": f"is {rejection.what}",
                    "value": rejection.value,
                    **source,
                    "reason": rejection.reason + where,
                }
            )

    def finish(self) -> Built:
        for writer in self.writers.values():
            writer.close()
        order = [*DIMENSIONS, *FACTS]
        self.built.tables = {name: self.built.tables[name] for name in order if name in self.built.tables}
        records = [*self.rejections, *(r for name in order for r in self.failed.get(name, []))]
        if records:
            self.built.failures = pd.DataFrame(records).reindex(columns=[*checks.COLUMNS, *SOURCE_COLUMNS])
        return self.built


def _arrow_schema(name: str, inferred: pa.Schema) -> pa.Schema:
    """The Parquet schema of a star-schema table: from its warehouse columns (the same for every chunk, whatever
    a chunk's values would let pyarrow infer: a column of only NULLs, a price with more digits)."""
    columns = WAREHOUSE_TABLES[name].c
    fields = []
    for item in inferred:
        kind = columns[item.name].type if item.name in columns else None
        if isinstance(kind, sa.Boolean):
            arrow: pa.DataType = pa.bool_()
        elif isinstance(kind, sa.Integer):
            arrow = pa.int64()
        elif isinstance(kind, sa.Numeric):
            arrow = pa.decimal128(38, kind.scale or 0)
        elif isinstance(kind, sa.Date):
            arrow = pa.date32()
        elif isinstance(kind, sa.Time):
            arrow = pa.time64("us")
        elif isinstance(kind, sa.String):
            arrow = pa.string()
        else:
            arrow = item.type
        fields.append(pa.field(item.name, arrow))
    return pa.schema(fields)


def build(extracted: Extracted, before: Mapping[str, pd.DataFrame]) -> Built:
    """The star schema of the batch, checked, spooled on local disk (``Built.tables``), with every row it cannot
    load (``Built.failures``: set aside by the transform, or failing its table's strict model), so that one
    cycle names every bad row.

    The reference tables (``STREAMED`` aside) are built whole; ``transaction`` and the facts chunk by chunk
    (``SLUICE_CHUNK_ROWS``), each chunk checked and spooled before the next is read; ``dim_date`` last, from the
    set of dates the facts reference. Memory: the reference data, one chunk, and the set of dates."""
    builder = _Builder(extracted)
    try:
        progress.tell("transform the reference tables")
        whole = {t: b.frame() for t, b in extracted.batches.items() if t not in STREAMED}
        rejected: list[Rejection] = []
        builder.add(_star(extracted, whole, before, rejected), whole)
        builder.reject(rejected, whole)
        for table in STREAMED:
            batch = extracted.batches.get(table)
            if batch is None:
                continue
            for chunk in progress.counted(
                batch.chunks(extracted.chunk_rows), f"transform {table}", batch.rows
            ):
                rejected = []
                tables = _star(extracted, {table: chunk}, {}, rejected)
                days = tables.pop("dim_date", None)
                if days is not None:
                    builder.dates.update(days["date_id"].tolist())
                builder.add(tables, {table: chunk})
                builder.reject(rejected, {table: chunk})
                del tables, chunk
                give_back()
        if builder.dates:
            builder.add({"dim_date": dim_date(builder.dates)}, {})
    finally:
        built = builder.finish()
    return built


def _star(
    extracted: Extracted,
    batch: Mapping[str, pd.DataFrame],
    before: Mapping[str, pd.DataFrame],
    rejected: list[Rejection],
) -> dict[str, pd.DataFrame]:
    try:
        return star_schema(batch, before, rejected)
    except BadRow as exc:
        where = extracted.batches[exc.table].uri if exc.table in extracted.batches else "no batch"
        raise BadFile(f"totesys batch of {extracted.run_at:%Y-%m-%d %H:%M:%S}: {exc} (in {where})") from None
    except (ValueError, KeyError) as exc:
        raise BadFile(f"totesys batch of {extracted.run_at:%Y-%m-%d %H:%M:%S}: {exc}") from None


def write_processed(tables: Mapping[str, Spooled], settings: Settings, run_at: datetime) -> dict[str, str]:
    """Each star-schema table of the run as Parquet in the processed zone (one row group per chunk)."""
    zone = processed_zone(settings)
    written: dict[str, str] = {}
    for name, spooled in tables.items():
        progress.tell(f"write {name} (Parquet)")
        uri = storage.join(zone, batch_key(name, run_at, "parquet"))
        storage.put_file(spooled.parquet, uri)
        written[name] = uri
    return written


#: Star-schema table → the source table its rows come from and the column holding that table's id.
SOURCES: dict[str, tuple[str, str]] = {
    "dim_location": ("address", "location_id"),
    "dim_counterparty": ("counterparty", "counterparty_id"),
    "dim_staff": ("staff", "staff_id"),
    "dim_currency": ("currency", "currency_id"),
    "dim_design": ("design", "design_id"),
    "dim_payment_type": ("payment_type", "payment_type_id"),
    "dim_transaction": ("transaction", "transaction_id"),
    "fact_sales_order": ("sales_order", "sales_order_id"),
    "fact_purchase_order": ("purchase_order", "purchase_order_id"),
    "fact_payment": ("payment", "payment_id"),
}
#: What the quarantine file adds to ``checks.COLUMNS`` for each failure: why, in one line, and the source row it
#: concerns (its table, id, version, the batch file it came in, its row there, and the row itself as JSON).
SOURCE_COLUMNS = ["reason", "source_table", "source_id", "last_updated", "batch", "batch_row", "source_row"]


def _no_failures() -> pd.DataFrame:
    return pd.DataFrame(columns=[*checks.COLUMNS, *SOURCE_COLUMNS])


def failure_cases(built: Built, extracted: Extracted) -> pd.DataFrame:
    """Every row the cycle cannot load, with why and the source row it came from (found by ``build``).

    The rows the transform set aside (a value that cannot be typed, a reference to a row that is nowhere), then
    every star-schema table against its strict model (``sluice.checks``). Each failure names the source row
    (``SOURCE_COLUMNS``) so that the quarantine file holds what was rejected, not only where."""
    return built.failures


def _version(row: pd.Series) -> str | None:
    """A fact row's source version (``last_updated``) as the source wrote it, to the microsecond."""
    try:
        return datetime.combine(row["last_updated_date"], row["last_updated_time"]).isoformat(sep=" ")
    except (TypeError, KeyError):
        return None


def _source(
    extracted: Extracted,
    sources: Mapping[str, pd.DataFrame],
    table: str,
    row_id: str,
    last_updated: str | None,
    index: dict[str, dict[str, list[Any]]],
) -> dict[str, object]:
    """The batch row of ``table`` with that id (and version, when given; else its latest): where and what it is.

    ``sources``: the batch rows at hand (a whole table, or the chunk the failing row came from), indexed by their
    position in the batch. ``index``: each table's rows by id, made on first need (many failures, one look-up)."""
    batch = extracted.batches.get(table)
    found: dict[str, object] = {"source_table": table, "source_id": row_id}
    if batch is None:
        return found
    frame = sources.get(table)
    if frame is None:
        return {**found, "batch": batch.uri}
    if table not in index:
        ids = frame[f"{table}_id"].map(_id_text)
        index[table] = {k: list(v) for k, v in frame.groupby(ids.to_numpy(), sort=False).groups.items()}
    matches = frame.loc[index[table].get(_id_text(row_id), [])]
    if last_updated is not None and not matches.empty:
        stamps = pd.to_datetime(matches["last_updated"], format="ISO8601", errors="coerce")
        wanted = pd.to_datetime(last_updated, format="ISO8601", errors="coerce")
        same = matches[stamps == wanted] if not pd.isna(wanted) else matches
        matches = same if not same.empty else matches[matches["last_updated"].astype(str) == last_updated]
    if matches.empty:
        return {**found, "batch": batch.uri}
    label = matches.index[-1]
    row = frame.loc[label]
    return {
        **found,
        "last_updated": str(row["last_updated"]),
        "batch": batch.uri,
        "batch_row": int(label) + 1,
        "source_row": json.dumps(
            {k: (None if pd.isna(v) else str(v)) for k, v in row.items()}, ensure_ascii=False
        ),
    }


def _id_text(value: object) -> str:
    """An id as text, one spelling per number (``"2"``, ``"2.0"`` and ``2`` alike)."""
    try:
        number = float(str(value))
    except ValueError:
        return str(value)
    return str(int(number)) if number.is_integer() else str(value)


# --- load -----------------------------------------------------------------------------------------------


def _remember(conn: sa.Connection, extracted: Extracted, overlap: timedelta) -> None:
    """Move watermarks, remember this window's versions and the latest lookup rows (same transaction as the load),
    each batch read back chunk by chunk."""
    for table, batch in extracted.batches.items():
        key = f"{table}_id"
        conn.execute(
            sa.text(
                "INSERT INTO sluice.totesys_watermarks (table_name, last_updated, ingestion_id) "
                "VALUES (:t, :lu, :run) ON CONFLICT (table_name) DO UPDATE SET "
                "last_updated = LEAST(GREATEST(totesys_watermarks.last_updated, EXCLUDED.last_updated), "
                "CAST(:now AS timestamp)), ingestion_id = EXCLUDED.ingestion_id, moved_at = now()"
            ),
            {
                "t": table,
                "lu": batch.max_last_updated,
                "run": extracted.run_id,
                "now": extracted.source_now or batch.max_last_updated,
            },
        )
        mark = conn.execute(
            sa.select(watermarks.c.last_updated).where(watermarks.c.table_name == table)
        ).scalar_one()
        highest: list[int] = []
        seen = _window(batch, extracted.chunk_rows, mark - overlap, highest)
        upsert(conn, recent, seen, keys=_keys(recent), on_conflict="new_versions")
        conn.execute(
            sa.delete(recent).where(recent.c.table_name == table, recent.c.last_updated <= mark - overlap)
        )
        conn.execute(
            sa.text(
                "INSERT INTO sluice.totesys_max_ids (table_name, max_id) VALUES (:t, :m) ON CONFLICT (table_name) "
                "DO UPDATE SET max_id = GREATEST(totesys_max_ids.max_id, EXCLUDED.max_id)"
            ),
            {"t": table, "m": max(highest)},
        )
        if table in LOOKUP_TABLES:  # reference data: whole
            frame = batch.frame()
            rows = pd.DataFrame(
                {
                    "table_name": table,
                    "row_id": _ids(frame[key]),
                    "last_updated": pd.to_datetime(frame["last_updated"], format="ISO8601"),
                    "row": _json_rows(frame),
                }
            )
            # The batch's row is the source's row now, even stamped behind the one loaded before
            # (``transforms.totesys.current``).
            upsert(conn, lookups, [rows], keys=_keys(lookups), on_conflict="update_changed")


def _window(batch: Batch, size: int, after: datetime, highest: list[int]) -> Iterator[pd.DataFrame]:
    """The batch's versions stamped after ``after`` (``sluice.totesys_recent`` rows), chunk by chunk; each
    chunk's greatest id goes into ``highest``."""
    for frame in batch.chunks(size, [f"{batch.table}_id", "last_updated"]):
        stamps = pd.to_datetime(frame["last_updated"], format="ISO8601")
        within = stamps > after
        row_ids = _ids(frame[f"{batch.table}_id"])
        highest.append(int(row_ids.max()))
        yield pd.DataFrame(
            {"table_name": batch.table, "row_id": row_ids[within], "last_updated": stamps[within]}
        )


def _ids(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text).astype("int64")


def _keys(table: sa.Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


def _json_rows(frame: pd.DataFrame) -> list[str]:
    """Each row as a JSON object of its text values (None for missing), as ``read_lookups`` gives them back."""
    text = (
        frame.astype(object)
        .where(frame.notna(), None)
        .to_json(orient="records", lines=True, force_ascii=False)
    )
    # JSON escapes "\n" inside strings: one line per row (not splitlines: U+2028 may stand unescaped in a value)
    return text.split("\n")[: len(frame)]


def load(
    engine: sa.Engine, tables: Mapping[str, Spooled], extracted: Extracted, settings: Settings
) -> dict[str, int]:
    """All of the run's tables, dimensions first, plus the watermarks: one transaction, all or nothing. Each
    table's chunks go through one COPY (one chunk in memory at a time).

    The tables exist already: the flow's ``ensure`` task creates them (``ensure_warehouse``) before extract.
    """
    loaded: dict[str, int] = {}
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": LOCK})
        _refuse_if_superseded(conn, extracted)
        for name in [*DIMENSIONS, *FACTS]:
            spooled = tables.get(name)
            if spooled is not None and spooled.rows:
                table = WAREHOUSE_TABLES[name]
                if name in FACTS:  # a new version appends a row
                    keys, conflict = [FACTS[name], "last_updated_date", "last_updated_time"], "new_versions"
                else:
                    keys, conflict = [DIMENSIONS[name]], "update_changed"
                frames = progress.counted(
                    spooled.frames(),
                    f"load {name}",
                    spooled.rows,
                    f"load {name}: merging {spooled.rows:,} rows",
                )
                loaded[name] = upsert(conn, table, frames, keys=keys, on_conflict=conflict).written
        progress.tell("load: the watermarks")
        _remember(conn, extracted, timedelta(seconds=settings.totesys_overlap_seconds))
        if extracted.snapshot is not None:
            remember_snapshot(conn, extracted.snapshot, extracted.run_id)
    return loaded


def _refuse_if_superseded(conn: sa.Connection, extracted: Extracted) -> None:
    """Another cycle loaded since this one read the watermarks: applying this older read would put back what
    that cycle replaced (a dimension row's previous values), so nothing of this run loads; the next cycle starts
    from the new watermarks. A retry of this run's own committed load is not another cycle."""
    moved = [
        r.table_name
        for r in conn.execute(sa.select(watermarks))
        if r.last_updated != extracted.marks.get(r.table_name) and r.ingestion_id != extracted.run_id
    ]
    if moved:
        raise SluiceError(
            f"another totesys cycle loaded {', '.join(sorted(moved))} while this one ran: nothing of this cycle "
            "was loaded; the next cycle extracts from the new watermarks"
        )


def counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per warehouse table (for reports and the demo)."""
    with engine.connect() as conn:
        return {
            name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for name, table in WAREHOUSE_TABLES.items()
        }


#: The source URL without its password (for the ledger and logs): the warehouse's one redaction.
describe_source = redact


def json_report(extracted: Extracted | None, loaded: Mapping[str, int]) -> dict[str, object]:
    return {
        "extracted": {t: b.rows for t, b in extracted.batches.items()} if extracted else {},
        "loaded": dict(loaded),
    }
