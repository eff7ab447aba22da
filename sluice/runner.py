"""Run the ingest flow in this process and always come back with a report (never a traceback)."""

from __future__ import annotations

from sluice.report import IngestionFailed, IngestReport


def run_ingest(
    source: str, *, dataset: str | None = None, mode: str | None = None, force: bool = False
) -> IngestReport:
    """Run ``ingest-file`` for one file; a failed run returns a report with ``status='failed'``."""
    from flows.ingest import ingest_file

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

    state = totesys(return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, IngestReport):
        return result
    if isinstance(result, IngestionFailed):
        return result.report
    message = str(result) if isinstance(result, BaseException) else (state.message or state.name)
    return IngestReport(
        run_id=None, dataset="totesys", source="?", status="failed", state=None, error=message
    )
