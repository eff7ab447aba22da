"""Prefect tasks of the ``totesys`` flow: extract → transform → validate → load, each in the run ledger.

Extract and load talk to databases and retry transient faults (a ``SluiceError`` is never retried);
transform and validate are pure over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from sluice import totesys
from sluice.errors import ValidationFailed
from sluice.totesys_source import source_engine
from tasks.toolkit import RunContext, io_task, ledger_state, step_task


@dataclass(kw_only=True)
class TotesysContext(RunContext):
    """What every task of one Totesys cycle needs."""

    run_at: datetime
    source_url: str

    def labels(self) -> dict[str, str | None]:
        return {
            "dataset": "totesys",
            "source": totesys.describe_source(self.source_url),
            "target": totesys.SCHEMA,
        }


@io_task
def extract(ctx: TotesysContext) -> totesys.Extracted:
    """Rows changed since each table's watermark → CSV batches in the ingestion zone."""
    with ledger_state(ctx, "extract") as entry:
        totesys.ensure_warehouse(ctx.engine)
        source = source_engine(ctx.source_url)
        try:
            extracted = totesys.extract(source, ctx.engine, ctx.settings, ctx.run_at, ctx.ingestion_id)
        finally:
            source.dispose()
        entry.rows_read = extracted.rows
        if not extracted.batches:
            entry.status = "skipped"
            entry.error = "no new data since the watermarks"
    return extracted


@step_task
def transform(ctx: TotesysContext, extracted: totesys.Extracted) -> dict[str, pd.DataFrame]:
    """The batch → star-schema tables (Parquet in the processed zone)."""
    with ledger_state(ctx, "transform"):
        tables = totesys.build(extracted, totesys.read_lookups(ctx.engine))
        totesys.write_processed(tables, ctx.settings, ctx.run_at)
    return tables


@step_task
def validate(ctx: TotesysContext, tables: dict[str, pd.DataFrame]) -> None:
    """Every output table against its strict model: hard, a broken star schema must not load."""
    with ledger_state(ctx, "validate") as entry:
        try:
            totesys.validate(tables, ctx.settings, ctx.run_at, ctx.ingestion_id)
        except ValidationFailed as exc:
            entry.rows_quarantined = exc.rows_invalid or None
            entry.quarantine_uri = exc.quarantine_uri
            raise
        entry.rows_quarantined = 0


@io_task
def load(
    ctx: TotesysContext, tables: dict[str, pd.DataFrame], extracted: totesys.Extracted
) -> dict[str, int]:
    """Dimensions, then facts, then watermarks: one transaction."""
    with ledger_state(ctx, "load") as entry:
        loaded = totesys.load(ctx.engine, tables, extracted, ctx.settings)
        entry.rows_loaded = sum(loaded.values())
    return loaded
