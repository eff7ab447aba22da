"""Run a flow in this process and always come back with a report (never a traceback).

Imported by the commands only after ``runtime.prepare`` has set Prefect's environment: importing the flows
imports Prefect, which reads its settings once, at import.
"""

from __future__ import annotations

from datetime import date

from flows.data2bots import data2bots
from flows.ingest import ingest_file
from flows.sertis import sertis
from flows.totesys import totesys
from sluice.adapters import storage
from sluice.report import IngestReport, report_of
from sluice.runtime import in_process_run


def run_ingest(
    source: str, *, dataset: str | None = None, mode: str | None = None, force: bool = False
) -> IngestReport:
    """Run ``ingest-file`` for one file; a failed run returns a report with ``status='failed'``."""
    source = storage.absolute(source)  # the run's parameter too: one file is one source, whatever the cwd
    with in_process_run():
        state = ingest_file(source=source, dataset=dataset, mode=mode, force=force, return_state=True)
    return report_of(state, dataset, source)


def run_totesys() -> IngestReport:
    """One Totesys cycle in this process; a failed cycle returns its report with ``status='failed'``."""
    with in_process_run():
        state = totesys(return_state=True)
    return report_of(state, "totesys")


def run_data2bots(
    as_of: date | None = None, force: bool = False, refresh_reference: bool = False
) -> IngestReport:
    """One Data2bots analytics run in this process; never raises for a failed run."""
    with in_process_run():
        state = data2bots(as_of=as_of, force=force, refresh_reference=refresh_reference, return_state=True)
    return report_of(state, "analytics")


def run_sertis() -> IngestReport:
    """One Sertis gold build in this process; never raises for a failed run."""
    with in_process_run():
        state = sertis(return_state=True)
    return report_of(state, "customers")
