"""Run reports: the JSON the CLI prints and the markdown artifact shown in the Prefect UI."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

from sluice.errors import counted, described, failed_check
from sluice.ledger import LedgerEntry, get_ledger, summarize
from sluice.ledger_entry import CANCELLED


class IngestReport(BaseModel):
    """Outcome of one ingestion (the CLI's ``--json``)."""

    run_id: str | None
    dataset: str | None
    source: str
    status: str  # success | failed | skipped
    state: str | None  # last state reached
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    quarantine_uri: str | None = None
    table: str | None = None
    error: str | None = None
    flow_run_id: str | None = None
    failures: list[dict[str, Any]] = []
    notes: list[str] = []  # what a user should know of a run that went well (e.g. reference tables created)


class IngestionFailed(Exception):
    """Raised by the flow after recording a failure, so that Prefect marks the run Failed."""

    def __init__(self, report: IngestReport) -> None:
        super().__init__(f"{report.dataset or 'ingest'} failed at {report.state}: {report.error}")
        self.report = report


#: How many failed checks ``sluice ingest`` prints under a soft load (the quarantine file has them all).
SHOWN_FAILURES = 3


def failure_lines(report: IngestReport, limit: int = SHOWN_FAILURES) -> list[str]:
    """The first ``limit`` failed checks of a run that quarantined rows, then how many more rows the quarantine file
    holds (a row can fail several checks: the rest is counted in rows, not checks)."""
    first = report.failures[:limit]
    more = report.rows_quarantined - len({f["row"] for f in first})
    lines = [failed_check(f) for f in first]
    if first and more > 0:
        lines.append(
            f"and {counted(more, 'more row')}: all of them, with the reason for each, in the quarantine file"
        )
    return lines


def markdown(report: IngestReport) -> str:
    """The run summary and the first validation failures, for a Prefect artifact."""
    lines = [
        f"## {report.dataset}: {report.status} at `{report.state}`",
        "",
        "| | |",
        "|---|---|",
        f"| source | `{report.source}` |",
        f"| table | `{report.table}` |",
        f"| rows read | {report.rows_read:,} |",
        f"| rows loaded | {report.rows_loaded:,} |",
        f"| rows quarantined | {report.rows_quarantined:,} |",
        f"| quarantine | `{report.quarantine_uri or '-'}` |",
    ]
    if report.error:
        lines += ["", f"**{'Note' if report.status == 'skipped' else 'Error'}:** {report.error}"]
    if report.notes:
        lines += ["", "### Notes", "", *[f"- {note}" for note in report.notes]]
    if report.failures:
        lines += [
            "",
            "### First validation failures",
            "",
            "| row | column | check | value |",
            "|---|---|---|---|",
        ]
        for f in report.failures:
            value = str(f.get("value")).replace("|", "\\|")
            lines.append(f"| {f['row']} | {f['column']} | {f['check']} | `{value}` |")
    return "\n".join(lines)


def stop_of(state: Any) -> tuple[str, str] | None:
    """(status, reason) of a flow run stopped from outside: ``cancelled``, or ``failed`` by its timeout; else None."""
    if state.is_cancelling() or state.is_cancelled():
        return "cancelled", f"{CANCELLED}{state.message or 'the run was cancelled'}"
    if state.name == "TimedOut":
        return "failed", f"timed out: {state.message or 'the flow run exceeded its timeout'}"
    return None


def too_late(why: str) -> str:
    """The note of a run stopped (``why``) after it had done its work: its load had committed."""
    return f"{why}: too late, the run had done its work"


def report_from_ledger(ingestion_id: uuid.UUID, source: str, error: str | None) -> IngestReport | None:
    """Rebuild a run's report from its ledger entries (crashes leave no report behind)."""
    entries = get_ledger().history(ingestion_id)
    return report_from_entries(entries, source, error) if entries else None


def report_from_entries(entries: list[LedgerEntry], source: str, error: str | None) -> IngestReport:
    """A run's report (``failed``) from its ledger entries, as ``summarize`` reads them."""
    summary = summarize(entries)
    return IngestReport(
        run_id=summary["run_id"],
        dataset=summary["dataset"],
        source=summary["source"] or source,
        status="failed",
        state=summary["state"],
        rows_read=summary["rows_read"],
        rows_loaded=summary["rows_loaded"],
        rows_quarantined=summary["rows_quarantined"],
        quarantine_uri=summary["quarantine_uri"],
        table=summary["table"],
        error=error or summary["error"],
    )


def report_of(state: Any, dataset: str | None, source: str = "?") -> IngestReport:
    """The report of a finished flow run's state: its own, or a failed one built from what went wrong (for a run
    stopped from outside, from its ledger: the state it reached, its counts, and why it stopped)."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, IngestReport):
        return result
    if isinstance(result, IngestionFailed):
        return result.report
    stop = stop_of(state)
    message = described(result) if isinstance(result, BaseException) else (state.message or state.name)
    if stop is not None:
        run_id = state.state_details.flow_run_id
        try:
            rebuilt = report_from_ledger(uuid.UUID(str(run_id)), source, stop[1]) if run_id else None
        except Exception:
            rebuilt = None
        report = rebuilt or IngestReport(
            run_id=None, dataset=dataset, source=source, status=stop[0], state=None, error=stop[1]
        )
        report.status = stop[0]
        return report
    return IngestReport(
        run_id=None, dataset=dataset, source=source, status="failed", state=None, error=message
    )
