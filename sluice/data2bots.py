"""Data2bots analytics I/O: read staging and the ``if_common`` reference tables, load the ``analytics`` tables, export.

Each analytics table is keyed by ``ingestion_date``: a re-run for the same day replaces that day's row, in the
same transaction as the run record (``analytics.runs``: at most one run per day and version of staging unless
forced; the version is set once the export is written, see ``previous_run``). The rules themselves are in
``sluice.transforms.data2bots``.

The reference tables ``if_common.dim_dates`` and ``if_common.dim_products`` belong to the user: a run reads them
and never rewrites them. Only when one is absent (or empty) does a run create it, from ``SLUICE_HOLIDAYS_FILE`` /
``SLUICE_PRODUCTS_FILE`` (local path or ``s3://``) or else from the example lists shipped in ``sluice/data``, and
the run says so (a note in its report, log, artifact and alert). ``--refresh-reference`` (flow parameter
``refresh_reference``, setting ``SLUICE_REFRESH_REFERENCE``) rewrites both from those lists, on request only.

Over 350 lines: the reference tables' rules (read, create when absent, refresh on request) sit beside the
analytics tables' DDL, loads and exports of the same pipeline.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from psycopg2 import sql

from schemas.data2bots import AggPublicHoliday, AggShipments, BestPerformingProduct, DimDates, DimProducts
from sluice import checks, progress, tables
from sluice.adapters import storage
from sluice.adapters.warehouse import copy_frames, qualified, raw_connection, run_copy
from sluice.errors import BadFile, SluiceError
from sluice.ledger_entry import Ledger
from sluice.settings import Settings
from sluice.tables import data2bots as declared
from sluice.tables.data2bots import (
    BUILD,
    agg_public_holiday,
    agg_shipments,
    best_performing_product,
    dim_dates,
    dim_products,
    runs,
)
from sluice.tables.ledger import file_loads
from sluice.transforms import data2bots as rules

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
    """Staging lacks one of the three datasets (nothing to analyse yet)."""


class ReferenceIncomplete(SluiceError):
    """The user's ``if_common.dim_dates`` lacks days the analytics need."""


@dataclass
class Reference:
    """The reference tables a run uses, and which of them it writes (absent → created; refresh → rewritten)."""

    dates: pd.DataFrame
    products: pd.DataFrame
    writes: dict[str, str] = field(default_factory=dict)  # table → "create" | "refresh"
    notes: list[str] = field(default_factory=list)


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


def _list_source(configured: str | None, shipped: str, setting: str) -> str:
    if configured:
        return configured
    return f"the example list shipped with Sluice (sluice/data/{shipped}; set {setting} to your own)"


def _rows(conn: sa.Connection, table: sa.Table) -> int | None:
    """Rows of a table, None when it does not exist."""
    if not tables.exists(conn, table):
        return None
    return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def _read_dimension(conn: sa.Connection, table: sa.Table) -> pd.DataFrame:
    result = conn.execute(sa.select(*table.columns))
    frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    for column in table.columns:
        if isinstance(column.type, sa.Integer):
            frame[column.name] = frame[column.name].astype("Int64")
        elif isinstance(column.type, sa.Boolean):
            frame[column.name] = frame[column.name].astype("boolean")
        elif isinstance(column.type, sa.Text):
            frame[column.name] = frame[column.name].astype("string")
    return frame


def read_reference(
    engine: sa.Engine,
    settings: Settings,
    staging: Mapping[str, pd.DataFrame],
    as_of: dt.date,
    refresh: bool = False,
) -> Reference:
    """The user's reference tables as they are; a table that is absent or empty (or all, on ``refresh``) built
    from the configured lists instead, to be written by the load, with a note saying so."""
    with engine.connect() as conn:
        present = {name: _rows(conn, table) for name, (table, _) in DIMENSIONS.items()}
        existing = {
            name: _read_dimension(conn, DIMENSIONS[name][0])
            for name, rows in present.items()
            if rows and not refresh
        }
    reference = Reference(
        dates=existing.get("dim_dates", pd.DataFrame()), products=existing.get("dim_products", pd.DataFrame())
    )
    sources = {
        "dim_dates": _list_source(settings.holidays_file, "public_holidays.csv", "SLUICE_HOLIDAYS_FILE"),
        "dim_products": _list_source(settings.products_file, "products.csv", "SLUICE_PRODUCTS_FILE"),
    }
    for name in DIMENSIONS:
        if name in existing:
            continue
        if name == "dim_dates":
            holidays = read_holidays(settings)
            start, end = rules.date_span(staging["orders"], as_of, holidays)
            reference.dates = rules.dim_dates(start, end, holidays)
        else:
            reference.products = read_products(settings)
        mode = "refresh" if refresh and present[name] else "create"
        reference.writes[name] = mode
        done = (
            "rewritten on request"
            if mode == "refresh"
            else ("created (it was empty)" if present[name] == 0 else "created (it was absent)")
        )
        reference.notes.append(f"if_common.{name} {done} from {sources[name]}")
    return reference


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


