"""Totesys I/O: incremental extraction from the OLTP, the star schema in the warehouse, and its atomic load.

Watermarks live in the warehouse (``sluice.totesys_watermarks``), one per source table: the greatest
``last_updated`` already loaded. Each run re-reads ``SLUICE_TOTESYS_OVERLAP_SECONDS`` behind it so that rows
committed late with an older ``last_updated`` are not missed; versions already loaded inside that window are
remembered (``sluice.totesys_recent``) and dropped, so an idle run extracts nothing. The watermark moves in the
same transaction as the load: it never passes rows that did not load.

Over 350 lines: all of one pipeline's warehouse I/O (the star schema's DDL, zones, extract, Parquet, validation
with quarantine, upserts, watermarks). Its DDL belongs with the other warehouse tables in one declared place.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from psycopg2 import sql
from sqlalchemy.dialects.postgresql import JSONB

from schemas.totesys import MODELS
from sluice import checks, storage
from sluice.errors import BadFile
from sluice.registry import metadata
from sluice.settings import Settings
from sluice.transforms.totesys import DIMENSIONS, FACTS, LOOKUP_TABLES, TABLES, star_schema
from sluice.warehouse import copy_frames, ensure_schema, qualified, raw_connection

logger = logging.getLogger(__name__)

SCHEMA = "warehouse"
LOCK = "sluice.totesys"


def _versioned() -> list[sa.Column]:
    return [
        sa.Column("created_date", sa.Date, sa.ForeignKey(f"{SCHEMA}.dim_date.date_id"), nullable=False),
        sa.Column("created_time", sa.Time, nullable=False),
        sa.Column("last_updated_date", sa.Date, sa.ForeignKey(f"{SCHEMA}.dim_date.date_id"), nullable=False),
        sa.Column("last_updated_time", sa.Time, nullable=False),
    ]


def _fk(table: str, column: str | None = None) -> sa.ForeignKey:
    return sa.ForeignKey(f"{SCHEMA}.{table}.{column or table.removeprefix('dim_') + '_id'}")


dim_date = sa.Table(
    "dim_date",
    metadata,
    sa.Column("date_id", sa.Date, primary_key=True),
    sa.Column("year", sa.Integer, nullable=False),
    sa.Column("month", sa.Integer, nullable=False),
    sa.Column("day", sa.Integer, nullable=False),
    sa.Column("day_of_week", sa.Integer, nullable=False, comment="ISO 8601: 1 = Monday … 7 = Sunday"),
    sa.Column("day_name", sa.Text, nullable=False),
    sa.Column("month_name", sa.Text, nullable=False),
    sa.Column("quarter", sa.Integer, nullable=False),
    schema=SCHEMA,
    comment="Every date a fact references",
)
dim_location = sa.Table(
    "dim_location",
    metadata,
    sa.Column("location_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("address_line_1", sa.Text, nullable=False),
    sa.Column("address_line_2", sa.Text),
    sa.Column("district", sa.Text),
    sa.Column("city", sa.Text, nullable=False),
    sa.Column("postal_code", sa.Text, nullable=False),
    sa.Column("country", sa.Text, nullable=False),
    sa.Column("phone", sa.Text, nullable=False),
    schema=SCHEMA,
)
dim_counterparty = sa.Table(
    "dim_counterparty",
    metadata,
    sa.Column("counterparty_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("counterparty_legal_name", sa.Text, nullable=False),
    sa.Column("counterparty_legal_address_line_1", sa.Text, nullable=False),
    sa.Column("counterparty_legal_address_line2", sa.Text),
    sa.Column("counterparty_legal_district", sa.Text),
    sa.Column("counterparty_legal_city", sa.Text, nullable=False),
    sa.Column("counterparty_legal_postal_code", sa.Text, nullable=False),
    sa.Column("counterparty_legal_country", sa.Text, nullable=False),
    sa.Column("counterparty_legal_phone_number", sa.Text, nullable=False),
    schema=SCHEMA,
)
dim_staff = sa.Table(
    "dim_staff",
    metadata,
    sa.Column("staff_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("first_name", sa.Text, nullable=False),
    sa.Column("last_name", sa.Text, nullable=False),
    sa.Column("department_name", sa.Text, nullable=False),
    sa.Column("location", sa.Text),
    sa.Column("email_address", sa.Text, nullable=False),
    schema=SCHEMA,
)
dim_currency = sa.Table(
    "dim_currency",
    metadata,
    sa.Column("currency_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("currency_code", sa.CHAR(3), nullable=False),
    sa.Column("currency_name", sa.Text, nullable=False),
    schema=SCHEMA,
)
dim_design = sa.Table(
    "dim_design",
    metadata,
    sa.Column("design_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("design_name", sa.Text, nullable=False),
    sa.Column("file_location", sa.Text, nullable=False),
    sa.Column("file_name", sa.Text, nullable=False),
    schema=SCHEMA,
)
dim_payment_type = sa.Table(
    "dim_payment_type",
    metadata,
    sa.Column("payment_type_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("payment_type_name", sa.Text, nullable=False),
    schema=SCHEMA,
)
dim_transaction = sa.Table(
    "dim_transaction",
    metadata,
    sa.Column("transaction_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("transaction_type", sa.Text, nullable=False),
    sa.Column("sales_order_id", sa.Integer),
    sa.Column("purchase_order_id", sa.Integer),
    sa.CheckConstraint(
        "(sales_order_id IS NULL) <> (purchase_order_id IS NULL)", name="ck_transaction_one_order"
    ),
    schema=SCHEMA,
)
fact_sales_order = sa.Table(
    "fact_sales_order",
    metadata,
    sa.Column("sales_record_id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("sales_order_id", sa.Integer, nullable=False),
    *_versioned(),
    sa.Column("sales_staff_id", sa.Integer, _fk("dim_staff"), nullable=False),
    sa.Column("counterparty_id", sa.Integer, _fk("dim_counterparty"), nullable=False),
    sa.Column("units_sold", sa.Integer, nullable=False),
    sa.Column("unit_price", sa.Numeric(10, 2), nullable=False),
    sa.Column("currency_id", sa.Integer, _fk("dim_currency"), nullable=False),
    sa.Column("design_id", sa.Integer, _fk("dim_design"), nullable=False),
    sa.Column("agreed_payment_date", sa.Date, _fk("dim_date", "date_id"), nullable=False),
    sa.Column("agreed_delivery_date", sa.Date, _fk("dim_date", "date_id"), nullable=False),
    sa.Column("agreed_delivery_location_id", sa.Integer, _fk("dim_location"), nullable=False),
    sa.UniqueConstraint(
        "sales_order_id", "last_updated_date", "last_updated_time", name="uq_sales_order_version"
    ),
    schema=SCHEMA,
    comment="One row per version of a sales order (a new last_updated appends a row)",
)
fact_purchase_order = sa.Table(
    "fact_purchase_order",
    metadata,
    sa.Column("purchase_record_id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("purchase_order_id", sa.Integer, nullable=False),
    *_versioned(),
    sa.Column("staff_id", sa.Integer, _fk("dim_staff"), nullable=False),
    sa.Column("counterparty_id", sa.Integer, _fk("dim_counterparty"), nullable=False),
    sa.Column("item_code", sa.Text, nullable=False),
    sa.Column("item_quantity", sa.Integer, nullable=False),
    sa.Column("item_unit_price", sa.Numeric(10, 2), nullable=False),
    sa.Column("currency_id", sa.Integer, _fk("dim_currency"), nullable=False),
    sa.Column("agreed_delivery_date", sa.Date, _fk("dim_date", "date_id"), nullable=False),
    sa.Column("agreed_payment_date", sa.Date, _fk("dim_date", "date_id"), nullable=False),
    sa.Column("agreed_delivery_location_id", sa.Integer, _fk("dim_location"), nullable=False),
    sa.UniqueConstraint(
        "purchase_order_id", "last_updated_date", "last_updated_time", name="uq_purchase_order_version"
    ),
    schema=SCHEMA,
    comment="One row per version of a purchase order",
)
fact_payment = sa.Table(
    "fact_payment",
    metadata,
    sa.Column("payment_record_id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("payment_id", sa.Integer, nullable=False),
    *_versioned(),
    sa.Column("transaction_id", sa.Integer, _fk("dim_transaction"), nullable=False),
    sa.Column("counterparty_id", sa.Integer, _fk("dim_counterparty"), nullable=False),
    sa.Column("payment_amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency_id", sa.Integer, _fk("dim_currency"), nullable=False),
    sa.Column("payment_type_id", sa.Integer, _fk("dim_payment_type"), nullable=False),
    sa.Column("paid", sa.Boolean, nullable=False),
    sa.Column("payment_date", sa.Date, _fk("dim_date", "date_id"), nullable=False),
    sa.UniqueConstraint("payment_id", "last_updated_date", "last_updated_time", name="uq_payment_version"),
    schema=SCHEMA,
    comment="One row per version of a payment (account numbers dropped)",
)

WAREHOUSE_TABLES: dict[str, sa.Table] = {
    t.name: t
    for t in (
        dim_date,
        dim_location,
        dim_counterparty,
        dim_staff,
        dim_currency,
        dim_design,
        dim_payment_type,
        dim_transaction,
        fact_sales_order,
        fact_purchase_order,
        fact_payment,
    )
}

watermarks = sa.Table(
    "totesys_watermarks",
    metadata,
    sa.Column("table_name", sa.Text, primary_key=True),
    sa.Column("last_updated", sa.DateTime, nullable=False, comment="Greatest source last_updated loaded"),
    sa.Column("ingestion_id", sa.Uuid, nullable=False),
    sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    schema="sluice",
    comment="Totesys: per source table, how far the warehouse has loaded",
)
recent = sa.Table(
    "totesys_recent",
    metadata,
    sa.Column("table_name", sa.Text, primary_key=True),
    sa.Column("row_id", sa.BigInteger, primary_key=True),
    sa.Column("last_updated", sa.DateTime, primary_key=True),
    schema="sluice",
    comment="Totesys: versions loaded inside the overlap window (an idle run re-reads and drops them)",
)
lookups = sa.Table(
    "totesys_lookups",
    metadata,
    sa.Column("table_name", sa.Text, primary_key=True),
    sa.Column("row_id", sa.BigInteger, primary_key=True),
    sa.Column("last_updated", sa.DateTime, nullable=False),
    sa.Column("row", JSONB, nullable=False),
    schema="sluice",
    comment="Totesys: latest source rows that dimensions join to (departments, addresses, staff, counterparties)",
)
BOOKKEEPING = (watermarks, recent, lookups)


# --- zones ----------------------------------------------------------------------------------------------


def ingestion_zone(settings: Settings) -> str:
    return settings.totesys_ingestion_uri or storage.join(settings.zone("staging"), "totesys/ingestion")


def processed_zone(settings: Settings) -> str:
    return settings.totesys_processed_uri or storage.join(settings.zone("staging"), "totesys/processed")


def batch_key(table: str, at: datetime, suffix: str = "csv") -> str:
    """``{table}/{YYYY}/{MM}/{DD}/{HH-MM}/{table}-{YYYY-MM-DD_HH.MM.SS}.{suffix}``."""
    return f"{table}/{at:%Y/%m/%d/%H-%M}/{table}-{at:%Y-%m-%d_%H.%M.%S}.{suffix}"


# --- warehouse set-up -----------------------------------------------------------------------------------


# Columns once named differently by Sluice: (table, old name, name in the Totesys warehouse schema its users query).
RENAMED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("dim_counterparty", "counterparty_legal_address_line_2", "counterparty_legal_address_line2"),
)


def ensure_warehouse(engine: sa.Engine) -> None:
    """Create what is missing and rename old column names in place (idempotent, under the DDL lock)."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('sluice.ddl'))"))
        ensure_schema(conn, SCHEMA)
        ensure_schema(conn, "sluice")
        migrate_column_names(conn)
        metadata.create_all(conn, tables=[*WAREHOUSE_TABLES.values(), *BOOKKEEPING])


