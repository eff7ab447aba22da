"""Flow ``ingest-file``: one landed file → extract → transform → validate → load, exactly once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field

from flows.names import ingest_run_name
from flows.skeleton import (
    completed,
    held,
    ingestion_id,
    new_report,
    open_ledger,
    pipeline_flow,
    skipped,
    start_run,
    step,
)
from sluice import datasets, logs
from sluice.adapters import storage
from sluice.errors import (
    BadFile,
    SluiceError,
    SourceNotFound,
    UnknownDataset,
    ValidationFailed,
    clipped,
    described,
    rows_line,
)
from sluice.ledger import Ledger, LedgerEntry
from sluice.report import IngestionFailed, IngestReport, markdown
from tasks.ingest import (
    AlreadyLoaded,
    IngestContext,
    Superseded,
    concurrently_loaded,
    extract,
    load,
    publish,
)


class Unclaimed(Exception):
    """No dataset claims the file's key: recorded as skipped, not a failure (an event for another prefix)."""


def _start(
    source: str, dataset: str | None, mode: str | None, force: bool, version_id: str | None = None
) -> IngestContext:
    settings, ledger = open_ledger()
    forms = storage.key_forms(source)  # an S3 event's key is URL-encoded: the dataset claims the decoded one
    if storage.is_s3(source) and any(form.endswith("/") for form in forms):
        if size := storage.folder_key_bytes(storage.locate(source, version_id), version_id):
            message = f"{source}: {storage.folder_key_holds(size)}"
            _record_refusal(ledger, source, dataset, "fail", message)
            raise BadFile(message)
        message = f"{source}: a folder marker (the key ends with '/'), not a file; skipped"
        _record_refusal(ledger, source, dataset, "skipped", message)
        raise Unclaimed(message)
    if storage.is_s3(source) and not dataset and storage.left_out(storage.split_s3(source)[1]):
        # what a backfill's listing leaves out (storage.left_out) is not a landed file either when its S3 event comes
        message = (
            f"{source}: a hidden or partial object (.name, *.part: a copy in flight), not a landed file; skipped "
            "(--dataset NAME loads it as NAME)"
        )
        _record_refusal(ledger, source, dataset, "skipped", message)
        raise Unclaimed(message)
    try:
        spec = (
            datasets.get_dataset(dataset)
            if dataset
            else next((d for form in forms if (d := datasets.resolve(form)) is not None), None)
        )
    except UnknownDataset as exc:
        _record_refusal(ledger, source, dataset, "fail", str(exc))
        raise
    if spec is None and not storage.is_s3(source) and not Path(storage.local_path(source)).exists():
        # A mistyped local path is a failure, not "unclaimed" (an unclaimed S3 key is an event for another prefix).
        message = f"{source}: file not found"
        _record_refusal(ledger, source, dataset, "fail", message)
        raise SourceNotFound(message)
    if spec is None:
        # an S3 event for another prefix names a key; a local path names a file
        claimed = "key" if storage.is_s3(source) else "file's name"
        message = f"{source}: no registered dataset claims this {claimed}; skipped (--dataset NAME loads it as NAME)"
        _record_refusal(ledger, source, dataset, "skipped", message)
        raise Unclaimed(message)
    hard = mode == "hard" if mode else (spec.hard if spec.hard is not None else settings.hard_testing)
    return start_run(
        IngestContext,
        settings,
        ledger,
        dataset=spec,
        source=storage.locate(
            source, version_id or None
        ),  # the object's real key: ledger, alerts, quarantine
        hard=hard,
        force=force,
        version_id=version_id or None,
    )


def _claimed_by(source: str) -> str | None:
    """The dataset that claims ``source``'s key, for a run that failed before it could resolve it (the ledger
    could not be opened); None if none does."""
    try:
        spec = next(
            (d for form in storage.key_forms(source) if (d := datasets.resolve(form)) is not None), None
        )
    except Exception:
        return None
    return spec.name if spec else None


def _record_refusal(ledger: Ledger, source: str, dataset: str | None, status: str, message: str) -> None:
    entry = LedgerEntry(
        ingestion_id=ingestion_id(),
        state="extract",
        dataset=dataset or "?",
        source=source,
        status=status,
        flow_run_id=flow_run.get_id(),
    )
    entry.error = message
    entry.finished_at = datetime.now(UTC)
    ledger.record(entry)


