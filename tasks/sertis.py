"""Prefect tasks of the Sertis gold flow (``customers``): all of silver → the per-customer gold table.

- ``extract``: ``extract`` (all of silver); ``transform``: ``transform`` (pure); ``validate``: ``validate``
  (pure: the failed checks), then the toolkit's ``quarantine`` and ``reject`` if any;
- ``load``: ``ensure`` (the gold table), ``load`` (replaced in one transaction), ``publish`` (its Parquet, Glue).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from schemas.sertis import Customer
from sluice import checks, progress, sertis
from sluice.transforms.sertis import build_customers_by_part
from tasks.toolkit import RunContext, checked, io_task, ledger_state, step_task


@dataclass(kw_only=True)
class SertisContext(RunContext):
    """What every task of one gold build needs: the run's own, and what extract noticed."""

    notes: list[str] = field(default_factory=list)

    @property
    def work(self) -> Path:
        """Local scratch space of this run (silver spooled in parts)."""
        return self.settings.work_dir / f"customers-{self.ingestion_id.hex}"

    def cleanup(self) -> None:
        """Remove the spooled silver."""
        shutil.rmtree(self.work, ignore_errors=True)

    def labels(self) -> dict[str, str | None]:
        return {
            "dataset": "customers",
            "source": "sertis.transactions (silver)",
            "target": "sertis.customers",
        }


@io_task
def extract(ctx: SertisContext) -> sertis.Silver:
    """All of silver, spooled to local disk in parts of whole customers."""
    with ledger_state(ctx, "extract") as entry:
        shutil.rmtree(ctx.work, ignore_errors=True)  # a retried extract starts again
        silver = sertis.read_silver(ctx.engine, ctx.work, ctx.settings.chunk_rows)
        entry.rows_read = silver.lines + silver.superseded
        if silver.repeated:
            ctx.notes.append(
                f"{silver.repeated} transaction lines repeat an earlier line of their file exactly (transaction, "
                "customer, day, product, units): each counts, as the file has it"
            )
        if silver.superseded:
            ctx.notes.append(
                f"{silver.superseded} transaction lines were delivered again by a later file: each transaction "
                "counts as its latest file has it"
            )
    return silver


@step_task
def transform(ctx: SertisContext, silver: sertis.Silver) -> pd.DataFrame:
    """Silver → one row per customer: favourite product and longest streak (one spooled part at a time)."""
    with ledger_state(ctx, "transform"):
        # the parts as read from the spool, counted at this edge (the transform stays pure)
        return build_customers_by_part(progress.counted(silver.frames(), "transform", silver.lines))


@step_task
def validate(ctx: SertisContext, gold: pd.DataFrame) -> pd.DataFrame:
    """The gold table against its strict model; returns the failed checks (none: ``validate`` succeeds).

    Pure: failures are written by the toolkit's ``quarantine`` (retried), then ``reject`` halts the build.
    """
    return checked(ctx, checks.failure_cases, {"customers": (Customer, gold)})


@io_task
def ensure(ctx: SertisContext) -> None:
    """Create the gold table if absent (part of the ``load`` state)."""
    with ledger_state(ctx, "load", last=False):
        sertis.ensure_gold(ctx.engine)


@io_task
def load(ctx: SertisContext, gold: pd.DataFrame) -> int:
    """Replace the gold table in one transaction; returns its rows."""
    with ledger_state(ctx, "load", last=False) as entry:
        entry.rows_loaded = sertis.load_gold(ctx.engine, gold)
    return entry.rows_loaded


@io_task
def publish(ctx: SertisContext, gold: pd.DataFrame) -> str:
    """The gold Parquet (and its Glue catalog entry when configured); returns the Parquet's location."""
    with ledger_state(ctx, "load"):
        return sertis.publish_gold(gold, ctx.settings)