def migrate_column_names(conn: sa.Connection) -> list[str]:
    """``ALTER TABLE … RENAME COLUMN`` for each old name still present (and its new name absent): data stays."""
    done: list[str] = []
    for table, old, new in RENAMED_COLUMNS:
        present = set(
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = :s AND table_name = :t AND column_name IN (:old, :new)"
                ),
                {"s": SCHEMA, "t": table, "old": old, "new": new},
            ).scalars()
        )
        if old in present and new not in present:
            with raw_connection(conn) as cursor:
                cursor.execute(
                    sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                        qualified(f"{SCHEMA}.{table}"), sql.Identifier(old), sql.Identifier(new)
                    )
                )
            logger.info("warehouse.%s: column %s renamed to %s", table, old, new)
            done.append(f"{table}.{old} → {new}")
    return done


def read_watermarks(engine: sa.Engine) -> dict[str, datetime]:
    with engine.connect() as conn:
        return {r.table_name: r.last_updated for r in conn.execute(sa.select(watermarks))}


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

    @property
    def rows(self) -> int:
        return sum(len(b.frame) for b in self.batches.values())


def _read_since(source: sa.Engine, table: str, since: datetime | None) -> pd.DataFrame:
    """The table's rows with ``last_updated > since`` (all when None), every value as text, via COPY."""
    where = sql.SQL("WHERE last_updated > {}").format(sql.Literal(since)) if since else sql.SQL("")
    query = sql.SQL(
        "COPY (SELECT * FROM {} {} ORDER BY last_updated, {}) TO STDOUT WITH (FORMAT csv, HEADER)"
    ).format(sql.Identifier(table), where, sql.Identifier(f"{table}_id"))
    buffer = io.BytesIO()
    with source.begin() as conn, raw_connection(conn) as cursor:
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.copy_expert(query, buffer)
    buffer.seek(0)
    return pd.read_csv(buffer, dtype=str, keep_default_na=False)


