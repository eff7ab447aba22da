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

import io
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from psycopg2 import sql

from schemas.totesys import MODELS
from sluice import checks
from sluice.adapters import storage
from sluice.adapters.totesys_source import readable_errors
from sluice.adapters.warehouse import raw_connection, redact, upsert
from sluice.errors import BadFile, SluiceError
from sluice.settings import Settings
from sluice.tables import ensure
from sluice.tables.totesys import BOOKKEEPING, WAREHOUSE_TABLES, lookups, max_ids, recent, watermarks
from sluice.tables.totesys import SCHEMA as SCHEMA
from sluice.transforms.totesys import (
    DIMENSIONS,
    FACTS,
    LOOKUP_TABLES,
    TABLES,
    BadRow,
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
    """One source table's new rows of this run."""

    table: str
    frame: pd.DataFrame
    uri: str
    max_last_updated: datetime


@dataclass
class Extracted:
    run_at: datetime
    run_id: uuid.UUID
    batches: dict[str, Batch] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    #: The watermarks this run read from (``load`` refuses to apply the run if another cycle moved them since).
    marks: dict[str, datetime] = field(default_factory=dict)
    #: The source's clock when its snapshot was taken: no watermark moves past it.
    source_now: datetime | None = None
    #: Why nothing was extracted, when it is not "no new data" (another cycle is running).
    note: str | None = None

    @property
    def rows(self) -> int:
        return sum(len(b.frame) for b in self.batches.values())


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


def _read_since(cursor: Any, table: str, since: datetime | None, above: int | None = None) -> pd.DataFrame:
    """The table's rows with ``last_updated > since`` or an id above ``above`` (all when ``since`` is None),
    every value as text, via COPY."""
    where = sql.SQL("")
    if since is not None:
        where = sql.SQL("WHERE last_updated > {}").format(sql.Literal(since))
        if above is not None:
            where = sql.SQL("{} OR {} > {}").format(where, sql.Identifier(f"{table}_id"), sql.Literal(above))
    query = sql.SQL(
        "COPY (SELECT * FROM {} {} ORDER BY last_updated, {}) TO STDOUT WITH (FORMAT csv, HEADER)"
    ).format(sql.Identifier(table), where, sql.Identifier(f"{table}_id"))
    buffer = io.BytesIO()
    cursor.copy_expert(query, buffer)
    buffer.seek(0)
    frame = pd.read_csv(buffer, dtype=str, keep_default_na=False, encoding="utf-8")
    for column in STAMPS:
        if column in frame.columns:
            frame[column] = frame[column].str.replace(_OFFSET, r"\1", regex=True)
    return frame


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
    result = Extracted(run_at=run_at, run_id=run_id, marks=dict(marks))
    frames: dict[str, tuple[pd.DataFrame, datetime | None]] = {}
    with readable_errors(source.url), source.begin() as conn, raw_connection(conn) as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT clock_timestamp()::timestamp")  # the first query takes the snapshot
        source_now: datetime = cursor.fetchone()[0]
        result.source_now = source_now
        _check_shape(cursor)
        for table in TABLES:
            mark = marks.get(table)
            # A watermark ahead of the source's clock (written before it was capped) reads from the clock.
            since = min(mark, source_now) - overlap if mark else None
            # New rows are also found by id: one inserted with a stamp behind the window (a slow application
            # clock, a transaction open longer than the overlap) is still read.
            frames[table] = (_read_since(cursor, table, since, highest.get(table)), since)
    zone = ingestion_zone(settings)
    for table, (frame, since) in frames.items():
        result.read[table] = len(frame)
        if frame.empty:
            continue
        stamps = pd.to_datetime(frame["last_updated"], format="ISO8601")
        if since is not None:
            seen = _seen(warehouse, table, since)
            if seen:
                ids = pd.to_numeric(frame[f"{table}_id"]).astype("int64")
                known = [(i, t.to_pydatetime()) in seen for i, t in zip(ids, stamps, strict=True)]
                keep = ~pd.Series(known, index=frame.index)
                frame, stamps = frame[keep], stamps[keep]
        if frame.empty:
            continue
        uri = storage.join(zone, batch_key(table, run_at))
        out = io.StringIO()
        frame.to_csv(out, index=False)
        storage.put_bytes(out.getvalue().encode(), uri)
        # A row stamped ahead of the source's clock (a clock that was fast) loads now, but the watermark stops at
        # the clock: rows stamped correctly afterwards are still above it. The stamped-ahead row is re-read (and
        # dropped as already loaded, ``sluice.totesys_recent``) until the clock passes it.
        newest = min(stamps.max().to_pydatetime(), source_now)
        result.batches[table] = Batch(table, frame.reset_index(drop=True), uri, newest)
    return result


# --- transform + validate -------------------------------------------------------------------------------


def read_lookups(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    """The latest rows of the tables dimensions join to, as loaded by earlier runs (text, like a batch)."""
    frames: dict[str, pd.DataFrame] = {}
    with engine.connect() as conn:
        for table in LOOKUP_TABLES:
            rows = conn.execute(sa.select(lookups.c.row).where(lookups.c.table_name == table)).scalars().all()
            frames[table] = pd.DataFrame(list(rows), dtype="str") if rows else pd.DataFrame()
    return frames


def build(extracted: Extracted, before: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    batch = {name: b.frame for name, b in extracted.batches.items()}
    try:
        return star_schema(batch, before)
    except BadRow as exc:
        where = extracted.batches[exc.table].uri if exc.table in extracted.batches else "no batch"
        raise BadFile(f"totesys batch of {extracted.run_at:%Y-%m-%d %H:%M:%S}: {exc} (in {where})") from None
    except (ValueError, KeyError) as exc:
        raise BadFile(f"totesys batch of {extracted.run_at:%Y-%m-%d %H:%M:%S}: {exc}") from None


def write_processed(
    tables: Mapping[str, pd.DataFrame], settings: Settings, run_at: datetime
) -> dict[str, str]:
    """Each star-schema table of the run as Parquet in the processed zone."""
    zone = processed_zone(settings)
    written: dict[str, str] = {}
    for name, frame in tables.items():
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        uri = storage.join(zone, batch_key(name, run_at, "parquet"))
        storage.put_bytes(buffer.getvalue(), uri)
        written[name] = uri
    return written


def failure_cases(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every star-schema table against its strict model: the failed checks (``sluice.checks``); pure."""
    return checks.failure_cases({name: (MODELS[name], frame) for name, frame in tables.items()})


# --- load -----------------------------------------------------------------------------------------------


def _remember(conn: sa.Connection, extracted: Extracted, overlap: timedelta) -> None:
    """Move watermarks, remember this window's versions and the latest lookup rows (same transaction as the load)."""
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
        stamps = pd.to_datetime(batch.frame["last_updated"], format="ISO8601")
        window = stamps > mark - overlap
        seen = pd.DataFrame(
            {
                "table_name": table,
                "row_id": _ids(batch.frame.loc[window, key]),
                "last_updated": stamps[window],
            }
        )
        upsert(conn, recent, [seen], keys=_keys(recent), on_conflict="new_versions")
        conn.execute(
            sa.delete(recent).where(recent.c.table_name == table, recent.c.last_updated <= mark - overlap)
        )
        conn.execute(
            sa.text(
                "INSERT INTO sluice.totesys_max_ids (table_name, max_id) VALUES (:t, :m) ON CONFLICT (table_name) "
                "DO UPDATE SET max_id = GREATEST(totesys_max_ids.max_id, EXCLUDED.max_id)"
            ),
            {"t": table, "m": int(_ids(batch.frame[key]).max())},
        )
        if table in LOOKUP_TABLES:
            rows = pd.DataFrame(
                {
                    "table_name": table,
                    "row_id": _ids(batch.frame[key]),
                    "last_updated": stamps,
                    "row": _json_rows(batch.frame),
                }
            )
            upsert(
                conn, lookups, [rows], keys=_keys(lookups), on_conflict="update_changed", newer="last_updated"
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
    engine: sa.Engine, tables: Mapping[str, pd.DataFrame], extracted: Extracted, settings: Settings
) -> dict[str, int]:
    """All of the run's tables, dimensions first, plus the watermarks: one transaction, all or nothing.

    The tables exist already: the flow's ``ensure`` task creates them (``ensure_warehouse``) before extract.
    """
    loaded: dict[str, int] = {}
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": LOCK})
        _refuse_if_superseded(conn, extracted)
        for name in [*DIMENSIONS, *FACTS]:
            if name in tables and not tables[name].empty:
                table = WAREHOUSE_TABLES[name]
                if name in FACTS:  # a new version appends a row
                    keys, conflict = [FACTS[name], "last_updated_date", "last_updated_time"], "new_versions"
                else:
                    keys, conflict = [DIMENSIONS[name]], "update_changed"
                loaded[name] = upsert(conn, table, [tables[name]], keys=keys, on_conflict=conflict).written
        _remember(conn, extracted, timedelta(seconds=settings.totesys_overlap_seconds))
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
        "extracted": {t: len(b.frame) for t, b in extracted.batches.items()} if extracted else {},
        "loaded": dict(loaded),
    }
