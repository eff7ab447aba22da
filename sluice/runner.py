"""Run the ingest flow in this process and always come back with a report (never a traceback)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sluice.report import IngestionFailed, IngestReport


def run_ingest(
    source: str, *, dataset: str | None = None, mode: str | None = None, force: bool = False
) -> IngestReport:
    """Run ``ingest-file`` for one file; a failed run returns a report with ``status='failed'``."""
    from flows.ingest import ingest_file
    from sluice.runtime import in_process_run

    with in_process_run():
        state = ingest_file(source=source, dataset=dataset, mode=mode, force=force, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, IngestReport):
        return result
    if isinstance(result, IngestionFailed):
        return result.report
    message = str(result) if isinstance(result, BaseException) else (state.message or state.name)
    return IngestReport(
        run_id=None, dataset=dataset, source=source, status="failed", state=None, error=message
    )


def run_totesys() -> IngestReport:
    """One Totesys cycle in this process; a failed cycle returns its report with ``status='failed'``."""
    from flows.totesys import totesys
    from sluice.runtime import in_process_run

    with in_process_run():
        state = totesys(return_state=True)
    return _reported(state, "totesys")


def run_analytics(
    as_of: date | None = None, force: bool = False, refresh_reference: bool = False
) -> IngestReport:
    """One Data2bots analytics run in this process; never raises for a failed run."""
    from flows.analytics import analytics
    from sluice.runtime import in_process_run

    with in_process_run():
        state = analytics(as_of=as_of, force=force, refresh_reference=refresh_reference, return_state=True)
    return _reported(state, "analytics")


def _reported(state: Any, name: str) -> IngestReport:
    result = state.result(raise_on_failure=False)
    if isinstance(result, IngestReport):
        return result
    if isinstance(result, IngestionFailed):
        return result.report
    message = str(result) if isinstance(result, BaseException) else (state.message or state.name)
    return IngestReport(run_id=None, dataset=name, source="?", status="failed", state=None, error=message)


def run_customers() -> IngestReport:
    """One Sertis gold build in this process; never raises for a failed run."""
    from flows.customers import customers
    from sluice.runtime import in_process_run

    with in_process_run():
        state = customers(return_state=True)
    return _reported(state, "customers")
