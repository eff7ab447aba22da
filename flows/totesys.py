"""Flow ``totesys``: one cycle of the OLTP → star-schema warehouse pipeline (scheduled every 20 minutes)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import Field

from flows.names import TIMEOUT_SECONDS, totesys_run_name
from sluice import totesys as core
from sluice.errors import SluiceError
from sluice.ledger import get_ledger, hold_run, reap_abandoned, release_run
from sluice.notify import notify_hooks
from sluice.report import IngestionFailed, IngestReport
from sluice.settings import get_settings
from sluice.totesys_source import source_url
from tasks.ingest import with_retries
from tasks.totesys import CycleContext, extract, load, transform, validate


class CycleReport(IngestReport):
    """An ingest report plus the per-table figures of a Totesys cycle."""

    extracted: dict[str, int] = Field(default_factory=dict)
    loaded: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0


@flow(
    name="totesys",
    flow_run_name=totesys_run_name,
    timeout_seconds=TIMEOUT_SECONDS["totesys"],
    log_prints=False,
    **notify_hooks(),
)
def totesys() -> CycleReport:
    """Extract what changed in the Totesys OLTP, build the star schema, load it atomically."""
    logger = get_run_logger()
    started = time.perf_counter()
    settings = get_settings()
    ledger = get_ledger(settings)
    reap_abandoned(ledger)
    run_id = flow_run.get_id()
    url = source_url(settings)
    ctx = CycleContext(
        ingestion_id=uuid.UUID(run_id) if run_id else uuid.uuid4(),
        run_at=datetime.now(UTC).replace(tzinfo=None),
        source_url=url,
        settings=settings,
        ledger=ledger,
        flow_run_id=run_id,
    )
    report = CycleReport(
        run_id=str(ctx.ingestion_id),
        dataset="totesys",
        source=core.describe_source(url),
        status="running",
        state="extract",
        table=core.SCHEMA,
        flow_run_id=run_id,
    )
    hold_run(ledger, ctx.ingestion_id)
    try:
        extracted = with_retries(extract, settings)(ctx)
        report.extracted = {t: len(b.frame) for t, b in extracted.batches.items()}
        report.rows_read = extracted.rows
        if not extracted.batches:
            report.status = "skipped"
            report.error = "no new data since the watermarks"
            logger.info("totesys: no new data since the watermarks (%d tables checked)", len(extracted.read))
            return _finish(report, started)
        report.state = "transform"
        tables = transform(ctx, extracted)
        report.state = "validate"
        validate(ctx, tables)
        report.state = "load"
        report.loaded = with_retries(load, settings)(ctx, tables, extracted)
        report.rows_loaded = sum(report.loaded.values())
        report.status = "success"
    except Exception as exc:
        report.status = "failed"
        report.error = str(exc) if isinstance(exc, SluiceError) else f"{type(exc).__name__}: {exc}"
        report.rows_quarantined = ctx.counts.get("rows_quarantined") or 0
        report.quarantine_uri = ctx.counts.get("quarantine_uri")
        _finish(report, started)
        raise IngestionFailed(report) from None
    finally:
        release_run(ledger)
    logger.info(
        "totesys: %d rows extracted from %d tables, %d rows loaded",
        report.rows_read,
        len(report.extracted),
        report.rows_loaded,
    )
    return _finish(report, started)


def _finish(report: CycleReport, started: float) -> CycleReport:
    report.seconds = round(time.perf_counter() - started, 2)
    lines = [
        f"## totesys: {report.status} at `{report.state}` in {report.seconds} s",
        "",
        "| table | extracted | | table | loaded |",
        "|---|---|---|---|---|",
    ]
    left = sorted(report.extracted.items())
    right = sorted(report.loaded.items())
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ("", "")
        b = right[i] if i < len(right) else ("", "")
        lines.append(f"| {a[0]} | {a[1]} | | {b[0]} | {b[1]} |")
    if report.error:
        lines += ["", f"**{'Note' if report.status == 'skipped' else 'Error'}:** {report.error}"]
    create_markdown_artifact(key="totesys", markdown="\n".join(lines), description=f"totesys {report.status}")
    return report
