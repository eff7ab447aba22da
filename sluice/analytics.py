"""Data2bots analytics I/O: read staging, load the ``if_common`` dimensions and ``analytics`` tables, export CSVs.

Each analytics table is keyed by ``ingestion_date``: a re-run for the same day replaces that day's row, in the
same transaction as the dimensions and the run record (``analytics.runs``: at most one run per day unless forced).
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from psycopg2 import sql

from schemas.data2bots import AggPublicHoliday, AggShipments, BestPerformingProduct, DimDates, DimProducts
from sluice import storage
from sluice.errors import BadFile, SluiceError
from sluice.ingest import validate_table
from sluice.registry import metadata
from sluice.settings import Settings
from sluice.transforms import data2bots as rules
from sluice.warehouse import copy_frames, ensure_schema, qualified, raw_connection

dim_dates = sa.Table(
    "dim_dates",
    metadata,
    sa.Column("calendar_dt", sa.Date, primary_key=True),
    sa.Column("year_num", sa.Integer, nullable=False),
    sa.Column("month_of_the_year_num", sa.Integer, nullable=False),
    sa.Column("day_of_the_month_num", sa.Integer, nullable=False),
    sa.Column("day_of_the_week_num", sa.Integer, nullable=False, comment="1 = Monday … 7 = Sunday"),
    sa.Column("working_day", sa.Boolean, nullable=False),
    schema="if_common",
)
dim_products = sa.Table(
    "dim_products",
    metadata,
    sa.Column("product_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("product_category", sa.Text, nullable=False),
    sa.Column("product_name", sa.Text, nullable=False),
    schema="if_common",
)
agg_public_holiday = sa.Table(
    "agg_public_holiday",
    metadata,
    sa.Column("ingestion_date", sa.Date, primary_key=True),
    *[sa.Column(c, sa.Integer, nullable=False) for c in rules.MONTH_COLUMNS],
    schema="analytics",
)
agg_shipments = sa.Table(
    "agg_shipments",
    metadata,
    sa.Column("ingestion_date", sa.Date, primary_key=True),
    sa.Column("tt_late_shipments", sa.Integer, nullable=False),
    sa.Column("tt_undelivered_items", sa.Integer, nullable=False),
    schema="analytics",
)
best_performing_product = sa.Table(
    "best_performing_product",
    metadata,
    sa.Column("ingestion_date", sa.Date, primary_key=True),
    sa.Column("product_id", sa.BigInteger, nullable=False),
    sa.Column("product_name", sa.Text),
    sa.Column("most_ordered_day", sa.Date),
    sa.Column("is_public_holiday", sa.Boolean),
    sa.Column("tt_review_points", sa.Integer, nullable=False),
    *[sa.Column(c, sa.Numeric(5, 2), nullable=False) for c in rules.STAR_COLUMNS],
    sa.Column("pct_early_shipments", sa.Numeric(5, 2), nullable=False),
    sa.Column("pct_late_shipments", sa.Numeric(5, 2), nullable=False),
    schema="analytics",
)
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("ingestion_date", sa.Date, primary_key=True),
    sa.Column("ingestion_id", sa.Uuid, nullable=False),
    sa.Column("forced", sa.Boolean, nullable=False),
    sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    schema="analytics",
    comment="One row per ingestion_date analysed: the at-most-once-a-day guard",
)
ANALYTICS: dict[str, tuple[sa.Table, type]] = {
    "agg_public_holiday": (agg_public_holiday, AggPublicHoliday),
    "agg_shipments": (agg_shipments, AggShipments),
    "best_performing_product": (best_performing_product, BestPerformingProduct),
}
DIMENSIONS: dict[str, tuple[sa.Table, type]] = {
    "dim_dates": (dim_dates, DimDates),
    "dim_products": (dim_products, DimProducts),
}


class NotReady(SluiceError):
    """Staging has no orders yet (nothing to analyse)."""


# --- reference data -------------------------------------------------------------------------------------


def _reference(configured: str | None, shipped: str) -> bytes:
    if configured:
        return storage.read_bytes(configured) if storage.is_s3(configured) else Path(configured).read_bytes()
    return resources.files("sluice.data").joinpath(shipped).read_bytes()


def read_holidays(settings: Settings) -> list[dt.date]:
    frame = pd.read_csv(io.BytesIO(_reference(settings.holidays_file, "public_holidays.csv")), dtype=str)
    if "date" not in frame:
        raise BadFile(f"{settings.holidays_file}: the holiday list needs a 'date' column (YYYY-MM-DD)")
    parsed = pd.to_datetime(frame["date"].str.strip(), format="%Y-%m-%d", errors="coerce")
    if parsed.isna().any():
        bad = frame["date"][parsed.isna()].iloc[0]
        raise BadFile(f"{settings.holidays_file or 'public_holidays.csv'}: {bad!r} is not a YYYY-MM-DD date")
    return list(parsed.dt.date)


def read_products(settings: Settings) -> pd.DataFrame:
    raw = pd.read_csv(io.BytesIO(_reference(settings.products_file, "products.csv")), dtype=str)
    missing = {"product_id", "product_category", "product_name"} - set(raw.columns)
    if missing:
        raise BadFile(f"{settings.products_file}: products need columns {', '.join(sorted(missing))}")
    return pd.DataFrame(
        {
            "product_id": pd.to_numeric(raw["product_id"], errors="coerce").astype("Int64"),
            "product_category": raw["product_category"].astype("string"),
            "product_name": raw["product_name"].astype("string"),
        }
    )


# --- staging --------------------------------------------------------------------------------------------


def _read(conn: sa.Connection, query: str) -> pd.DataFrame:
    result = conn.execute(sa.text(query))
    return pd.DataFrame(result.all(), columns=list(result.keys()))


def read_staging(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    """The three staging tables, typed as the transforms expect (dates as ``datetime.date``)."""
    with engine.connect() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass('staging.orders') IS NOT NULL")).scalar_one()
        if not exists:
            raise NotReady(
                "no orders in staging yet: land and ingest orders, reviews and shipment_deliveries first"
            )
        orders = _read(conn, "SELECT order_id, order_date, product_id FROM staging.orders")
        reviews = (
            _read(conn, "SELECT review, product_id FROM staging.reviews")
            if conn.execute(sa.text("SELECT to_regclass('staging.reviews') IS NOT NULL")).scalar_one()
            else pd.DataFrame(columns=["review", "product_id"])
        )
        shipments = (
            _read(
                conn,
                "SELECT shipment_id, order_id, shipment_date, delivery_date FROM staging.shipment_deliveries",
            )
            if conn.execute(
                sa.text("SELECT to_regclass('staging.shipment_deliveries') IS NOT NULL")
            ).scalar_one()
            else pd.DataFrame(columns=["shipment_id", "order_id", "shipment_date", "delivery_date"])
        )
    if orders.empty:
        raise NotReady(
            "no orders in staging yet: land and ingest orders, reviews and shipment_deliveries first"
        )
    for frame, columns in ((orders, ("order_id", "product_id")), (reviews, ("review", "product_id"))):
        for column in columns:
            frame[column] = frame[column].astype("int64")
    shipments["shipment_date"] = (
        shipments["shipment_date"].astype(object).where(shipments["shipment_date"].notna(), None)
    )
    shipments["delivery_date"] = (
        shipments["delivery_date"].astype(object).where(shipments["delivery_date"].notna(), None)
    )
    return {"orders": orders, "reviews": reviews, "shipments": shipments}


def latest_order_date(staging: Mapping[str, pd.DataFrame]) -> dt.date:
    return max(staging["orders"]["order_date"])


def already_ran(engine: sa.Engine, as_of: dt.date) -> bool:
    with engine.connect() as conn:
        if not conn.execute(sa.text("SELECT to_regclass('analytics.runs') IS NOT NULL")).scalar_one():
            return False
        return (
            conn.execute(sa.select(runs.c.ingestion_date).where(runs.c.ingestion_date == as_of)).first()
            is not None
        )


# --- build + validate -----------------------------------------------------------------------------------


def build(staging: Mapping[str, pd.DataFrame], settings: Settings, as_of: dt.date) -> dict[str, pd.DataFrame]:
    """Dimensions and the three analytics rows for ``as_of`` (pure rules; reference data read here)."""
    start, end = rules.date_span(staging["orders"], as_of)
    dates = rules.dim_dates(start, end, read_holidays(settings))
    products = read_products(settings)
    orders, reviews, shipments = staging["orders"], staging["reviews"], staging["shipments"]
    return {
        "dim_dates": dates,
        "dim_products": products,
        "agg_public_holiday": rules.agg_public_holiday(orders, dates, as_of),
        "agg_shipments": rules.agg_shipments(orders, shipments, as_of),
        "best_performing_product": rules.best_performing_product(
            orders, reviews, shipments, products, dates, as_of
        ),
    }


def validate(tables: Mapping[str, pd.DataFrame]) -> None:
    for name, frame in tables.items():
        validate_table({**DIMENSIONS, **ANALYTICS}[name][1], frame, f"analytics table {name}")


# --- load + export --------------------------------------------------------------------------------------


def ensure_tables(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('sluice.ddl'))"))
        for schema in ("if_common", "analytics"):
            ensure_schema(conn, schema)
        metadata.create_all(conn, tables=[t for t, _ in (*DIMENSIONS.values(), *ANALYTICS.values())] + [runs])


def load(
    engine: sa.Engine,
    tables: Mapping[str, pd.DataFrame],
    as_of: dt.date,
    ingestion_id: uuid.UUID,
    force: bool,
) -> dict[str, int]:
    """Dimensions replaced, that day's analytics rows replaced, the run recorded: one transaction."""
    ensure_tables(engine)
    loaded: dict[str, int] = {}
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('sluice.analytics'))"))
        for name, (table, _) in DIMENSIONS.items():
            with raw_connection(conn) as cursor:
                cursor.execute(sql.SQL("DELETE FROM {}").format(qualified(f"{table.schema}.{table.name}")))
            loaded[name] = copy_frames(
                conn, f"{table.schema}.{table.name}", [c.name for c in table.columns], [tables[name]]
            )
        for name, (table, _) in ANALYTICS.items():
            conn.execute(sa.delete(table).where(table.c.ingestion_date == as_of))
            loaded[name] = copy_frames(
                conn, f"{table.schema}.{table.name}", [c.name for c in table.columns], [tables[name]]
            )
        conn.execute(sa.delete(runs).where(runs.c.ingestion_date == as_of))
        conn.execute(runs.insert().values(ingestion_date=as_of, ingestion_id=ingestion_id, forced=force))
    return loaded