def _seen(engine: sa.Engine, table: str, since: datetime) -> set[tuple[int, datetime]]:
    query = sa.select(recent.c.row_id, recent.c.last_updated).where(
        recent.c.table_name == table, recent.c.last_updated > since
    )
    with engine.connect() as conn:
        return {(int(r.row_id), r.last_updated) for r in conn.execute(query)}


def extract(
    source: sa.Engine, warehouse: sa.Engine, settings: Settings, run_at: datetime, run_id: uuid.UUID
) -> Extracted:
    """Each table's rows changed since its watermark (minus the overlap), new versions only, to the ingestion zone."""
    marks = read_watermarks(warehouse)
    overlap = timedelta(seconds=settings.totesys_overlap_seconds)
    result = Extracted(run_at=run_at, run_id=run_id)
    zone = ingestion_zone(settings)
    for table in TABLES:
        mark = marks.get(table)
        since = mark - overlap if mark else None
        frame = _read_since(source, table, since)
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
        result.batches[table] = Batch(table, frame.reset_index(drop=True), uri, stamps.max().to_pydatetime())
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


def _columns(table: sa.Table) -> list[str]:
    return [c.name for c in table.columns if c.identity is None]


def _upsert(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """COPY into a temp table, then insert new keys / update changed rows (dims) or append new versions (facts)."""
    columns = _columns(table)
    target = f"{table.schema}.{table.name}"
    staging = f"_totesys_{table.name}"
    column_list = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    with raw_connection(conn) as cursor:
        cursor.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                sql.Identifier(staging), column_list, qualified(target)
            )
        )
    copy_frames(conn, staging, columns, [frame[columns]])
    if table.name in FACTS:
        key = [FACTS[table.name], "last_updated_date", "last_updated_time"]
        on_conflict = sql.SQL("ON CONFLICT ({}) DO NOTHING").format(
            sql.SQL(", ").join(sql.Identifier(k) for k in key)
        )
        order = sql.SQL("ORDER BY {}").format(sql.SQL(", ").join(sql.Identifier(k) for k in key))
    else:
        key_column = DIMENSIONS[table.name]
        others = [c for c in columns if c != key_column]
        on_conflict = sql.SQL(
            "ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})"
        ).format(
            key=sql.Identifier(key_column),
            sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others),
            old=sql.SQL(", ").join(
                sql.SQL("{}.{}").format(sql.Identifier(table.name), sql.Identifier(c)) for c in others
            ),
            new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in others),
        )
        order = sql.SQL("")
    insert = sql.SQL("INSERT INTO {} AS {} ({}) SELECT {} FROM {} {} {}").format(
        qualified(target),
        sql.Identifier(table.name),
        column_list,
        column_list,
        sql.Identifier(staging),
        order,
        on_conflict,
    )
    with raw_connection(conn) as cursor:
        cursor.execute(insert)
        return cursor.rowcount


