"""Flow ``customers`` (Sertis gold): all of silver → ``customers(customer_id, favourite_product, longest_streak)``."""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from flows.names import TIMEOUT_SECONDS, customers_run_name
from schemas.sertis import Customer
from sluice import sertis
from sluice.errors import SluiceError
from sluice.ingest import validate_table
from sluice.ledger import Ledger, LedgerEntry, get_ledger, hold_run, reap_abandoned, release_run, tracked
from sluice.notify import notify_hooks
from sluice.report import IngestionFailed, IngestReport, markdown
from sluice.settings import Settings, get_settings
from sluice.transforms.sertis import build_customers
from sluice.warehouse import get_engine
from tasks.ingest import io_task, with_retries


class GoldReport(IngestReport):
    customers: int = 0
    gold_uri: str | None = Field(default=None, description="The gold Parquet")


def _state(
    ledger: Ledger, run: uuid.UUID, flow_run_id: str | None, counts: dict[str, Any], state: str
) -> AbstractContextManager[LedgerEntry]:
    return tracked(
        ledger,
        counts,
        ingestion_id=run,
        state=state,
        dataset="customers",
        source="sertis.transactions (silver)",
        target="sertis.customers",
        flow_run_id=flow_run_id,
    )


@io_task
def extract(settings: Settings) -> pd.DataFrame:
    return sertis.read_silver(get_engine(settings))


@task(name="transform", cache_policy=NO_CACHE)
def transform(silver: pd.DataFrame) -> pd.DataFrame:
    return build_customers(silver)


@task(name="validate", cache_policy=NO_CACHE)
def validate(gold: pd.DataFrame) -> None:
    validate_table(Customer, gold, "gold customers")


@io_task
def load(settings: Settings, gold: pd.DataFrame) -> str:
    return sertis.load_gold(get_engine(settings), gold, settings)


@flow(
    name="customers",
    flow_run_name=customers_run_name,
    timeout_seconds=TIMEOUT_SECONDS["customers"],
    log_prints=False,
    **notify_hooks(),
)
def customers() -> GoldReport:
    """Rebuild the Sertis gold table from all of silver (replaced per run, in one transaction)."""
    logger = get_run_logger()
    settings = get_settings()
    ledger = get_ledger(settings)
    reap_abandoned(ledger)
    run_id = flow_run.get_id()
    run = uuid.UUID(run_id) if run_id else uuid.uuid4()
    counts: dict[str, Any] = {}
    report = GoldReport(
        run_id=str(run), dataset="customers", source="sertis.transactions", status="running", state="extract",
        table="sertis.customers", flow_run_id=run_id,
    )  # fmt: skip
    hold_run(ledger, run)
    try:
        with _state(ledger, run, run_id, counts, "extract") as entry:
            silver = with_retries(extract, settings)(settings)
            entry.rows_read = report.rows_read = len(silver)
        report.state = "transform"
        with _state(ledger, run, run_id, counts, "transform"):
            gold = transform(silver)
        report.state = "validate"
        with _state(ledger, run, run_id, counts, "validate"):
            validate(gold)
        report.state = "load"
        with _state(ledger, run, run_id, counts, "load") as entry:
            report.gold_uri = with_retries(load, settings)(settings, gold)
            entry.rows_loaded = report.rows_loaded = report.customers = len(gold)
        report.status = "success"
    except Exception as exc:
        report.status = "failed"
        report.error = str(exc) if isinstance(exc, SluiceError) else f"{type(exc).__name__}: {exc}"
        raise IngestionFailed(report) from None
    finally:
        release_run(ledger)
        _publish(report)
    logger.info("customers: %d from %d silver rows", report.customers, report.rows_read)
    return report


def _publish(report: IngestReport) -> None:
    """The run's summary in the UI's Artifacts tab (as ingest-file and totesys have)."""
    create_markdown_artifact(
        key="customers", markdown=markdown(report), description=f"customers {report.status}: {report.source}"
    )
