"""Flow ``analytics``: Data2bots staging → ``analytics`` tables for one ingestion date → CSV exports."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import Field

from flows.names import TIMEOUT_SECONDS, analytics_run_name
from sluice.errors import SluiceError
from sluice.ledger import get_ledger, hold_run, reap_abandoned, release_run
from sluice.notify import notify_hooks
from sluice.report import IngestionFailed, IngestReport, markdown
from sluice.settings import get_settings
from tasks.analytics import AnalyticsContext, export, extract, load, transform, validate
from tasks.ingest import with_retries


class AnalyticsReport(IngestReport):
    as_of: dt.date | None = None
    loaded: dict[str, int] = Field(default_factory=dict)
    exports: dict[str, str] = Field(default_factory=dict)


@flow(
    name="analytics",
    flow_run_name=analytics_run_name,
    timeout_seconds=TIMEOUT_SECONDS["analytics"],
    log_prints=False,
    validate_parameters=True,
    **notify_hooks(),
)
def analytics(
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
                "(otherwise existing reference tables are only read)."
            )
        ),
    ] = False,
) -> AnalyticsReport:
    """Build agg_public_holiday, agg_shipments and best_performing_product for one day; export them as CSV.

    Args:
        as_of: Ingestion date to analyse (YYYY-MM-DD); empty = the latest order date in staging.
        force: Run again for a day that already ran (replaces that day's rows).
        refresh_reference: Rewrite the reference tables from the configured lists (default: only read them,
            creating one only when it is absent).
    """
    logger = get_run_logger()
    settings = get_settings()
    ledger = get_ledger(settings)
    reap_abandoned(ledger)
    run_id = flow_run.get_id()
    ctx = AnalyticsContext(
        ingestion_id=uuid.UUID(run_id) if run_id else uuid.uuid4(),
        settings=settings,
        ledger=ledger,
        force=force,
        as_of=as_of,
        flow_run_id=run_id,
        refresh_reference=refresh_reference or settings.refresh_reference,
    )
    report = AnalyticsReport(
        run_id=str(ctx.ingestion_id),
        dataset="analytics",
        source="staging",
        status="running",
        state="extract",
        table="analytics",
        flow_run_id=run_id,
    )
    hold_run(ledger, ctx.ingestion_id)
    try:
        staging = with_retries(extract, settings)(ctx, as_of)
        report.as_of = ctx.as_of
        report.source = f"staging as of {ctx.as_of}"
        if staging is None:
            report.status = "skipped"
            report.error = f"analytics for {ctx.as_of} already ran; use force to run again"
            logger.info(report.error)
            return report
        report.notes = list(ctx.reference.notes) if ctx.reference else []
        for note in report.notes:
            logger.warning(note)
        report.rows_read = sum(len(f) for f in staging.values())
        report.state = "transform"
        tables = transform(ctx, staging)
        report.state = "validate"
        validate(ctx, tables)
        report.state = "load"
        report.loaded = with_retries(load, settings)(ctx, tables)
        report.rows_loaded = sum(report.loaded.values())
        report.state = "export"
        report.exports = with_retries(export, settings)(ctx)
        report.status = "success"
    except Exception as exc:
        report.status = "failed"
        report.error = str(exc) if isinstance(exc, SluiceError) else f"{type(exc).__name__}: {exc}"
        raise IngestionFailed(report) from None
    finally:
        release_run(ledger)
        _publish(report)
    logger.info(
        "analytics for %s: %s rows written, %d tables exported",
        ctx.as_of,
        report.rows_loaded,
        len(report.exports),
    )
    return report


def _publish(report: AnalyticsReport) -> None:
    """The run's summary (and its notes, e.g. reference tables created) as one Prefect artifact per run."""
    create_markdown_artifact(
        key="analytics",
        markdown=markdown(report),
        description=f"analytics {report.status} for {report.as_of}",
    )