# Staging compacted in PostgreSQL to what the rules read (``sluice.transforms.data2bots``: ``COUNT``): one row per
# distinct combination with how many rows it stands for, so memory grows with days × products, not with rows. A
# shipment comes joined to its order (LEFT: one without an order still counts as read, and matches no order).
STAGING: dict[str, tuple[sa.Table, str]] = {
    "orders": (
        declared.orders,
        "SELECT order_date, product_id, count(*) AS n FROM staging.orders GROUP BY order_date, product_id",
    ),
    "reviews": (
        declared.reviews,
        "SELECT review, product_id, count(*) AS n FROM staging.reviews GROUP BY review, product_id",
    ),
    "shipment_deliveries": (
        declared.shipment_deliveries,
        "SELECT o.order_date, o.product_id, s.shipment_date, s.delivery_date IS NOT NULL AS delivered, "
        "count(*) AS n FROM staging.shipment_deliveries s LEFT JOIN staging.orders o ON o.order_id = s.order_id "
        "GROUP BY o.order_date, o.product_id, s.shipment_date, delivered",
    ),
}


def _read(conn: sa.Connection, query: str) -> pd.DataFrame:
    result = conn.execute(sa.text(query))
    return pd.DataFrame(result.all(), columns=list(result.keys()))


def _has_rows(conn: sa.Connection, table: sa.Table) -> bool:
    if not tables.exists(conn, table):
        return False
    return bool(conn.execute(sa.select(sa.exists(sa.select(sa.literal(1)).select_from(table)))).scalar())


