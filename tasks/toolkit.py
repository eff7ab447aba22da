"""The task toolkit every pipeline shares: the run context, the ledger state of a step, the task decorators.

- ``RunContext``: what every task of one run needs (its ingestion id, settings, ledger, flow run, counts);
  a pipeline subclasses it with its own fields and says what its ledger rows are labelled with.
- ``ledger_state(ctx, state)``: a step recorded in the run ledger as running, then success/skipped/fail; a
  state made of several tasks (fetch, then compute, then write) has each record the same row.
- ``io_task``: a task that talks to the outside (files, S3, databases). It retries transient faults with the
  configured policy (``SLUICE_RETRIES``, exponential back-off from ``SLUICE_RETRY_DELAY_SECONDS``, jitter),
  read when the task is called, never at import; a ``SluiceError`` (bad file, bad rows) is never retried, nor
  a permanent refusal (AWS AccessDenied/NoSuchKey…, a PostgreSQL privilege or login error: ``permanent``).
- ``step_task``: a pure step over data already in hand (transform, validate): no retries, no result caching,
  no I/O but the ledger's (a quarantine write is an ``io_task`` of its own).
- ``quarantine`` and ``reject``: what follows a pipeline's ``validate`` that found failed checks (their CSV in
  the quarantine zone, retried; then the run halts with one error naming the first); ``flows.skeleton.validated``
  runs the three.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.tasks import exponential_backoff

from sluice import checks, progress
from sluice.adapters.warehouse import get_engine
from sluice.errors import RunCancelled, SluiceError, described
from sluice.ledger import Ledger, LedgerEntry, close_entry
from sluice.ledger_entry import CTRL_C, INTERRUPTED, TERMINATED
from sluice.report import stop_of
from sluice.settings import Settings, get_settings

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: The figures a state carries to the next state of the same run (as ``sluice.ledger.close_entry`` does).
COUNTS = ("rows_read", "rows_loaded", "rows_quarantined", "quarantine_uri")


class Cancellation:
    """Whether the run was cancelled from Prefect while it runs in a command's own process.

    A worker stops a cancelled run itself (its runner signals the run's process). A run of ``sluice ingest``,
    ``backfill``, ``totesys``, ``analytics`` or ``customers`` has no worker: Prefect marked it ``Cancelling`` and
    it loaded on to the end, reported cancelled. ``watch`` reads the run's state every ``POLL`` seconds in a
    thread of its own; ``check`` raises ``RunCancelled`` once it was asked, at the run's checkpoints
    (``sluice.progress.checkpoint``: before each step up to the load, at each stage and chunk the run tells, at
    each chunk COPYed, before a load commits), so that what the run had not committed rolls back. A run of a
    second or less is over before the first read: it costs nothing.
    """

    POLL = 1.0

    def __init__(self) -> None:
        self.why: str | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, flow_run_id: str) -> None:
        """Start reading the run's state (with this thread's Prefect settings: the home's server)."""
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._read, flow_run_id), name="sluice-cancel", daemon=True
        )
        self._thread.start()

    def _read(self, flow_run_id: str) -> None:
        from prefect.client.orchestration import get_client

        with contextlib.ExitStack() as stack:
            client = None
            while not self._done.wait(self.POLL):
                try:
                    if client is None:
                        client = stack.enter_context(get_client(sync_client=True))
                    state = client.read_flow_run(uuid.UUID(flow_run_id)).state
                except (
                    Exception
                ) as exc:  # the API away for a moment: the run goes on, the next read may answer
                    logger.debug("the run's state could not be read: %s", exc)
                    continue
                stop = stop_of(state) if state is not None else None
                if stop is not None and stop[0] == "cancelled":
                    self.why = stop[1]
                    logger.info("%s: the run stops at its next step or chunk", self.why)
                    return

    def stop(self) -> None:
        """Stop reading (the run is over)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def check(self) -> None:
        """Raise ``RunCancelled`` if the run was cancelled."""
        if self.why is not None:
            raise RunCancelled(self.why)


@dataclass(kw_only=True)
class RunContext:
    """What every task of one run needs to know; each pipeline adds its own fields."""

    ingestion_id: uuid.UUID
    settings: Settings
    ledger: Ledger
    flow_run_id: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    states: dict[str, LedgerEntry] = field(default_factory=dict)  # each state's entry, shared by its tasks
    cancellation: Cancellation = field(default_factory=Cancellation)

    @property
    def engine(self) -> sa.Engine:
        """The warehouse."""
        return get_engine(self.settings)

    def labels(self) -> dict[str, str | None]:
        """What this run's ledger rows say: ``dataset``, ``source`` and ``target``."""
        raise NotImplementedError

    @property
    def work(self) -> Path | None:
        """This run's spool folder under ``settings.work_dir`` (None: the run spools nothing). ``held`` sweeps the
        spools of runs that died, then owns this one (``sluice.adapters.scratch``) until the run ends."""
        return None

    def cleanup(self) -> None:
        """Remove what the run kept on local disk (nothing, unless a pipeline says otherwise)."""

    def quarantine_uri(self) -> str:
        """Where this run's failed checks go (one key per run: a retry writes the same one)."""
        return checks.quarantine_location(
            self.settings, self.labels()["dataset"] or "unknown", self.started, self.ingestion_id
        )


