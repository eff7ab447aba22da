"""Flow ``totesys``: one cycle of the OLTP → star-schema warehouse pipeline (scheduled every 20 minutes)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from flows.names import totesys_run_name
from flows.skeleton import (
    completed,
    held,
    new_report,
    open_ledger,
    pipeline_flow,
    quarantined,
    skipped,
    start_run,
    step,
    validated,
)
from sluice import totesys as core
from sluice.adapters.totesys_source import source_url
from sluice.report import IngestReport
from sluice.transforms.totesys import lineage
from tasks.totesys import (
    TotesysContext,
    ensure,
    extract,
    load,
    read_lookups,
    transform,
    validate,
    write_processed,
)


class TotesysReport(IngestReport):
    """An ingest report plus the per-table figures of a Totesys cycle."""

    extracted: dict[str, int] = Field(default_factory=dict)
    loaded: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0
    started: float = Field(default_factory=time.perf_counter, exclude=True)


@pipeline_flow("totesys", totesys_run_name)
def totesys() -> TotesysReport | State:
    """Extract what changed in the Totesys OLTP, build the star schema, load it atomically."""
    logger = get_run_logger()
    settings, ledger = open_ledger()
    url = source_url(settings)
    ctx = start_run(
        TotesysContext, settings, ledger, run_at=datetime.now(UTC).replace(tzinfo=None), source_url=url
    )
    report = new_report(
        TotesysReport, ctx, dataset="totesys", source=core.describe_source(url), table=core.SCHEMA
    )
    with held(ctx, report, _publish, on_failure=quarantined):
        step(report, "extract", ensure, ctx)
        extracted = step(report, "extract", extract, ctx)
        report.extracted = {t: b.rows for t, b in extracted.batches.items()}
        report.rows_read = extracted.rows
        if not extracted.batches:
            report.status = "skipped"
            report.error = extracted.why_nothing
            logger.info("totesys: %s (%d tables checked)", report.error, len(extracted.read))
            return skipped(report)
        lookups = step(report, "transform", read_lookups, ctx)
        built = step(report, "transform", transform, ctx, extracted, lookups)
        step(report, "transform", write_processed, ctx, built.tables)
        validated(report, ctx, validate, built, extracted)
        report.loaded = step(report, "load", load, ctx, built.tables, extracted)
        report.rows_loaded = sum(report.loaded.values())
        report.status = "success"
    logger.info(
        "totesys: %d rows extracted from %d tables, %d rows loaded",
        report.rows_read,
        len(report.extracted),
        report.rows_loaded,
    )
    return completed(report)


def _publish(report: TotesysReport) -> None:
    """The cycle's per-table figures as the run's artifact."""
    report.seconds = round(time.perf_counter() - report.started, 2)
    lines = [
        f"## totesys: {report.status} at `{report.state}` in {report.seconds} s",
        "",
        "| warehouse table | rows loaded | built from (rows extracted) |",
        "|---|---:|---|",
    ]
    lines += [
        f"| {name} | {rows:,} | {built_from} |"
        for name, rows, built_from in lineage(report.extracted, report.loaded)
    ]
    if report.error:
        lines += ["", f"**{'Note' if report.status == 'skipped' else 'Error'}:** {report.error}"]
    create_markdown_artifact(key="totesys", markdown="\n".join(lines), description=f"totesys {report.status}")