def read_staging(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    """The three staging tables, compacted (``STAGING``) and typed as the transforms expect (dates as
    ``datetime.date``); ``rules.rows`` of each is its row count.

    All three must hold rows: without reviews there is no best product, and without shipments every shipment
    figure would read 0 and the day would count as done (a later run, once the file landed, would skip it).
    """
    with engine.connect() as conn:
        present = {name: _has_rows(conn, table) for name, (table, _) in STAGING.items()}
        missing = [name for name, has in present.items() if not has]
        if missing:
            nor = f" (nor {' nor '.join(missing[1:])})" if len(missing) > 1 else ""
            raise NotReady(
                f"no {missing[0]} in staging yet{nor}: the analytics need orders, reviews and shipment_deliveries; "
                "land and ingest the missing file(s) first (nothing was written)"
            )
        frames = {}
        for name, (_, query) in STAGING.items():
            progress.tell(f"extract staging.{name}")
            frames[name] = _read(conn, query)
    orders, reviews, shipments = frames["orders"], frames["reviews"], frames["shipment_deliveries"]
    for frame, columns in ((orders, ("product_id", "n")), (reviews, ("review", "product_id", "n"))):
        for column in columns:
            frame[column] = frame[column].astype("int64")
    shipments["product_id"] = shipments["product_id"].astype("Int64")  # null: a shipment without its order
    shipments["n"] = shipments["n"].astype("int64")
    shipments["delivered"] = shipments["delivered"].astype(bool)
    for column in ("order_date", "shipment_date"):
        shipments[column] = shipments[column].astype(object).where(shipments[column].notna(), None)
    return {"orders": orders, "reviews": reviews, "shipments": shipments}


def orders_without_shipment(engine: sa.Engine, as_of: dt.date) -> int:
    """Orders old enough to be undelivered by ``as_of`` (``order_date + 15 days <= as_of``) that have no row in
    ``staging.shipment_deliveries``. The rules read shipment rows, so they count in no shipment figure, not even
    ``tt_undelivered_items``: the run says how many (a pandas left join counted them, Sluice silently not)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM staging.orders o WHERE o.order_date <= :last AND NOT EXISTS "
                    "(SELECT 1 FROM staging.shipment_deliveries s WHERE s.order_id = o.order_id)"
                ),
                {"last": as_of - rules.UNDELIVERED_AFTER},
            ).scalar_one()
        )


def latest_order_date(staging: Mapping[str, pd.DataFrame]) -> dt.date:
    return max(staging["orders"]["order_date"])


def latest_order_day(engine: sa.Engine) -> dt.date | None:
    """The latest ``order_date`` in staging, asked of PostgreSQL (None: no orders yet), so that a day that already
    ran is known before staging is read: on 30 million staging rows, saying "already ran" took 7.7 s of reading."""
    with engine.connect() as conn:
        if not tables.exists(conn, declared.orders):
            return None
        return conn.execute(sa.select(sa.func.max(declared.orders.c.order_date))).scalar()


def rows_read_before(engine: sa.Engine, ledger: Ledger, as_of: dt.date) -> int | None:
    """The staging rows the day's last run read (its ledger's ``extract``): what a skip on the same staging version
    would have read (None if that run's entry is gone)."""
    with engine.connect() as conn:
        run_id = conn.execute(sa.select(runs.c.ingestion_id).where(runs.c.ingestion_date == as_of)).scalar()
    if run_id is None:
        return None
    return next((e.rows_read for e in ledger.history(run_id) if e.state == "extract"), None)


def staging_version(engine: sa.Engine) -> str:
    """Which staging files there are: their count and latest load (``sluice.file_loads``). Read before staging
    itself, so that a file committed in between makes the next run see a newer version, never an older one."""
    with engine.connect() as conn:
        if not tables.exists(conn, file_loads):
            return "0|"
        count, latest = conn.execute(
            sa.select(sa.func.count(), sa.func.max(file_loads.c.loaded_at)).where(
                file_loads.c.dataset.in_(STAGING)
            )
        ).one()
    return f"{count}|{latest.isoformat() if latest else ''}"


def previous_run(engine: sa.Engine, as_of: dt.date, version: str) -> str | None:
    """``None``: the day never ran; ``"current"``: it ran on this very staging and its export was written;
    ``"stale"``: it ran, but a staging file loaded since (a corrected or a late file), or its export never
    completed."""
    with engine.connect() as conn:
        if not tables.exists(conn, runs):
            return None
        # to_jsonb: a run record from before the staging_version column reads as null (stale: built once more)
        row = conn.execute(
            sa.text(
                "SELECT to_jsonb(r) ->> 'staging_version' FROM analytics.runs r WHERE r.ingestion_date = :day"
            ),
            {"day": as_of},
        ).first()
    if row is None:
        return None
    return "current" if row[0] == version else "stale"


# --- build + validate -----------------------------------------------------------------------------------


def build(
    staging: Mapping[str, pd.DataFrame], reference: Reference, as_of: dt.date
) -> dict[str, pd.DataFrame]:
    """The three analytics rows for ``as_of`` (pure rules), plus the reference tables this run writes."""
    dates, products = reference.dates, reference.products
    orders, reviews, shipments = staging["orders"], staging["reviews"], staging["shipments"]
    tables = {
        "agg_public_holiday": rules.agg_public_holiday(orders, dates, as_of),
        "agg_shipments": rules.agg_shipments(orders, shipments, as_of),
        "best_performing_product": rules.best_performing_product(
            orders, reviews, shipments, products, dates, as_of
        ),
    }
    _check_days(orders, tables["best_performing_product"], dates, as_of, reference)
    reference.notes.extend(_doubts(orders, tables["best_performing_product"], dates, as_of))
    written = {"dim_dates": dates, "dim_products": products}
    return {**{name: written[name] for name in reference.writes}, **tables}


def _doubts(orders: pd.DataFrame, best: pd.DataFrame, dates: pd.DataFrame, as_of: dt.date) -> list[str]:
    """What the run should say about figures that are right by the rules but may not be what the user meant."""
    notes = []
    start, end = rules.past_year(as_of)
    with_holidays = {d.year for d in rules.public_holidays(dates)}
    ordered = {d.year for d in orders["order_date"] if d is not None and start <= d <= end}
    without = [str(y) for y in sorted(ordered - with_holidays)]
    if without:
        notes.append(
            f"if_common.dim_dates has no public holiday in {' or '.join(without)}: agg_public_holiday counts none "
            "there (is the holiday list up to date?)"
        )
    if not best.empty and pd.isna(best["product_name"].iloc[0]):
        notes.append(
            f"best performing product {best['product_id'].iloc[0]} is not in if_common.dim_products: "
            "its product_name is empty"
        )
    return notes


def _check_days(
    orders: pd.DataFrame, best: pd.DataFrame, dates: pd.DataFrame, as_of: dt.date, reference: Reference
) -> None:
    """Every day the rules look up (order days of the past year, the best product's day) is in ``dim_dates``."""
    start, end = rules.past_year(as_of)
    needed = {d for d in orders["order_date"] if d is not None and start <= d <= end}
    if not best.empty and best["most_ordered_day"].iloc[0] is not None:
        needed.add(best["most_ordered_day"].iloc[0])
    missing = sorted(needed - set(dates["calendar_dt"]))
    if missing and "dim_dates" not in reference.writes:
        more = f" and {len(missing) - 1} more, up to {missing[-1]}" if len(missing) > 1 else ""
        raise ReferenceIncomplete(
            f"if_common.dim_dates has no row for {missing[0]}{more}: the analytics for {as_of} need those days. "
            "Add them to the table, or run with --refresh-reference (SLUICE_REFRESH_REFERENCE=true) to rebuild it "
            "from SLUICE_HOLIDAYS_FILE"
        )


def failure_cases(built: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every built table against its strict model: the failed checks (``sluice.checks``); pure."""
    models = {name: model for name, (_, model) in {**DIMENSIONS, **ANALYTICS}.items()}
    return checks.failure_cases({name: (models[name], frame) for name, frame in built.items()})


# --- load + export --------------------------------------------------------------------------------------


def ensure_tables(engine: sa.Engine) -> None:
    """Create the reference tables, the analytics tables and the run record if they do not exist; a run record
    from before ``staging_version`` gains the column (its days then count as stale: they are built once more)."""
    tables.ensure(engine, *BUILD)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE analytics.runs ADD COLUMN IF NOT EXISTS staging_version text"))


def load(
    engine: sa.Engine,
    built: Mapping[str, pd.DataFrame],
    as_of: dt.date,
    ingestion_id: uuid.UUID,
    force: bool,
    writes: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """That day's analytics rows replaced, the run recorded, and only the reference tables in ``writes`` written
    (``create``: only if still empty, another run may have created it meanwhile; ``refresh``: replaced), in one
    transaction. Every other reference table is left exactly as it is. The tables exist already: the flow's
    ``ensure`` task creates them (``ensure_tables``) first."""
    loaded: dict[str, int] = {}
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('sluice.analytics'))"))
        for name, mode in (writes or {}).items():
            table = DIMENSIONS[name][0]
            if mode == "create" and _rows(conn, table):
                continue
            with raw_connection(conn) as cursor:
                cursor.execute(sql.SQL("DELETE FROM {}").format(qualified(tables.name_of(table))))
            loaded[name] = copy_frames(
                conn, tables.name_of(table), [c.name for c in table.columns], [built[name]]
            )
        for name, (table, _) in ANALYTICS.items():
            conn.execute(sa.delete(table).where(table.c.ingestion_date == as_of))
            loaded[name] = copy_frames(
                conn, tables.name_of(table), [c.name for c in table.columns], [built[name]]
            )
        conn.execute(sa.delete(runs).where(runs.c.ingestion_date == as_of))
        conn.execute(runs.insert().values(ingestion_date=as_of, ingestion_id=ingestion_id, forced=force))
    return loaded


def analytics_rows(loaded: Mapping[str, int]) -> int:
    """The rows a run loaded into the analytics tables: a reference table it created or refreshed (730 days of
    ``if_common.dim_dates``) is in ``loaded`` too, but is not what "N loaded into analytics" counts."""
    return sum(rows for name, rows in loaded.items() if name in ANALYTICS)


def mark_exported(engine: sa.Engine, as_of: dt.date, version: str) -> None:
    """The day's export is written: a later run on the same staging version skips (``previous_run``)."""
    with engine.begin() as conn:
        conn.execute(sa.update(runs).where(runs.c.ingestion_date == as_of).values(staging_version=version))


def export(engine: sa.Engine, settings: Settings) -> dict[str, str]:
    """Each analytics table, all days, as CSV at ``<staging zone>/analytics_export/<table>.csv``."""
    written: dict[str, str] = {}
    with engine.begin() as conn, raw_connection(conn) as cursor:
        for name, (table, _) in ANALYTICS.items():
            buffer = io.BytesIO()
            run_copy(
                cursor,
                sql.SQL(
                    "COPY (SELECT {} FROM {} ORDER BY ingestion_date) TO STDOUT WITH (FORMAT csv, HEADER)"
                )
                .format(_export_columns(table), qualified(tables.name_of(table)))
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
