"""The run skeleton every flow reuses: the flow decorator, the run's start, and the held run around the steps.

A flow is its parameters, ``ctx = start_run(SomeContext, ...)``, a report, and ``with held(ctx, report,
publish): <the steps>``. What the skeleton does, in order, for every pipeline:

1. ``pipeline_flow``: the flow's name, its run name (flows/names.py), its timeout, and the notification hooks
   (one message per run, SLUICE_NOTIFY_BLOCKS);
2. ``start_run``: the settings (read once), the ledger, abandoned runs reaped (``crashed``), the ingestion id
   (the flow run's id, so the ledger and the Prefect UI name the run alike);
3. ``held``: the run's liveness lock held while the steps run, then released; a failure sets the report's
   status and error and raises ``IngestionFailed`` (Prefect marks the run Failed, the hooks alert); whatever
   the outcome, the report is published once as the run's artifact and local files are cleaned up. A run that
   spools (``ctx.work``) first sweeps the spools of runs that died, then owns its own (a lock released at its
   end, however it ends: ``sluice.adapters.scratch``). A run in a command's own process also watches its state:
   cancelled from Prefect, it stops at its next step (``step``) or chunk, closes its ledger cancelled, alerts, and
   the flow ends ``Cancelled`` (``pipeline_flow``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import typing
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from prefect import flow
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, State

from flows.names import TIMEOUT_SECONDS
from sluice import progress
from sluice.adapters import scratch
from sluice.adapters.notify import alert_stopped, notify_hooks
from sluice.errors import RunCancelled, SluiceError, Transient, clipped, database_error, rows_line
from sluice.ledger import (
    COMMITTED,
    LOST,
    STATES,
    Ledger,
    LedgerEntry,
    get_ledger,
    hold_run,
    reap_abandoned,
    release_run,
    take_reaped,
)
from sluice.logs import send_to_runs
from sluice.report import IngestionFailed, IngestReport
from sluice.runtime import in_process
from sluice.settings import Settings, get_settings
from tasks.toolkit import COUNTS, RunContext, quarantine, reject, retried_io

logger = logging.getLogger(__name__)

send_to_runs()  # Sluice's own log records in the logs of the run that made them (the Prefect UI)

C = TypeVar("C", bound=RunContext)
R = TypeVar("R", bound=IngestReport)
T = TypeVar("T")


def pipeline_flow(name: str, run_name: Callable[[], str]) -> Callable[[Callable[..., Any]], Any]:
    """``@flow`` with the house's settings: run name, timeout, typed parameters, one notification per run, and
    ``RESULTS``; a run that stopped for its cancellation (``held``) ends ``Cancelled``."""

    def decorate(body: Callable[..., Any]) -> Any:
        @functools.wraps(body)  # the name and docstring (the parameters' descriptions in the UI)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return body(*args, **kwargs)
            except _Stopped as stopped:
                return Cancelled(message=stopped.report.error, data=stopped.report)

        # The parameters' types resolved where the flow is written: Prefect's parameter model would resolve the
        # annotations' text in this module, which does not import them.
        run.__signature__ = inspect.signature(body, eval_str=True)  # type: ignore[attr-defined]
        run.__annotations__ = typing.get_type_hints(body, include_extras=True)

        return flow(
            name=name,
            flow_run_name=run_name,
            timeout_seconds=TIMEOUT_SECONDS[name],
            log_prints=False,
            validate_parameters=True,
            **RESULTS,
            **notify_hooks(),
        )(run)

    return decorate


class _Stopped(Exception):
    """A run that stopped for its cancellation, its ledger closed and its alert sent (``held``): the flow ends
    ``Cancelled`` with its report."""

    def __init__(self, report: IngestReport) -> None:
        super().__init__(report.error)
        self.report = report


def _results() -> dict[str, Any]:
    """No persisted result, and Prefect's local storage path for what it writes anyway (a failed run's exception).

    A run's record is the ledger, its artifact and the warehouse. Left to Prefect's defaults, a workspace's default
    result storage (``/admin/storage``, or ``PREFECT_RESULTS_PERSIST_BY_DEFAULT``) got every run's pickled report
    and every failure's exception, and a task role that may not write there a warning in every run; each run also
    asked the server for that default three times. Read once, at import (after ``runtime.prepare``).
    """
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    return {"persist_result": False, "result_storage": Path(PREFECT_LOCAL_STORAGE_PATH.value())}


#: The result settings of every flow (``pipeline_flow``, ``ingest-files``).
RESULTS = _results()


def ingestion_id() -> uuid.UUID:
    """The run's id in the ledger: the flow run's id (a fresh one outside a flow run)."""
    run_id = flow_run.get_id()
    return uuid.UUID(run_id) if run_id else uuid.uuid4()


def open_ledger() -> tuple[Settings, Ledger]:
    """The settings and the ledger, with the runs that died without saying so marked ``crashed``."""
    settings = get_settings()
    ledger = get_ledger(settings)
    retried_io(lambda: reap_abandoned(ledger), settings)
    _close_lost(take_reaped(ledger, settings.home))
    return settings, ledger


def _close_lost(run_ids: dict[uuid.UUID, bool]) -> None:
    """The flow runs of runs the ledger just found dead, closed in Prefect too if it still shows them running:
    ``Crashed``, or ``Completed`` for one whose load had committed (``run_ids``' values).

    A command's run killed outright (SIGKILL, the OOM killer, a lost machine) has nobody to tell Prefect: the UI
    showed it ``Running`` for good, while the ledger said crashed. Best effort: the run goes on whatever happens."""
    if not run_ids:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Completed, Crashed

    try:
        with get_client(sync_client=True) as client:
            for run_id, committed in run_ids.items():
                try:
                    state = client.read_flow_run(run_id).state
                except Exception as exc:  # not a flow run of this API (another server's, or none)
                    logger.debug("dead run %s: no flow run to close here (%s)", run_id, exc)
                    continue
                if state is None or state.type.value not in ("RUNNING", "PENDING", "CANCELLING"):
                    continue
                if committed:
                    final = Completed(message=COMMITTED)
                else:
                    final = (Cancelled if state.type.value == "CANCELLING" else Crashed)(message=LOST)
                client.set_flow_run_state(run_id, final, force=True)
    except Exception as exc:
        logger.debug("the flow runs of dead runs were not closed: %s", exc)


def start_run(
    context: type[C], settings: Settings | None = None, ledger: Ledger | None = None, **fields: Any
) -> C:
    """The run's context: settings, ledger (reaped), ingestion id, flow run id, and the pipeline's fields."""
    if settings is None or ledger is None:
        settings, ledger = open_ledger()
    return context(
        ingestion_id=ingestion_id(),
        settings=settings,
        ledger=ledger,
        flow_run_id=flow_run.get_id(),
        **fields,
    )


def new_report(report: type[R], ctx: RunContext, **fields: Any) -> R:
    """The run's report, ``running`` at ``extract``, with the run's ids."""
    return report(
        run_id=str(ctx.ingestion_id), status="running", state="extract", flow_run_id=ctx.flow_run_id, **fields
    )


def error_text(exc: BaseException) -> str:
    """A user's error as it is; anything else with its type, so that a bare ``KeyError: 'x'`` still says what;
    at most ``MAX_ERROR_CHARS`` (an alert and a ledger item have size limits)."""
    if isinstance(exc, SluiceError | Transient):
        return clipped(str(exc))
    return database_error(exc) or clipped(f"{type(exc).__name__}: {exc}")


def step(report: IngestReport, state: str, task: Callable[..., T], *args: Any) -> T:
    """Run one step (a task) with the report at its state, so that a failure names where it happened. A run
    cancelled from Prefect in a command's process stops here, on its way into a new state up to the load (never
    after it: what the load committed stays, and the steps after it publish that)."""
    entering = state != report.state or state == "extract"
    report.state = state
    if entering and state in STATES:
        progress.checkpoint()
    result = task(*args)
    if state == "load" and (getattr(task, "__name__", None) or getattr(task, "name", None)) == "load":
        progress.settle()  # committed: a cancellation from here on comes too late
    return result


def validated(
    report: IngestReport, ctx: RunContext, validate: Callable[..., pd.DataFrame], *args: Any
) -> None:
    """The ``validate`` state: the pipeline's pure check returns the failed checks; if there are any, they go to
    quarantine (a retried I/O task), then the run halts with one error naming the first and where all are."""
    failures = step(report, "validate", validate, ctx, *args)
    if not failures.empty:
        uri = step(report, "validate", quarantine, ctx, failures)
        step(report, "validate", reject, ctx, failures, uri)


def quarantined(report: IngestReport, exc: Exception, ctx: RunContext) -> None:
    """``on_failure`` for ``held``: a failed run's quarantine figures, from the ledger's counts."""
    report.rows_quarantined = ctx.counts.get("rows_quarantined") or 0
    report.quarantine_uri = ctx.counts.get("quarantine_uri")


@contextmanager
def held(
    ctx: RunContext,
    report: R,
    publish: Callable[[R], Any],
    on_failure: Callable[[R, Exception, Any], None] | None = None,
) -> Iterator[R]:
    """Run the body with the run held; a failure is reported and raised as ``IngestionFailed``.

    ``publish`` (the run's artifact) runs once, whatever the outcome, skipped runs included; ``on_failure``
    (report, error, ctx) adds what a pipeline knows of its failures (the state reached, the counts so far).
    """
    spool = None
    if ctx.work is not None:  # a run that spools: first the spools of runs that died, then its own
        scratch.sweep(ctx.settings.work_dir)
        try:
            spool = scratch.claim(ctx.work)
        except OSError as exc:  # a read-only or full scratch disk: the run fails in one line where it spools
            logger.debug("cannot claim %s (%s): a later sweep removes it once a day old", ctx.work, exc)
    retried_io(lambda: hold_run(ctx.ledger, ctx.ingestion_id), ctx.settings)
    watched = in_process() and ctx.flow_run_id is not None
    if watched:
        ctx.cancellation.watch(str(ctx.flow_run_id))
    stops = progress.stoppable(ctx.cancellation.check) if watched else contextlib.nullcontext()
    try:
        with stops:
            yield report
    except RunCancelled as exc:
        publish(_cancelled(ctx, report, str(exc)))
        raise _Stopped(report) from None
    except Exception as exc:
        report.status = "failed"
        report.error = error_text(exc)
        if on_failure is not None:
            on_failure(report, exc, ctx)
        publish(report)
        raise IngestionFailed(report) from None
    finally:
        ctx.cancellation.stop()
        release_run(ctx.ledger)
        try:
            ctx.cleanup()
        finally:
            if spool is not None:
                spool.release()
    publish(report)


def _cancelled(ctx: RunContext, report: R, why: str) -> R:
    """A run that stopped for its cancellation: the state it was entering (or in) closed ``cancelled`` with the
    others it left open, one alert, and its report as the ledger has it."""
    if not any(entry.state == report.state for entry in ctx.ledger.history(ctx.ingestion_id)):
        entry = LedgerEntry(
            ingestion_id=ctx.ingestion_id, state=report.state or "extract", flow_run_id=ctx.flow_run_id,
            **ctx.labels(), **{k: v for k, v in ctx.counts.items() if k in COUNTS},
        )  # fmt: skip
        ctx.ledger.record(entry)  # running: closed as cancelled with the rest
    current = FlowRunContext.get()
    try:
        ledgered = alert_stopped(current.flow_run if current else None, "cancelled", why)
    except Exception as exc:  # no alert, or no ledger: the run still ends cancelled, and says why here
        logger.warning("the cancelled run's ledger or alert: %s", exc)
    else:
        for name in ("state", "rows_read", "rows_loaded", "rows_quarantined", "quarantine_uri"):
            if getattr(ledgered, name) is not None:
                setattr(report, name, getattr(ledgered, name))
    report.status, report.error = "cancelled", why
    logger.info("%s: %s (at %s)", report.dataset, why, report.state)
    return report


def completed(report: R) -> State:
    """A run's final state when it went through: ``Completed``, with its rows as its message (``1,036 read, 1,034
    loaded into tm.daily_checkins, 2 quarantined``), which the Prefect UI shows and a deployment's caller
    (``backfill --deployment``) prints."""
    message = rows_line(report.rows_read, report.rows_loaded, report.table, report.rows_quarantined)
    _finished(report)
    return Completed(data=report, message=message)


#: The last runs' own reports in this process, by flow run id, for ``finished_report``
_FINISHED: dict[str, IngestReport] = {}


def _finished(report: IngestReport) -> None:
    if report.flow_run_id:
        _FINISHED[str(report.flow_run_id)] = report
        while len(_FINISHED) > 64:  # a shard flow runs many in one process: the newest are the ones asked for
            del _FINISHED[next(iter(_FINISHED))]


def finished_report(flow_run_id: object) -> IngestReport | None:
    """The report a run of this process ended with, by its flow run id (once): what a command prints when Prefect
    refused the run's final state (it had been cancelled after its load committed, and only the state is back)."""
    return _FINISHED.pop(str(flow_run_id), None)


def skipped(report: R) -> State:
    """A run's final state when it did nothing on purpose (a file already loaded, a Totesys cycle with nothing new,
    a day's analytics already built): ``Completed``, named ``Skipped`` with the reason as its message, so that the
    Prefect UI and a deployment's caller (``backfill --deployment``) tell it from a run that loaded."""
    _finished(report)
    return Completed(data=report, name="Skipped", message=report.error)
