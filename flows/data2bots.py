"""Flow ``analytics``: Data2bots staging → ``analytics`` tables for one ingestion date → CSV exports."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from flows.names import data2bots_run_name
from flows.skeleton import (
    completed,
    held,
    new_report,
    pipeline_flow,
    quarantined,
    skipped,
    start_run,
    step,
    validated,
)
from sluice.data2bots import analytics_rows
from sluice.report import IngestReport, markdown
from tasks.data2bots import Data2botsContext, ensure, export, extract, load, transform, validate


class Data2botsReport(IngestReport):
    as_of: dt.date | None = None
    loaded: dict[str, int] = Field(default_factory=dict)
    exports: dict[str, str] = Field(default_factory=dict)


@pipeline_flow("analytics", data2bots_run_name)
def data2bots(
    as_of: Annotated[
        dt.date | None,
        Field(description="Ingestion date to analyse (YYYY-MM-DD); empty = the latest order date."),
    ] = None,
    force: Annotated[
        bool, Field(description="Run again for a day that already ran (replaces its rows).")
    ] = False,
    refresh_reference: Annotated[
        bool,
        Field(
            description=(
                "Rewrite if_common.dim_dates and dim_products from SLUICE_HOLIDAYS_FILE / SLUICE_PRODUCTS_FILE "
                "and build the day again (otherwise existing reference tables are only read)."
            )
        ),
    ] = False,
) -> Data2botsReport | State:
    """Build agg_public_holiday, agg_shipments and best_performing_product for one day; export them as CSV.

    Args:
        as_of: Ingestion date to analyse (YYYY-MM-DD); empty = the latest order date in staging.
        force: Run again for a day that already ran (replaces that day's rows).
        refresh_reference: Rewrite the reference tables from the configured lists (default: only read them,
            creating one only when it is absent).
    """
    logger = get_run_logger()
    ctx = start_run(Data2botsContext, force=force, as_of=as_of, refresh_reference=refresh_reference)
    report = new_report(Data2botsReport, ctx, dataset="analytics", source="staging", table="analytics")
    with held(ctx, report, _publish, on_failure=quarantined):
        staging = step(report, "extract", extract, ctx, as_of)
        report.as_of = ctx.as_of
        report.source = f"staging as of {ctx.as_of}"
        # read to decide, skipped or not (its ledger entry counts them too)
        report.rows_read = ctx.counts["rows_read"]
        if staging is None:
            report.status = "skipped"
            report.error = f"analytics for {ctx.as_of} already ran; --force (force=true for a deployment run) runs it again"
            logger.info(report.error)
            return skipped(report)
        report.notes = list(ctx.reference.notes) if ctx.reference else []
        for note in report.notes:
            logger.warning(note)
        tables = step(report, "transform", transform, ctx, staging)
        # what transform noticed (a best product without a name, a year without holidays) joins extract's notes
        for note in ctx.reference.notes[len(report.notes) :] if ctx.reference else []:
            logger.warning(note)
            report.notes.append(note)
        validated(report, ctx, validate, tables)
        step(report, "load", ensure, ctx)
        report.loaded = step(report, "load", load, ctx, tables)
        report.rows_loaded = analytics_rows(report.loaded)
        report.exports = step(report, "export", export, ctx)
        report.status = "success"
    logger.info(
        "analytics for %s: %s rows written, %d tables exported",
        ctx.as_of,
        report.rows_loaded,
        len(report.exports),
    )
    return completed(report)


def _publish(report: Data2botsReport) -> None:
    """The run's summary (and its notes, e.g. reference tables created) as one Prefect artifact per run."""
    create_markdown_artifact(
        key="analytics",
        markdown=markdown(report),
        description=f"analytics {report.status} for {report.as_of}",
    )
