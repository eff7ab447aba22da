"""Run a flow in this process and always come back with a report (never a traceback).

Imported by the commands only after ``runtime.prepare`` has set Prefect's environment: importing the flows
imports Prefect, which reads its settings once, at import.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Any

from flows.data2bots import data2bots
from flows.ingest import ingest_file
from flows.sertis import sertis
from flows.skeleton import finished_report
from flows.totesys import totesys
from sluice.adapters import storage
from sluice.cli.output import warn
from sluice.errors import chain, rows_line
from sluice.ledger import get_ledger, summarize
from sluice.report import IngestReport, report_from_entries, report_of, stop_of, too_late
from sluice.runtime import in_process_run


def run_ingest(
    source: str, *, dataset: str | None = None, mode: str | None = None, force: bool = False
) -> IngestReport:
    """Run ``ingest-file`` for one file; a failed run returns a report with ``status='failed'``."""
    source = storage.absolute(source)  # the run's parameter too: one file is one source, whatever the cwd
    started = datetime.now(UTC)
    try:
        with in_process_run():
            state = ingest_file(source=source, dataset=dataset, mode=mode, force=force, return_state=True)
    except Exception as exc:
        loaded = _loaded_while_prefect_was_away(exc, source, started)
        if loaded is None:
            raise
        return loaded
    return settled(state, dataset, source)


def _loaded_while_prefect_was_away(exc: Exception, source: str, started: datetime) -> IngestReport | None:
    """The report of this command's run of ``source`` from the ledger, when the Prefect API went away (killed,
    stopped) but the run's load committed: the command said ``error: the Prefect API: … Connection refused``,
    exit 1, of a file that had loaded (and a backfill counted it failed). None otherwise."""
    httpx = sys.modules.get("httpx")
    if httpx is None or not any(isinstance(seen, httpx.TransportError) for seen in chain(exc)):
        return None
    try:
        runs = get_ledger().recent(50)
    except Exception:  # the warehouse went with it: the caller's error stands
        return None
    for entries in runs:
        loads = [e for e in entries if e.state == "load" and e.status == "success"]
        if entries[-1].source == source and loads and min(e.started_at for e in entries) >= started:
            report = report_from_entries(entries, source, None)  # the entries in hand: not read again
            report.status, report.state, report.error = "success", "load", None
            note = (
                f"the Prefect API went away ({type(exc).__name__}) after this run's load committed: the ledger "
                "has it; Prefect still shows the run Running (`sluice services status`)"
            )
            report.notes.append(note)
            warn(note)
            return report
    return None


def run_totesys() -> IngestReport:
    """One Totesys cycle in this process; a failed cycle returns its report with ``status='failed'``."""
    with in_process_run():
        state = totesys(return_state=True)
    return settled(state, "totesys")


def run_data2bots(
    as_of: date | None = None, force: bool = False, refresh_reference: bool = False
) -> IngestReport:
    """One Data2bots analytics run in this process; never raises for a failed run."""
    with in_process_run():
        state = data2bots(as_of=as_of, force=force, refresh_reference=refresh_reference, return_state=True)
    return settled(state, "analytics")


def run_sertis() -> IngestReport:
    """One Sertis gold build in this process; never raises for a failed run."""
    with in_process_run():
        state = sertis(return_state=True)
    return settled(state, "customers")


def settled(state: Any, dataset: str | None, source: str = "?") -> IngestReport:
    """The command's report of its run's final state (``report_of``). A run cancelled from Prefect is a failed
    command whose error says so (``cancelled: …``); the ledger and the alert say ``cancelled``."""
    if state.is_cancelling():
        return _cancelled_too_late(state, dataset, source)
    report = report_of(state, dataset, source)
    if report.status == "cancelled":
        report.status = "failed"
    return report


def _cancelled_too_late(state: Any, dataset: str | None, source: str) -> IngestReport:
    """A run cancelled after its last checkpoint (``flows.skeleton.step``: its load had committed, or it was over
    before its first look) goes on to its end, and Prefect refuses it ``Completed``: the run stayed
    ``Cancelling`` for good, and the command printed a traceback (``UnfinishedRun``). What the ledger says stands;
    Prefect is told the same."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Completed

    run_id = state.state_details.flow_run_id
    stop = stop_of(state)
    assert stop is not None  # a Cancelling state
    why = stop[1]
    entries = get_ledger().history(run_id) if run_id else []
    done = summarize(entries)["status"] if entries else "failed"
    if done in ("success", "skipped"):
        report = finished_report(run_id) or report_from_entries(entries, source, None)
        report.status, report.error = done, report.error if done == "skipped" else None
        report.notes.append(too_late(why))
        rows = rows_line(report.rows_read, report.rows_loaded, report.table, report.rows_quarantined)
        final: Any = Completed(message=f"{rows} ({why}: too late)")
    else:
        report = (
            report_from_entries(entries, source, why)
            if entries
            else IngestReport(
                run_id=str(run_id) if run_id else None,
                dataset=dataset,
                source=source,
                status="failed",
                state=None,
                error=why,
            )
        )
        report.status, report.error = "failed", why
        final = Cancelled(message=why)
    if run_id:
        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(run_id, final, force=True)
        except Exception as exc:  # the report stands; the UI keeps showing Cancelling
            warn(f"Prefect still shows run {run_id} Cancelling: {exc}")
    return report
