"""Prefect tasks of the ingest flow: one per state, each recording itself in the run ledger.

I/O tasks (extract, load) retry with exponential back-off and jitter; a ``SluiceError`` (bad file, bad
rows, unknown dataset) is never retried. Transform and validate are pure over local files: no retries.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.tasks import exponential_backoff

from sluice import ingest, storage
from sluice.errors import SluiceError, ValidationFailed
from sluice.ledger import Ledger, LedgerEntry, tracked
from sluice.loading import LoadOutcome, ensure_target, is_loaded, load_file
from sluice.registry import AfterLoad, Dataset
from sluice.settings import Settings
from sluice.warehouse import get_engine


@dataclass
class RunContext:
    """What every task of one ingestion needs to know."""

    ingestion_id: uuid.UUID
    dataset: Dataset
    source: str
    hard: bool
    force: bool
    settings: Settings
    ledger: Ledger
    flow_run_id: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    version_id: str | None = None  # the S3 object version to read (from the event); None = the latest

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


@contextmanager
def ledger_state(ctx: RunContext, state: str) -> Iterator[LedgerEntry]:
    """Record ``state`` as running, then as success/skipped (set by the body) or fail with the error."""
    with tracked(
        ctx.ledger,
        ctx.counts,
        ingestion_id=ctx.ingestion_id,
        state=state,
        dataset=ctx.dataset.name,
        source=ctx.source,
        target=ctx.dataset.target or None,
        flow_run_id=ctx.flow_run_id,
    ) as entry:
        yield entry


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient faults (network, database); never a bad file or bad rows."""
    try:
        state.result()
    except SluiceError:
        return False
    except Exception:
        return True
    return False


def io_task(fn: Callable[..., Any]) -> Any:
    """Decorate an I/O task: retries with exponential back-off + jitter, no result caching."""
    return task(
        fn,
        retries=3,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_unless_user_error,
        cache_policy=NO_CACHE,
    )


def with_retries(task_fn: Any, settings: Settings) -> Any:
    """The task with the configured number of retries and back-off base."""
    return task_fn.with_options(
        retries=settings.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.retry_delay_seconds)(settings.retries)
        if settings.retries
        else 0,
    )


@io_task
def extract(ctx: RunContext) -> storage.FetchedFile | None:
    """Fetch the landed file and fingerprint it; None when this content is already loaded."""
    with ledger_state(ctx, "extract") as entry:
        fetched = storage.fetch(ctx.source, ctx.work / "source", ctx.version_id)
        engine = get_engine(ctx.settings)
        ensure_target(engine, ctx.dataset)
        if (
            not ctx.force
            and ctx.dataset.table is not None
            and is_loaded(engine, ctx.dataset.name, fetched.sha256)
        ):
            entry.status = "skipped"
            entry.error = f"already loaded (sha256 {fetched.sha256[:12]}); use force to reload"
            return None
    return fetched


@task(name="transform", cache_policy=NO_CACHE)
def transform(ctx: RunContext, fetched: storage.FetchedFile) -> ingest.Transformed:
    """Read the file in chunks and apply the dataset's transform."""
    with ledger_state(ctx, "transform") as entry:
        try:
            result = ingest.transform_file(
                fetched.path, ctx.dataset, ctx.source, ctx.work, ctx.settings.chunk_rows
            )
        except SluiceError as exc:
            entry.quarantine_uri = ingest.quarantine_file(fetched.path, ctx.quarantine_base, str(exc))
            raise
        entry.rows_read = result.rows_read
    return result


@task(name="validate", cache_policy=NO_CACHE)
def validate(ctx: RunContext, transformed: ingest.Transformed) -> ingest.Validated:
    """Check every row lazily; quarantine failures; hard mode halts on any."""
    with ledger_state(ctx, "validate") as entry:
        try:
            result = ingest.validate_spool(
                transformed,
                ctx.dataset,
                work=ctx.work,
                hard=ctx.hard,
                quarantine_base=ctx.quarantine_base,
                source=ctx.source,
            )
        except ValidationFailed as exc:
            entry.rows_quarantined = exc.rows_invalid or None
            entry.quarantine_uri = exc.quarantine_uri
            raise
        entry.rows_quarantined = result.rows_invalid
        entry.quarantine_uri = result.quarantine_uri
    return result


@io_task
def load(ctx: RunContext, fetched: storage.FetchedFile, validated: ingest.Validated) -> LoadOutcome:
    """COPY the valid rows into the target, exactly once per file content."""
    with ledger_state(ctx, "load") as entry:
        engine = get_engine(ctx.settings)
        ensure_target(engine, ctx.dataset)
        limit = ctx.settings.warehouse_concurrency_limit
        # strict: a configured limit that does not exist fails the run instead of silently not guarding.
        guard = concurrency(limit, occupy=1, strict=True) if limit else nullcontext()
        with guard:
            outcome = load_file(
                engine,
                ctx.dataset,
                ingestion_id=ctx.ingestion_id,
                source=fetched.uri,
                sha256=fetched.sha256,
                frames=validated.spool.frames(),
                force=ctx.force,
                rows_hint=validated.rows_valid,
                bulk_index_rows=ctx.settings.bulk_index_rows,
            )
        entry.rows_loaded = outcome.rows_loaded
        if outcome.skipped:
            entry.status = "skipped"
            entry.error = "already loaded by a concurrent run"
    return outcome


@io_task
def publish(
    ctx: RunContext, fetched: storage.FetchedFile, validated: ingest.Validated, outcome: LoadOutcome
) -> None:
    """The dataset's after-load step (e.g. bronze/silver zones and their catalog), retried on its own."""
    hook = ctx.dataset.after_load
    assert hook is not None
    with ledger_state(ctx, "publish"):
        hook(
            AfterLoad(
                dataset=ctx.dataset.name,
                source=fetched.uri,
                local_path=fetched.path,
                frames=validated.spool.frames,
                ingestion_id=ctx.ingestion_id,
                rows_loaded=outcome.rows_loaded,
            )
        )
