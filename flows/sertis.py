"""Flow ``customers`` (Sertis gold): all of silver → ``customers(customer_id, favourite_product, longest_streak)``."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from flows.names import sertis_run_name
from flows.skeleton import (
    completed,
    held,
    new_report,
    pipeline_flow,
    quarantined,
    start_run,
    step,
    validated,
)
from sluice.report import IngestReport, markdown
from tasks.sertis import SertisContext, ensure, extract, load, publish, transform, validate


class SertisReport(IngestReport):
    customers: int = 0
    lines_counted: int = Field(
        default=0, description="Silver lines gold counts: all it read but those a later file delivered again"
    )
    gold_uri: str | None = Field(default=None, description="The gold Parquet")


@pipeline_flow("customers", sertis_run_name)
def sertis() -> SertisReport | State:
    """Rebuild the Sertis gold table from all of silver (replaced per run, in one transaction)."""
    ctx = start_run(SertisContext)
    report = new_report(
        SertisReport, ctx, dataset="customers", source="sertis.transactions", table="sertis.customers"
    )
    with held(ctx, report, _publish, on_failure=quarantined):
        silver = step(report, "extract", extract, ctx)
        report.rows_read = silver.lines + silver.superseded  # all of silver, as the ledger counts it
        report.lines_counted = silver.lines
        report.notes = list(ctx.notes)
        gold = step(report, "transform", transform, ctx, silver)
        validated(report, ctx, validate, gold)
        step(report, "load", ensure, ctx)
        report.rows_loaded = report.customers = step(report, "load", load, ctx, gold)
        report.gold_uri = step(report, "load", publish, ctx, gold)
        report.status = "success"
    get_run_logger().info(
        "customers: %d from %d of the %d silver rows",
        report.customers,
        report.lines_counted,
        report.rows_read,
    )
    return completed(report)


def _publish(report: IngestReport) -> None:
    """The run's summary in the UI's Artifacts tab."""
    create_markdown_artifact(
        key="customers", markdown=markdown(report), description=f"customers {report.status}: {report.source}"
    )