def reason(exc: BaseException) -> str:
    """What a state records as its failure: the error's text (bounded), or what a SIGTERM, Prefect's timeout or a
    Ctrl-C means."""
    if isinstance(exc, TerminationSignal):  # its text is empty: say what stopped the run
        return TERMINATED
    if isinstance(exc, asyncio.CancelledError):  # Prefect's timeout interrupts the run's thread with one
        return INTERRUPTED
    if isinstance(exc, KeyboardInterrupt):  # its text is empty: the ledger said "KeyboardInterrupt"
        return CTRL_C
    return described(exc)


@contextmanager
def ledger_state(ctx: RunContext, state: str, *, last: bool = True) -> Iterator[LedgerEntry]:
    """Record ``state`` as running, then as success/skipped (set by the body) or fail with the error.

    A state may take several tasks (Totesys' ``transform`` reads the lookups, builds, writes the processed
    zone); they share the state's one ledger entry (one row per run and state, its ``started_at`` the first
    task's). Every task but the state's last passes ``last=False``: its success leaves the state ``running``
    for the next task, unless the body settles it (sets ``entry.status``, e.g. a validation that found nothing
    to quarantine). A failure closes the state as ``fail``; a retry of the task opens it again.
    """
    entry = ctx.states.get(state)
    if entry is None:
        entry = ctx.states[state] = LedgerEntry(
            ingestion_id=ctx.ingestion_id,
            state=state,
            flow_run_id=ctx.flow_run_id,
            **ctx.labels(),
            **ctx.counts,
        )
    entry.status, entry.error, entry.finished_at = "running", None, None
    ctx.ledger.record(entry)
    progress.tell(state)  # the stage, for a terminal watching the run (each task may tell more)
    try:
        yield entry
    except BaseException as exc:
        entry.status = "fail"
        entry.error = reason(exc)
        close_entry(ctx.ledger, ctx.counts, entry)
        raise
    if entry.status == "running" and not last:
        for key in COUNTS:  # what the next task of the state (and the next state) starts from
            if getattr(entry, key) is not None:
                ctx.counts[key] = getattr(entry, key)
        return
    if entry.status == "running":
        entry.status = "success"
    close_entry(ctx.ledger, ctx.counts, entry)


#: AWS error codes that no retry can mend: a missing permission, key or bucket, or bad credentials.
PERMANENT_AWS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "NoSuchBucket",
        "NoSuchKey",
        "ResourceNotFoundException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
#: PostgreSQL error classes that no retry can mend: privilege, authentication, a missing database.
PERMANENT_SQLSTATES = frozenset({"42501", "28000", "28P01", "3D000"})
#: botocore's "no credentials found" faults (by name: botocore is not imported here): none found now, none later.
PERMANENT_AWS_FAULTS = frozenset({"NoCredentialsError", "PartialCredentialsError"})