@pipeline_flow("ingest-file", ingest_run_name)
def ingest_file(
    source: Annotated[str, Field(description="The landed file: a local path or s3://bucket/key.")],
    dataset: Annotated[
        str | None, Field(description="Registered dataset name; empty = resolved from the file's key.")
    ] = None,
    mode: Annotated[
        Literal["hard", "soft"] | None,
        Field(
            description="hard: any bad row halts and nothing loads; soft: good rows load, bad rows quarantine."
        ),
    ] = None,
    force: Annotated[
        bool, Field(description="Reload a file already loaded, replacing its rows atomically.")
    ] = False,
    version_id: Annotated[
        str | None,
        Field(description="S3 object version to read (the event's version-id); empty = the latest."),
    ] = None,
) -> IngestReport | State:
    """Take one landed file through extract → transform → validate → load, exactly once.

    Args:
        source: The landed file: a local path or s3://bucket/key.
        dataset: A registered dataset's name (every module in sluice/datasets registers its own); empty =
            resolved from the file's key.
        mode: hard = any bad row halts and nothing loads; soft = good rows load, bad rows go to quarantine;
            empty = the dataset's default.
        force: Reload a file already loaded, replacing its rows atomically.
        version_id: S3 object version to read (the S3 event's version-id); empty = the latest version.
    """
    logger = get_run_logger()
    # `sluice ingest files/x.csv`: the ledger and the registry get the full path
    source = storage.absolute(source)
    try:
        ctx = _start(source, dataset, mode, force, version_id)
    except Unclaimed as exc:
        logger.info(str(exc))
        return skipped(
            IngestReport(
                run_id=None, dataset=None, source=source, status="skipped", state="extract", error=str(exc)
            )
        )
    except SluiceError as exc:
        report = IngestReport(
            run_id=str(ingestion_id()),
            dataset=dataset or _claimed_by(source),
            source=source,
            status="failed",
            state="extract",
            error=clipped(str(exc)),
        )
        logger.warning(str(exc))
        raise IngestionFailed(report) from None

    source = ctx.source  # an S3 event's URL-encoded key, decoded when that is the object's key
    logs.tag_run(dataset=ctx.dataset.name, source=source)  # an S3 event's run has no dataset parameter
    report = new_report(
        IngestReport, ctx, dataset=ctx.dataset.name, source=source, table=ctx.dataset.target or None
    )
    with held(ctx, report, _publish, on_failure=_failed_at):
        fetched = step(report, "extract", extract, ctx)
        if isinstance(fetched, Superseded | AlreadyLoaded):
            report.status, report.error = "skipped", fetched.reason
            logger.info("%s: skipped: %s", source, fetched.reason)
            return skipped(report)
        # One fused pass: transform and validate run chunk by chunk inside the load, overlapping the COPY.
        loaded = step(report, "load", load, ctx, fetched)
        report.rows_read = loaded.rows_read
        report.rows_quarantined = loaded.rows_invalid
        report.quarantine_uri = loaded.quarantine_uri
        report.failures = loaded.failures
        report.rows_loaded = loaded.outcome.rows_loaded
        report.status = "skipped" if loaded.outcome.skipped else "success"
        if loaded.outcome.skipped:
            report.error = concurrently_loaded(fetched.sha256, loaded.outcome.by)
        else:
            if ctx.dataset.after_load is not None:
                step(report, "publish", publish, ctx, fetched, loaded)
            _announce(report, fetched.sha256)
    logger.info(
        "%s: %s",
        source,
        rows_line(report.rows_read, report.rows_loaded, report.table, report.rows_quarantined),
    )
    return skipped(report) if report.status == "skipped" else completed(report)


def _failed_at(report: IngestReport, exc: Exception, ctx: IngestContext) -> None:
    """Where the fused pass failed (a bad file: transform; bad rows: validate) and what it had counted."""
    if report.state == "load" and isinstance(exc, BadFile):
        report.state = "transform"
    elif report.state == "load" and isinstance(exc, ValidationFailed):
        report.state = "validate"
    if isinstance(exc, ValidationFailed) and exc.failures:  # the artifact's table of the first failures
        report.failures = exc.failures
    report.error = described(exc)
    report.rows_read = ctx.counts.get("rows_read", report.rows_read)
    report.rows_quarantined = ctx.counts.get("rows_quarantined", report.rows_quarantined)
    report.quarantine_uri = ctx.counts.get("quarantine_uri", report.quarantine_uri)


def _announce(report: IngestReport, sha256: str) -> None:
    """Emit ``sluice.file.loaded``: what downstream triggers (e.g. the daily analytics) wait for."""
    emit_event(
        event="sluice.file.loaded",
        resource={
            "prefect.resource.id": f"sluice.dataset.{report.dataset}",
            "prefect.resource.name": str(report.dataset),
        },
        payload={
            "dataset": report.dataset,
            "source": report.source,
            "table": report.table,
            "rows_loaded": report.rows_loaded,
            "sha256": sha256,
            "ingestion_id": report.run_id,
        },
    )


def _publish(report: IngestReport) -> None:
    """The run's summary (and its first validation failures) as the run's artifact."""
    create_markdown_artifact(
        key=f"ingest-{(report.dataset or 'unknown').replace('_', '-').lower()}",
        markdown=markdown(report),
        description=f"{report.dataset} {report.status}: {report.source}",
    )
