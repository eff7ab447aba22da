"""Prefect tasks of the ``analytics`` flow (Data2bots): extract → transform → validate → load → export."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
from prefect import task
from prefect.cache_policies import NO_CACHE

from sluice import analytics
from sluice.errors import ValidationFailed
from sluice.ledger import Ledger, LedgerEntry, tracked
from sluice.settings import Settings
from sluice.warehouse import get_engine
from tasks.ingest import io_task


@dataclass
class AnalyticsContext:
    ingestion_id: uuid.UUID
    settings: Settings
    ledger: Ledger
    force: bool
    as_of: dt.date | None = None
    flow_run_id: str | None = None
    refresh_reference: bool = False
    reference: analytics.Reference | None = None
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.settings)


@contextmanager
def analytics_state(ctx: AnalyticsContext, state: str) -> Iterator[LedgerEntry]:
    with tracked(
        ctx.ledger,
        ctx.counts,
        ingestion_id=ctx.ingestion_id,
        state=state,
        dataset="analytics",
        source=f"staging as of {ctx.as_of or 'latest order'}",
        target="analytics",
        flow_run_id=ctx.flow_run_id,
    ) as entry:
        yield entry


@io_task
def extract(ctx: AnalyticsContext, as_of: dt.date | None) -> dict[str, pd.DataFrame] | None:
    """Read staging and the reference tables; decide the day; None when that day already ran (and not forced)."""
    with analytics_state(ctx, "extract") as entry:
        staging = analytics.read_staging(ctx.engine)
        ctx.as_of = as_of or analytics.latest_order_date(staging)
        entry.source = f"staging as of {ctx.as_of}"
        entry.rows_read = sum(len(f) for f in staging.values())
        if not ctx.force and analytics.already_ran(ctx.engine, ctx.as_of):
            entry.status = "skipped"
            entry.error = f"analytics for {ctx.as_of} already ran; use force to run again"
            return None
        ctx.reference = analytics.read_reference(
            ctx.engine, ctx.settings, staging, ctx.as_of, ctx.refresh_reference
        )
    return staging


@task(name="transform", cache_policy=NO_CACHE)
def transform(ctx: AnalyticsContext, staging: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    assert ctx.as_of is not None and ctx.reference is not None
    with analytics_state(ctx, "transform"):
        return analytics.build(staging, ctx.reference, ctx.as_of)


@task(name="validate", cache_policy=NO_CACHE)
def validate(ctx: AnalyticsContext, tables: dict[str, pd.DataFrame]) -> None:
    with analytics_state(ctx, "validate") as entry:
        try:
            analytics.validate(tables)
        except ValidationFailed as exc:
            entry.rows_quarantined = exc.rows_invalid or None
            raise
        entry.rows_quarantined = 0


@io_task
def load(ctx: AnalyticsContext, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    assert ctx.as_of is not None
    with analytics_state(ctx, "load") as entry:
        writes = ctx.reference.writes if ctx.reference else {}
        loaded = analytics.load(ctx.engine, tables, ctx.as_of, ctx.ingestion_id, ctx.force, writes)
        entry.rows_loaded = sum(loaded.values())
    return loaded


@io_task
def export(ctx: AnalyticsContext) -> dict[str, str]:
    with analytics_state(ctx, "export"):
        return analytics.export(ctx.engine, ctx.settings)