def _json_rows(frame: pd.DataFrame) -> str:
    return frame.astype(object).where(frame.notna(), None).to_json(orient="records", force_ascii=False)


def _remember(conn: sa.Connection, extracted: Extracted, overlap: timedelta) -> None:
    """Move watermarks, remember this window's versions and the latest lookup rows (same transaction as the load)."""
    for table, batch in extracted.batches.items():
        key = f"{table}_id"
        conn.execute(
            sa.text(
                "INSERT INTO sluice.totesys_watermarks (table_name, last_updated, ingestion_id) "
                "VALUES (:t, :lu, :run) ON CONFLICT (table_name) DO UPDATE SET "
                "last_updated = GREATEST(totesys_watermarks.last_updated, EXCLUDED.last_updated), "
                "ingestion_id = EXCLUDED.ingestion_id, moved_at = now()"
            ),
            {"t": table, "lu": batch.max_last_updated, "run": extracted.run_id},
        )
        mark = conn.execute(
            sa.text("SELECT last_updated FROM sluice.totesys_watermarks WHERE table_name = :t"), {"t": table}
        ).scalar_one()
        window = batch.frame[pd.to_datetime(batch.frame["last_updated"], format="ISO8601") > mark - overlap]
        conn.execute(
            sa.text(
                "INSERT INTO sluice.totesys_recent (table_name, row_id, last_updated) "
                "SELECT :t, (r->>'id')::bigint, (r->>'last_updated')::timestamp "
                "FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r ON CONFLICT DO NOTHING"
            ),
            {"t": table, "rows": _json_rows(window[[key, "last_updated"]].rename(columns={key: "id"}))},
        )
        conn.execute(
            sa.text("DELETE FROM sluice.totesys_recent WHERE table_name = :t AND last_updated <= :edge"),
            {"t": table, "edge": mark - overlap},
        )
        if table in LOOKUP_TABLES:
            conn.execute(
                sa.text(
                    "INSERT INTO sluice.totesys_lookups AS l (table_name, row_id, last_updated, row) "
                    "SELECT :t, (r->>:key)::bigint, (r->>'last_updated')::timestamp, r "
                    "FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r "
                    "ON CONFLICT (table_name, row_id) DO UPDATE SET last_updated = EXCLUDED.last_updated, "
                    "row = EXCLUDED.row WHERE EXCLUDED.last_updated >= l.last_updated"
                ),
                {"t": table, "key": key, "rows": _json_rows(batch.frame)},
            )


def load(
    engine: sa.Engine, tables: Mapping[str, pd.DataFrame], extracted: Extracted, settings: Settings
) -> dict[str, int]:
    """All of the run's tables, dimensions first, plus the watermarks: one transaction, all or nothing."""
    ensure_warehouse(engine)
    loaded: dict[str, int] = {}
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": LOCK})
        for name in [*DIMENSIONS, *FACTS]:
            if name in tables and not tables[name].empty:
                loaded[name] = _upsert(conn, WAREHOUSE_TABLES[name], tables[name])
        _remember(conn, extracted, timedelta(seconds=settings.totesys_overlap_seconds))
    return loaded


def counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per warehouse table (for reports and the demo)."""
    with engine.connect() as conn:
        return {
            name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for name, table in WAREHOUSE_TABLES.items()
        }


def describe_source(url: str) -> str:
    """The source URL without its password (for the ledger and logs)."""
    return sa.make_url(url).render_as_string(hide_password=True)


def json_report(extracted: Extracted | None, loaded: Mapping[str, int]) -> dict[str, object]:
    return {
        "extracted": {t: len(b.frame) for t, b in extracted.batches.items()} if extracted else {},
        "loaded": dict(loaded),
    }
