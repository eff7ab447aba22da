"""Prefect tasks of the ``totesys`` flow: extract → transform → validate → load, each in the run ledger.

Extract and load talk to databases and retry transient faults (a ``SluiceError`` is never retried);
transform and validate are pure over the batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from prefect import task
from prefect.cache_policies import NO_CACHE

from sluice import totesys
from sluice.errors import ValidationFailed
from sluice.ledger import Ledger, LedgerEntry, tracked
from sluice.settings import Settings
from sluice.totesys_source import source_engine
from sluice.warehouse import get_engine
from tasks.ingest import io_task


@dataclass
class CycleContext:
    """What every task of one Totesys cycle needs."""

    ingestion_id: uuid.UUID
    run_at: datetime
    source_url: str
    settings: Settings
    ledger: Ledger
    flow_run_id: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def warehouse(self) -> sa.Engine:
        return get_engine(self.settings)


@contextmanager
def cycle_state(ctx: CycleContext, state: str) -> Iterator[LedgerEntry]:
    with tracked(
        ctx.ledger,
        ctx.counts,
        ingestion_id=ctx.ingestion_id,
        state=state,
        dataset="totesys",
        source=totesys.describe_source(ctx.source_url),
        target=totesys.SCHEMA,
        flow_run_id=ctx.flow_run_id,
    ) as entry:
        yield entry


@io_task
def extract(ctx: CycleContext) -> totesys.Extracted:
    """Rows changed since each table's watermark → CSV batches in the ingestion zone."""
    with cycle_state(ctx, "extract") as entry:
        totesys.ensure_warehouse(ctx.warehouse)
        source = source_engine(ctx.source_url)
        try:
            extracted = totesys.extract(source, ctx.warehouse, ctx.settings, ctx.run_at, ctx.ingestion_id)
        finally:
            source.dispose()
        entry.rows_read = extracted.rows
        if not extracted.batches:
            entry.status = "skipped"
            entry.error = "no new data since the watermarks"
    return extracted


@task(name="transform", cache_policy=NO_CACHE)
def transform(ctx: CycleContext, extracted: totesys.Extracted) -> dict[str, pd.DataFrame]:
    """The batch → star-schema tables (Parquet in the processed zone)."""
    with cycle_state(ctx, "transform"):
        tables = totesys.build(extracted, totesys.read_lookups(ctx.warehouse))
        totesys.write_processed(tables, ctx.settings, ctx.run_at)
    return tables


@task(name="validate", cache_policy=NO_CACHE)
def validate(ctx: CycleContext, tables: dict[str, pd.DataFrame]) -> None:
    """Every output table against its strict model: hard, a broken star schema must not load."""
    with cycle_state(ctx, "validate") as entry:
        try:
            totesys.validate(tables, ctx.settings, ctx.run_at, ctx.ingestion_id)
        except ValidationFailed as exc:
            entry.rows_quarantined = exc.rows_invalid or None
            entry.quarantine_uri = exc.quarantine_uri
            raise
        entry.rows_quarantined = 0


@io_task
def load(ctx: CycleContext, tables: dict[str, pd.DataFrame], extracted: totesys.Extracted) -> dict[str, int]:
    """Dimensions, then facts, then watermarks: one transaction."""
    with cycle_state(ctx, "load") as entry:
        loaded = totesys.load(ctx.warehouse, tables, extracted, ctx.settings)
        entry.rows_loaded = sum(loaded.values())
    return loaded
