"""Prefect tasks of the ingest flow: extract (the dataset's table ensured, then the file fetched and fingerprinted),
load (the fused read → transform → validate → COPY pass), publish; every one an ``io_task``.

Ensuring the table is part of ``extract``, not a task of its own: on every run but a dataset's first it is one
catalogue read (``tables.ensure``), and a task of its own cost every file three more Prefect events, a task run
and a ledger write (about 10 ms of the local Prefect server's CPU per file, the bottleneck of a backfill).

Transform and validate are not tasks of their own: they run chunk by chunk inside ``load``, overlapping the
COPY of the chunk before (ADR 0004), so a transient failure retries the whole pass and never half a file.
The ledger still records every state (extract, transform, validate, load); the three of the fused pass are
written by ``load`` as each stage starts and ends (their wall-clock intervals overlap; each stage's busy
seconds are logged). I/O tasks retry with the configured policy (tasks/toolkit.py); a ``SluiceError`` (bad
file, bad rows, unknown dataset) is never retried.

The fused pass writes its quarantine itself (the bad rows' CSV when the file is done, a file that cannot be
read): ``load`` is an ``io_task``, so those writes are retried with it, and their keys carry the ingestion id,
so a retry overwrites what an earlier attempt wrote and the load stays exactly once (one transaction).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect.concurrency.asyncio import (
    ConcurrencySlotAcquisitionError,
)  # the public name (sync raises it too)
from prefect.concurrency.sync import concurrency
from prefect.settings import get_current_settings

from sluice import ingest
from sluice.adapters import storage
from sluice.adapters.warehouse import get_engine
from sluice.errors import BadFile, ConfigurationError, DestinationUnwritable, ValidationFailed, described
from sluice.ledger import LedgerEntry, close_entry
from sluice.loading import LoadOutcome, already_loaded_reason, ensure_target, load_file, loaded_by
from sluice.registry import AfterLoad, Dataset
from tasks.toolkit import RunContext, io_task, ledger_state, reason

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class IngestContext(RunContext):
    """What every task of one file's ingestion needs to know."""

    dataset: Dataset
    source: str
    hard: bool
    force: bool
    version_id: str | None = None  # the S3 object version to read (from the event); None = the latest

    def labels(self) -> dict[str, str | None]:
        return {"dataset": self.dataset.name, "source": self.source, "target": self.dataset.target or None}

    @property
    def work(self) -> Path:
        return self.settings.work_dir / self.ingestion_id.hex

    @property
    def quarantine_base(self) -> str:
        return ingest.quarantine_location(
            self.settings.zone("quarantine"), self.dataset, self.source, self.ingestion_id
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


@dataclass(frozen=True)
class Superseded:
    """The event's object version is no longer the key's latest, and the dataset loads only the latest."""

    reason: str


@dataclass(frozen=True)
class AlreadyLoaded:
    """The file's content is loaded already (by the run the reason names)."""

    reason: str


@io_task
def extract(ctx: IngestContext) -> storage.FetchedFile | Superseded | AlreadyLoaded:
    """Fetch the landed file and fingerprint it; ``AlreadyLoaded`` when this content is loaded; ``Superseded`` when
    the key was overwritten since the event and the dataset replaces or upserts (an older version loaded after a
    newer one would put stale rows back: events can be handled out of order). First, the dataset's table and the
    exactly-once guard are created if absent (the guard is what "already loaded" is read from)."""
    with ledger_state(ctx, "extract") as entry:
        ensure_target(get_engine(ctx.settings), ctx.dataset)
        if (
            ctx.version_id
            and not ctx.force
            and ctx.dataset.load_mode != "append"
            and storage.is_s3(ctx.source)
            and (latest := storage.superseded_by(ctx.source, ctx.version_id))
        ):
            entry.status = "skipped"
            entry.error = (
                f"version {ctx.version_id} was overwritten by version {latest} of the same key, which its own event "
                f"loads; {ctx.dataset.name} {ctx.dataset.load_mode}s, so an older version is not loaded after it "
                "(--force, or force=true for a deployment run, loads this one)"
            )
            return Superseded(entry.error)
        fetched = storage.fetch(ctx.source, ctx.work / "source", ctx.version_id)
        engine = get_engine(ctx.settings)
        if (
            not ctx.force
            and ctx.dataset.table is not None
            and (earlier := loaded_by(engine, ctx.dataset.name, fetched.sha256)) is not None
        ):
            entry.status = "skipped"
            entry.error = already_loaded_reason(fetched.sha256, earlier)
            return AlreadyLoaded(entry.error)
    return fetched


@dataclass
class Loaded:
    """What the fused stage did: rows read, quarantined, loaded; where the quarantine went; busy seconds."""

    outcome: LoadOutcome
    rows_read: int
    rows_invalid: int
    quarantine_uri: str | None
    failures: list[dict[str, Any]]
    seconds: dict[str, float]
    spool: ingest.Spool | None


@io_task
def load(ctx: IngestContext, fetched: storage.FetchedFile) -> Loaded:
    """Read, transform, validate and COPY the file in one streaming pass, in one load transaction.

    The stages overlap (chunk k+1 is prepared while chunk k is in COPY), so they are one task: a transient
    failure retries the whole pass, never half a file. The ledger still gets ``transform``, ``validate`` and
    ``load``, each recorded ``running`` when that stage starts and closed when the pass ends; the stages
    overlap in wall time, and the busy seconds of each are logged. A file Arrow's reader refuses is read
    again, from the start and in a new transaction, with pandas' parser.
    """
    try:
        return _fused(ctx, fetched, reader="arrow")
    except ingest.ArrowReaderGaveUp:
        return _fused(ctx, fetched, reader="pandas")


def _fused(ctx: IngestContext, fetched: storage.FetchedFile, reader: str) -> Loaded:
    entries: dict[str, LedgerEntry] = {}

    def begin(stage: str) -> None:
        entry = LedgerEntry(
            ingestion_id=ctx.ingestion_id, state=stage, flow_run_id=ctx.flow_run_id, **ctx.labels()
        )
        ctx.ledger.record(entry)
        entries[stage] = entry

    def finish(stage: str, status: str, error: str | None = None, **counts: Any) -> None:
        entry = entries.get(stage)
        if entry is None or entry.status != "running":
            return
        for key, value in counts.items():
            setattr(entry, key, value)
        entry.status, entry.error = status, error
        close_entry(ctx.ledger, ctx.counts, entry)

    passed = ingest.FilePass(
        path=fetched.path,
        dataset=ctx.dataset,
        source=ctx.source,
        work=ctx.work,
        chunk_rows=ctx.settings.chunk_rows,
        hard=ctx.hard,
        quarantine_base=ctx.quarantine_base,
        reader=reader,
        spool=ingest.Spool(ctx.work / "valid") if ctx.dataset.after_load is not None else None,
        on_stage=begin,
    )
    engine = get_engine(ctx.settings)
    limit = ctx.settings.warehouse_concurrency_limit
    # strict: a configured limit that does not exist fails the run instead of silently not guarding.
    guard = concurrency(limit, occupy=1, strict=True) if limit else nullcontext()
    try:
        with guard:
            outcome = load_file(
                engine,
                ctx.dataset,
                ingestion_id=ctx.ingestion_id,
                source=fetched.uri,
                sha256=fetched.sha256,
                frames=_unchanged_at_end(passed.frames(), fetched),
                force=ctx.force,
                rows_hint=ingest.estimate_rows(fetched.path),
                bulk_index_rows=ctx.settings.bulk_index_rows,
            )
    except ingest.ArrowReaderGaveUp:
        raise  # not a failure: the caller reads the file again with pandas
    except ConcurrencySlotAcquisitionError as exc:
        if "must be created" not in str(exc):
            raise  # the Prefect API did not answer: transient, retried
        # Named with the server it was looked up on: `prefect gcl create` typed without PREFECT_API_URL makes the
        # limit on a temporary server of its own, not the one the runs use (locally: the home's).
        api = get_current_settings().api.url
        raise ConfigurationError(
            f"SLUICE_WAREHOUSE_CONCURRENCY_LIMIT is {limit!r}, but the Prefect server at {api} has no such global "
            f"concurrency limit: create it there (`PREFECT_API_URL={api} prefect gcl create {limit} --limit 4`) "
            "or unset the setting"
        ) from None
    except BadFile as exc:
        uri = ingest.quarantine_file(fetched.path, ctx.quarantine_base, str(exc))
        finish("load", "fail", "rolled back: the file could not be read to its end")
        finish("validate", "fail", "stopped: the file could not be read to its end")
        finish("transform", "fail", str(exc), rows_read=passed.rows_read or None, quarantine_uri=uri)
        raise
    except ValidationFailed as exc:
        finish("transform", "success", rows_read=passed.rows_read)
        finish("load", "fail", "rolled back: rows failed checks (hard mode, nothing loaded)")
        finish(
            "validate", "fail", str(exc), rows_quarantined=exc.rows_invalid, quarantine_uri=exc.quarantine_uri
        )
        raise
    except BaseException as exc:
        error = reason(exc)
        try:
            if passed.finished:
                finish("transform", "success", rows_read=passed.rows_read)
                finish(
                    "validate",
                    "success",
                    rows_quarantined=passed.rows_invalid,
                    quarantine_uri=passed.quarantine_uri,
                )
            else:
                # what the pass had read when it stopped (the ledger said 0 of a 1.4M-row file cut short)
                finish("transform", "fail", f"stopped: {error}", rows_read=passed.rows_read or None)
                finish("validate", "fail", f"stopped: {error}")
            if "load" not in entries:  # it failed before any row was ready (e.g. the warehouse is down)
                begin("load")
            finish("load", "fail", error)
        except Exception as unrecorded:  # the ledger's database went down with the load: say the load's error
            # In the run's logs, not as a second console line: the command's error line says the cause.
            logger.warning(
                "the ledger could not record the failed load (%s): %s",
                error,
                described(unrecorded),
                extra={"to_console": False},
            )
        raise
    seconds = {
        "read": passed.seconds.read,
        "transform": passed.seconds.transform,
        "validate": passed.seconds.validate,
    }
    if outcome.skipped:  # a concurrent run loaded this content first: nothing was read
        begin("load")
        finish("load", "skipped", concurrently_loaded(fetched.sha256, outcome.by), rows_loaded=0)
    else:
        finish("transform", "success", rows_read=passed.rows_read)
        finish(
            "validate", "success", rows_quarantined=passed.rows_invalid, quarantine_uri=passed.quarantine_uri
        )
        if "load" not in entries:  # every row was quarantined (soft mode): an empty load, still a state
            begin("load")
        finish("load", "success", rows_loaded=outcome.rows_loaded)
        logger.info(
            "%s: busy seconds read %.2f, transform %.2f, validate %.2f (overlapping the COPY)",
            ctx.source,
            seconds["read"],
            seconds["transform"],
            seconds["validate"],
            extra={"stage_seconds": seconds},
        )
    return Loaded(
        outcome=outcome,
        rows_read=0 if outcome.skipped else passed.rows_read,  # a concurrent run loaded it: nothing read
        rows_invalid=passed.rows_invalid,
        quarantine_uri=passed.quarantine_uri,
        failures=passed.failures,
        seconds=seconds,
        spool=passed.spool,
    )


def concurrently_loaded(sha256: str, run: object) -> str:
    """Why a load was skipped at its commit: a run that started meanwhile loaded the same content first."""
    return f"{already_loaded_reason(sha256, run)}; that run loaded it while this one started"


def _unchanged_at_end(frames: Iterator[pd.DataFrame], fetched: storage.FetchedFile) -> Iterator[pd.DataFrame]:
    """``frames``, then ``FileChanged`` (before the load commits) if the file is no longer the one hashed."""
    yield from frames
    storage.check_unchanged(fetched)


@io_task
def publish(ctx: IngestContext, fetched: storage.FetchedFile, loaded: Loaded) -> None:
    """The dataset's after-load step (e.g. bronze/silver zones and their catalog), retried on its own."""
    hook = ctx.dataset.after_load
    assert hook is not None
    with ledger_state(ctx, "publish"):
        try:
            hook(
                AfterLoad(
                    dataset=ctx.dataset.name,
                    source=fetched.uri,
                    local_path=fetched.path,
                    frames=loaded.spool.frames if loaded.spool is not None else lambda: iter(()),
                    ingestion_id=ctx.ingestion_id,
                    rows_loaded=loaded.outcome.rows_loaded,
                )
            )
        except DestinationUnwritable as exc:
            # The rows are committed: a plain re-run is "already loaded" and would never write the zones.
            raise DestinationUnwritable(
                f"{exc}. The file's rows are loaded; once that is fixed, ingest it again with --force "
                "(force=true for a deployment run) to write its zones"
            ) from None
