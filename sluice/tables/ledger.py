"""Sluice's own bookkeeping: the run ledger and the exactly-once file registry (schema ``sluice``)."""

from __future__ import annotations

import sqlalchemy as sa

from sluice.tables.core import metadata

run_ledger = sa.Table(
    "run_ledger",
    metadata,
    sa.Column("ingestion_id", sa.Uuid, primary_key=True),
    sa.Column("state", sa.Text, primary_key=True),
    sa.Column("seq", sa.SmallInteger, nullable=False),
    sa.Column("flow_run_id", sa.Text),
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("rows_read", sa.BigInteger),
    sa.Column("rows_loaded", sa.BigInteger),
    sa.Column("rows_quarantined", sa.BigInteger),
    sa.Column("quarantine_uri", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Index("ix_run_ledger_started_at", "started_at"),
    schema="sluice",
    comment="One row per state of every run",
)

file_loads = sa.Table(
    "file_loads",
    metadata,
    sa.Column("dataset", sa.Text, primary_key=True),
    sa.Column("sha256", sa.CHAR(64), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("ingestion_id", sa.Uuid, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("rows_loaded", sa.BigInteger, nullable=False),
    sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_file_loads_ingestion_id", "ingestion_id"),
    schema="sluice",
    comment="Files loaded, by content: the exactly-once guard",
)

BOOKKEEPING = (run_ledger, file_loads)
