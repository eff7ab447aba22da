"""Sertis: silver as a table (``sertis.transactions``, the dataset's target) and gold (``sertis.customers``)."""

from __future__ import annotations

import sqlalchemy as sa

from sluice.tables.core import lineage_columns, metadata

SCHEMA = "sertis"

transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("transaction_id", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=False, comment="zero-padded, kept as text"),
    sa.Column("transaction_date", sa.Date, nullable=False),
    sa.Column("product_sold", sa.Text, nullable=False),
    sa.Column("units_sold", sa.Integer, nullable=False),
    *lineage_columns(),
    sa.Index("ix_sertis_transactions_customer", "customer_id"),
    schema=SCHEMA,
    comment="Silver as a table: every validated transaction line",
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True, comment="zero-padded, as in the source"),
    sa.Column("favourite_product", sa.Text, nullable=False),
    sa.Column("longest_streak", sa.Integer, nullable=False),
    schema=SCHEMA,
    comment="Gold: one row per customer, rebuilt from all of silver on every run",
)
