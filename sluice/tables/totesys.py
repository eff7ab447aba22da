"""Totesys: the star schema (schema ``warehouse``) and the cycle's bookkeeping (``sluice.totesys_*``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from sluice.tables.core import metadata

SCHEMA = "warehouse"


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
    sa.Column("agreed_delivery_location_id", sa.Integer, _fk("dim_location")),  # optional in the OLTP
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
    sa.Column("agreed_delivery_location_id", sa.Integer, _fk("dim_location")),  # optional in the OLTP
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
max_ids = sa.Table(
    "totesys_max_ids",
    metadata,
    sa.Column("table_name", sa.Text, primary_key=True),
    sa.Column("max_id", sa.BigInteger, nullable=False, comment="Greatest source id loaded"),
    schema="sluice",
    comment="Totesys: per source table, its greatest id loaded (a new row stamped behind the watermark is read)",
)
snapshot = sa.Table(
    "totesys_snapshot",
    metadata,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column(
        "taken_at", sa.DateTime(timezone=True), nullable=False, comment="When, by the cycle's UTC clock"
    ),
    sa.Column("source_clock", sa.DateTime, nullable=False, comment="The source's wall clock at the snapshot"),
    sa.Column(
        "in_progress",
        JSONB,
        nullable=False,
        comment="Source transactions in progress at the snapshot: the next cycle reads their rows by xmin",
    ),
    sa.Column("ingestion_id", sa.Uuid, nullable=False),
    schema="sluice",
    comment="Totesys: the source snapshot the last cycle read through (long transactions, a clock set back)",
)
BOOKKEEPING = (watermarks, recent, lookups, max_ids, snapshot)