def permanent(exc: BaseException) -> bool:
    """A fault that retrying cannot fix (AWS said no, PostgreSQL refused the role), whatever library raised it.

    Read off the exception's own fields (botocore's ``response``, psycopg2's ``pgcode`` behind SQLAlchemy's
    ``orig``), so neither library is imported here.
    """
    if type(exc).__name__ in PERMANENT_AWS_FAULTS:
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code") in PERMANENT_AWS_CODES:
        return True
    return getattr(getattr(exc, "orig", exc), "pgcode", None) in PERMANENT_SQLSTATES


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient faults (network, database); never a bad file or bad rows, nor a permanent refusal."""
    try:
        state.result()
    except SluiceError:
        return False
    except Exception as exc:
        return not permanent(exc)
    return False


def retry_policy(settings: Settings) -> dict[str, Any]:
    """The configured retries and their exponential back-off delays."""
    delays = (
        exponential_backoff(backoff_factor=settings.retry_delay_seconds)(settings.retries)
        if settings.retries
        else 0
    )
    return {"retries": settings.retries, "retry_delay_seconds": delays}


def retried_io(call: Callable[[], T], settings: Settings) -> T:
    """``call()`` with the retries a task's I/O has, for what a flow does outside its tasks before its first one
    (reaping the ledger, holding the run): a warehouse restarting under a backfill failed every run that started
    in those seconds, outside any task, so not retried ("cannot connect to the warehouse")."""
    policy = retry_policy(settings)
    delays = list(policy["retry_delay_seconds"] or [])
    for attempt in range(policy["retries"] + 1):
        try:
            return call()
        except SluiceError:
            raise
        except Exception as exc:
            if attempt >= policy["retries"] or permanent(exc):
                raise
            logger.info("retrying after %s", described(exc))
            time.sleep(delays[min(attempt, len(delays) - 1)] if delays else 0)
            # through the warehouse's start path, as a task's retry goes: the embedded PostgreSQL, found dead,
            # is started again there (``call`` holds an engine of its own, which only reconnects)
            with contextlib.suppress(Exception):
                get_engine(settings)
    raise AssertionError("unreachable")  # the loop returns or raises


class IOTask:
    """A Prefect task that takes the configured retry policy each time it is called (in a flow)."""

    def __init__(self, prefect_task: Any) -> None:
        self.task = prefect_task
        functools.update_wrapper(self, prefect_task.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task.with_options(**retry_policy(get_settings()))(*args, **kwargs)

    @property
    def fn(self) -> Callable[..., Any]:
        """The undecorated function (for tests that call a step outside a flow)."""
        return self.task.fn


def io_task(fn: Callable[..., Any]) -> IOTask:
    """Decorate an I/O task: the configured retries with back-off + jitter, never a user error, no caching, no
    persisted result (a task returns spools, files and frames: never pickled to a result storage, whatever
    ``PREFECT_TASKS_DEFAULT_PERSIST_RESULT`` says)."""
    return IOTask(
        task(
            fn,
            retry_jitter_factor=0.5,
            retry_condition_fn=retry_unless_user_error,
            cache_policy=NO_CACHE,
            persist_result=False,
        )
    )


def step_task(fn: Callable[..., Any]) -> Any:
    """Decorate a step over data in hand (transform, validate): no retries, no result caching or persisting."""
    return task(fn, name=fn.__name__, cache_policy=NO_CACHE, persist_result=False)


def checked(ctx: RunContext, check: Callable[..., pd.DataFrame], *args: Any) -> pd.DataFrame:
    """A pipeline's ``validate``: ``check(*args)`` returns the failed checks (pure); none settles the state as
    ``success``, else it stays running for ``quarantine`` and ``reject``."""
    with ledger_state(ctx, "validate", last=False) as entry:
        failures = check(*args)
        if failures.empty:
            entry.rows_quarantined = 0
            entry.status = "success"
    return failures


@io_task
def quarantine(ctx: RunContext, failures: pd.DataFrame) -> str:
    """A run's failed checks as CSV in the quarantine zone; returns where (``validate`` stays running)."""
    with ledger_state(ctx, "validate", last=False) as entry:
        entry.quarantine_uri = checks.quarantine(failures, ctx.quarantine_uri())
    return entry.quarantine_uri


@step_task
def reject(ctx: RunContext, failures: pd.DataFrame, quarantine_uri: str) -> None:
    """Halt the run: ``validate`` fails with the number of failed checks, the first, and where they all are."""
    with ledger_state(ctx, "validate") as entry:
        entry.rows_quarantined = len(failures) or None
        entry.quarantine_uri = quarantine_uri
        raise checks.validation_failed(ctx.labels()["dataset"] or "unknown", failures, quarantine_uri)