def export(engine: sa.Engine, settings: Settings) -> dict[str, str]:
    """Each analytics table, all days, as CSV at ``<staging zone>/analytics_export/<table>.csv``."""
    written: dict[str, str] = {}
    with engine.begin() as conn, raw_connection(conn) as cursor:
        for name, (table, _) in ANALYTICS.items():
            buffer = io.BytesIO()
            cursor.copy_expert(
                sql.SQL(
                    "COPY (SELECT {} FROM {} ORDER BY ingestion_date) TO STDOUT WITH (FORMAT csv, HEADER)"
                )
                .format(_export_columns(table), qualified(f"{table.schema}.{table.name}"))
                .as_string(cursor.connection),
                buffer,
            )
            uri = storage.join(settings.zone("staging"), f"analytics_export/{name}.csv")
            storage.put_bytes(buffer.getvalue(), uri)
            written[name] = uri
    return written


def _export_columns(table: sa.Table) -> sql.Composable:
    """Every column; booleans as ``true``/``false`` (``bool::text``), not COPY's ``t``/``f``."""
    return sql.SQL(", ").join(
        sql.SQL("{0}::text AS {0}").format(sql.Identifier(c.name))
        if isinstance(c.type, sa.Boolean)
        else sql.Identifier(c.name)
        for c in table.columns
    )


def read_table(engine: sa.Engine, name: str) -> pd.DataFrame:
    table = ANALYTICS[name][0]
    with engine.connect() as conn:
        result = conn.execute(sa.select(table).order_by(table.c.ingestion_date))
        return pd.DataFrame(result.all(), columns=list(result.keys()))
