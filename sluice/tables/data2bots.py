"""Data2bots: the landed files (schema ``staging``), the user's reference tables (``if_common``), the analytics
tables and their run record (``analytics``)."""

from __future__ import annotations

import calendar

import sqlalchemy as sa

from sluice.tables.core import lineage_columns, metadata

MONTH_COLUMNS = tuple(f"tt_order_hol_{calendar.month_abbr[m].lower()}" for m in range(1, 13))
STAR_COLUMNS = ("pct_one_star_review", "pct_two_star_review", "pct_three_star_review", "pct_four_star_review",
                "pct_five_star_review")  # fmt: skip

# --- staging: the datasets' targets ---------------------------------------------------------------------

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.BigInteger, nullable=False),
    sa.Column("order_date", sa.Date, nullable=False),
    sa.Column("product_id", sa.BigInteger, nullable=False),
    sa.Column("unit_price", sa.Numeric(14, 2), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("total_price", sa.Numeric(16, 2), nullable=False),
    *lineage_columns(),
    schema="staging",
)
reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("review", sa.SmallInteger, nullable=False),
    sa.Column("product_id", sa.BigInteger, nullable=False),
    *lineage_columns(),
    schema="staging",
)
shipment_deliveries = sa.Table(
    "shipment_deliveries",
    metadata,
    sa.Column("shipment_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("order_id", sa.BigInteger, nullable=False),
    sa.Column("shipment_date", sa.Date),
    sa.Column("delivery_date", sa.Date),
    *lineage_columns(),
    schema="staging",
)

# --- if_common: the user's reference tables (created only when absent) ---------------------------------

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

# --- analytics ------------------------------------------------------------------------------------------

agg_public_holiday = sa.Table(
    "agg_public_holiday",
    metadata,
    sa.Column("ingestion_date", sa.Date, primary_key=True),
    *[sa.Column(c, sa.Integer, nullable=False) for c in MONTH_COLUMNS],
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
    *[sa.Column(c, sa.Numeric(5, 2), nullable=False) for c in STAR_COLUMNS],
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
    sa.Column(
        "staging_version",
        sa.Text,
        comment="The staging files the day was built from (count|latest load); null until its export is written",
    ),
    schema="analytics",
    comment="One row per ingestion_date analysed: the at-most-once-a-day guard (per version of staging)",
)

#: What an analytics run creates: the reference tables, the analytics tables and the run record.
BUILD = (dim_dates, dim_products, agg_public_holiday, agg_shipments, best_performing_product, runs)
