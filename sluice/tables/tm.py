"""TM: ``tm.daily_checkins``, the target of the ``dailycheckins`` dataset."""

from __future__ import annotations

import sqlalchemy as sa

from sluice.tables.core import lineage_columns, metadata

daily_checkins = sa.Table(
    "daily_checkins",
    metadata,
    # cache: one sequence call per 10,000 rows instead of per row (a third of COPY time); gaps are harmless.
    sa.Column("id", sa.BigInteger, sa.Identity(always=True, cache=10_000), primary_key=True),
    sa.Column("username", sa.Text, nullable=False),
    sa.Column("project", sa.Text, nullable=False),
    sa.Column("hours", sa.Numeric(5, 2), nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    *lineage_columns(),
    sa.Index("ix_daily_checkins_username_timestamp", "username", "timestamp"),
    schema="tm",
    comment="TM daily check-ins, one row per check-in line of a landed file",
)
