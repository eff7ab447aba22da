"""Prefect tasks of the ``analytics`` flow (Data2bots): extract → transform → validate → load → export.

The ``load`` state is two tasks: ``ensure`` (the tables) then ``load``. Extract, ensure, load and export read or
write the warehouse and the export zone (``io_task``: retried); transform and
validate are pure over the frames in hand (``step_task``); failed checks go through the toolkit's
``quarantine`` and ``reject``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from sluice import data2bots, progress
from sluice.errors import counted
from sluice.transforms import data2bots as rules
from tasks.toolkit import RunContext, checked, io_task, ledger_state, step_task


@dataclass(kw_only=True)
class Data2botsContext(RunContext):
    """What every task of one Data2bots analytics run needs."""

    force: bool
    as_of: dt.date | None = None
    refresh_reference: bool = False
    reference: data2bots.Reference | None = None
    staging_version: str = ""

    def __post_init__(self) -> None:
        self.refresh_reference = self.refresh_reference or self.settings.refresh_reference

    def labels(self) -> dict[str, str | None]:
        return {
            "dataset": "analytics",
            "source": f"staging as of {self.as_of or 'latest order'}",
            "target": "analytics",
        }


@io_task
def extract(ctx: Data2botsContext, as_of: dt.date | None) -> dict[str, pd.DataFrame] | None:
    """Read staging and the reference tables; decide the day; None when that day already ran (and not forced)."""
    with ledger_state(ctx, "extract") as entry:
        ctx.staging_version = data2bots.staging_version(ctx.engine)
        # None: no orders yet (read_staging says what is missing)
        day = as_of or data2bots.latest_order_day(ctx.engine)
        previous = data2bots.previous_run(ctx.engine, day, ctx.staging_version) if day else None
        if previous == "current" and not (ctx.force or ctx.refresh_reference):  # new reference, new figures
            # decided before staging is read: the same staging version, so the rows that run read
            ctx.as_of = day
            entry.source = f"staging as of {day}"
            entry.rows_read = data2bots.rows_read_before(ctx.engine, ctx.ledger, day)
            ctx.counts["rows_read"] = entry.rows_read or 0
            entry.status = "skipped"
            entry.error = (
                f"analytics for {day} already ran; --force (force=true for a deployment run) runs it again"
            )
            return None
        staging = data2bots.read_staging(ctx.engine)
        ctx.as_of = day or data2bots.latest_order_date(staging)
        entry.source = f"staging as of {ctx.as_of}"
        entry.rows_read = sum(rules.rows(f) for f in staging.values())
        ctx.counts["rows_read"] = entry.rows_read  # staging comes compacted: rows, not frame lengths
        progress.tell(f"extract: the reference tables ({entry.rows_read:,} staging rows read)")
        ctx.reference = data2bots.read_reference(
            ctx.engine, ctx.settings, staging, ctx.as_of, ctx.refresh_reference
        )
        unshipped = data2bots.orders_without_shipment(ctx.engine, ctx.as_of)
        if unshipped:
            ctx.reference.notes.append(
                f"{counted(unshipped, 'order')} placed on or before {ctx.as_of - rules.UNDELIVERED_AFTER} "
                f"{'has' if unshipped == 1 else 'have'} no row in staging.shipment_deliveries: counted in no "
                "shipment figure (tt_undelivered_items counts shipment rows with neither date)"
            )
        if previous == "stale" and not (ctx.force or ctx.refresh_reference):
            ctx.reference.notes.append(
                f"analytics for {ctx.as_of} ran before, but staging files loaded since (or its export did not "
                "complete): that day is built again"
            )
    return staging


@step_task
def transform(ctx: Data2botsContext, staging: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Staging and the reference tables → the day's analytics tables; pure."""
    assert ctx.as_of is not None and ctx.reference is not None
    with ledger_state(ctx, "transform"):
        progress.tell(f"transform: the analytics for {ctx.as_of}")
        return data2bots.build(staging, ctx.reference, ctx.as_of)


@step_task
def validate(ctx: Data2botsContext, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every built table against its strict model; returns the failed checks (none: ``validate`` succeeds).

    Pure: failures are written by the toolkit's ``quarantine`` (retried), then ``reject`` halts the run.
    """
    return checked(ctx, data2bots.failure_cases, tables)


@io_task
def ensure(ctx: Data2botsContext) -> None:
    """Create the reference, analytics and run tables if absent (part of the ``load`` state: extract has already
    seen which reference tables were absent, so the run's note still says "created (it was absent)")."""
    with ledger_state(ctx, "load", last=False):
        data2bots.ensure_tables(ctx.engine)


@io_task
def load(ctx: Data2botsContext, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    """The day's rows replaced, the reference tables asked for written, the run recorded: one transaction."""
    assert ctx.as_of is not None
    with ledger_state(ctx, "load") as entry:
        writes = ctx.reference.writes if ctx.reference else {}
        loaded = data2bots.load(ctx.engine, tables, ctx.as_of, ctx.ingestion_id, ctx.force, writes)
        entry.rows_loaded = data2bots.analytics_rows(loaded)
    return loaded


@io_task
def export(ctx: Data2botsContext) -> dict[str, str]:
    """The analytics tables as CSV in the export zone; returns where each went."""
    assert ctx.as_of is not None
    with ledger_state(ctx, "export"):
        written = data2bots.export(ctx.engine, ctx.settings)
        data2bots.mark_exported(ctx.engine, ctx.as_of, ctx.staging_version)
        return written
