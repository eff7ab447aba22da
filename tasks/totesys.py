"""Prefect tasks of the ``totesys`` flow, one step or one side effect each, in the four ledger states.

- ``extract``: ``ensure`` (the warehouse's tables), ``extract`` (the changed rows);
- ``transform``: ``read_lookups`` (the warehouse), ``transform`` (pure; rows that cannot be typed set aside),
  ``write_processed`` (Parquet);
- ``validate``: ``validate`` (pure: the rows set aside and the failed checks, each with its source row); if any,
  the toolkit's ``quarantine`` (their CSV) and ``reject``;
- ``load``: ``load`` (dimensions, facts, watermarks in one transaction).

Every ``io_task`` retries transient faults with the configured policy (a ``SluiceError`` is never retried);
the ``step_task`` ones touch nothing but the ledger.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sluice import checks, progress, totesys
from sluice.adapters.totesys_source import source_engine
from tasks.toolkit import RunContext, checked, io_task, ledger_state, step_task


@dataclass(kw_only=True)
class TotesysContext(RunContext):
    """What every task of one Totesys cycle needs."""

    run_at: datetime
    source_url: str
    cycle: Any = (
        None  # the connection holding the cycle lock (``totesys.claim_cycle``), from extract to the end
    )

    @property
    def work(self) -> Path:
        """The cycle's spool folder (batches and star-schema chunks)."""
        return totesys.spool_folder(self.settings, self.ingestion_id)

    def cleanup(self) -> None:
        """Remove the cycle's spool files and release the cycle lock."""
        shutil.rmtree(totesys.spool_folder(self.settings, self.ingestion_id), ignore_errors=True)
        if self.cycle is not None:
            totesys.release_cycle(self.cycle)
            self.cycle = None

    def quarantine_uri(self) -> str:
        """Failed checks under the cycle's time (``run_at``), as the zones are."""
        return checks.quarantine_location(self.settings, "totesys", self.run_at, self.ingestion_id)

    def labels(self) -> dict[str, str | None]:
        return {
            "dataset": "totesys",
            "source": totesys.describe_source(self.source_url),
            "target": totesys.SCHEMA,
        }


@io_task
def ensure(ctx: TotesysContext) -> None:
    """Create the star schema and Sluice's Totesys tables if absent (part of the ``extract`` state)."""
    with ledger_state(ctx, "extract", last=False):
        totesys.ensure_warehouse(ctx.engine)


@io_task
def extract(ctx: TotesysContext) -> totesys.Extracted:
    """Rows changed since each table's watermark → CSV batches in the ingestion zone (spooled on local disk)."""
    with ledger_state(ctx, "extract") as entry:
        if ctx.cycle is None:
            ctx.cycle = totesys.claim_cycle(ctx.engine)
            if ctx.cycle is None:
                entry.status = "skipped"
                entry.error = totesys.BUSY
                return totesys.Extracted(run_at=ctx.run_at, run_id=ctx.ingestion_id, note=totesys.BUSY)
        source = source_engine(ctx.source_url)
        try:
            extracted = totesys.extract(source, ctx.engine, ctx.settings, ctx.run_at, ctx.ingestion_id)
        finally:
            source.dispose()
        entry.rows_read = extracted.rows
        if not extracted.batches:
            entry.status = "skipped"
            entry.error = extracted.why_nothing
    return extracted


@io_task
def read_lookups(ctx: TotesysContext) -> dict[str, pd.DataFrame]:
    """The rows earlier cycles loaded that this batch's dimensions join to (first part of ``transform``)."""
    with ledger_state(ctx, "transform", last=False):
        progress.tell("transform: reading the lookups")
        return totesys.read_lookups(ctx.engine)


@step_task
def transform(
    ctx: TotesysContext, extracted: totesys.Extracted, lookups: dict[str, pd.DataFrame]
) -> totesys.Built:
    """The batch and the lookups → the star-schema tables, chunk by chunk, checked and spooled on local disk
    (rows that cannot be typed or fail a check kept for ``validate``); touches nothing but that spool and the
    ledger."""
    with ledger_state(ctx, "transform", last=False):
        return totesys.build(extracted, lookups)


@io_task
def write_processed(ctx: TotesysContext, tables: dict[str, totesys.Spooled]) -> dict[str, str]:
    """Each star-schema table as Parquet in the processed zone (the same keys on a retry); ends ``transform``."""
    with ledger_state(ctx, "transform"):
        return totesys.write_processed(tables, ctx.settings, ctx.run_at)


@step_task
def validate(ctx: TotesysContext, built: totesys.Built, extracted: totesys.Extracted) -> pd.DataFrame:
    """The rows the transform set aside, and every output table against its strict model; returns the failures,
    each with its source row (none: ``validate`` succeeds).

    Pure: failures are not written here but by ``quarantine`` (tasks/toolkit.py, retried), then ``reject``
    halts the cycle.
    """
    return checked(ctx, totesys.failure_cases, built, extracted)


@io_task
def load(
    ctx: TotesysContext, tables: dict[str, totesys.Spooled], extracted: totesys.Extracted
) -> dict[str, int]:
    """Dimensions, then facts, then watermarks: one transaction."""
    with ledger_state(ctx, "load") as entry:
        loaded = totesys.load(ctx.engine, tables, extracted, ctx.settings)
        entry.rows_loaded = sum(loaded.values())
    return loaded
