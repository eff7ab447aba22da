"""Fan-out: ingest every file under a landing prefix, locally with a bounded pool or as deployment runs.

Locally, the files already loaded are found by ONE query on the file registry (``sluice.file_loads``, by
dataset and content SHA-256) and their skip is recorded in the ledger in ONE insert, instead of a flow run
each; the rest run as ``ingest-file`` flow runs, at most ``concurrency`` at once, on the home's shared
Prefect server. The fingerprint is the SHA-256 of the content, the same identity the load uses: a local file
is hashed in place; an S3 object is streamed through the hash (not kept). An S3 ETag would avoid the read,
but it is not a content hash for multipart uploads and the registry does not store it, so a file re-uploaded
with other content under the same key could be wrongly skipped; reading is the safe choice.

With a deployment, the files go in shards: a deployment of flow ``ingest-files`` gets ``shard_size`` files
per run (one ECS task ingests many small files, each as its own ``ingest-file`` subflow run); a deployment
of ``ingest-file`` gets one run per file. Every file ends with one result, whatever failed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa

from sluice import datasets
from sluice.adapters import storage
from sluice.adapters.warehouse import CONNECTIONS_PER_RUN, get_engine, serve_runs
from sluice.cli.output import warn
from sluice.errors import ConfigurationError, database_error, described, rows_of
from sluice.ledger import LedgerEntry, PostgresLedger, ensure_bookkeeping, get_ledger, run_ledger
from sluice.loading import already_loaded_reason, file_loads
from sluice.report import IngestReport
from sluice.runtime import use_local_server

logger = logging.getLogger(__name__)

_HASH_BLOCK = 1 << 20
#: Flow whose deployments take a list of files (flows/ingest_files.py).
SHARD_FLOW = "ingest-files"
#: The error of a file a Ctrl-C kept from starting.
NOT_STARTED = "not started: the backfill was interrupted first; run it again to load this file"
#: The status of a file whose deployment run goes on after a second Ctrl-C stopped the backfill waiting for it.
RUNNING = "running"
#: How often a deployment run in flight is looked at (Prefect's ``run_deployment`` polls every 5 s).
POLL_SECONDS = 2.0

R = TypeVar("R")


#: The error of a file a local backfill stopped waiting for at a second Ctrl-C (the command then exits at once).
ABANDONED = (
    "stopped while loading (Ctrl-C twice): a load commits whole or not at all, so it was rolled back unless it had "
    "just committed; run the backfill again (a file that loaded is skipped)"
)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a fan-out: no file was started after it, the runs in flight finished (each load commits
    whole or not at all), and ``results`` still has one result per file: the files never started among them.
    ``abandoned``: a second Ctrl-C stopped a local backfill waiting for that many files in flight; the command
    must then exit without waiting for their threads (``os._exit``), which rolls their loads back."""

    def __init__(self, results: list[Any], abandoned: int = 0) -> None:
        super().__init__("interrupted")
        self.results = results
        self.abandoned = abandoned


class Survey(NamedTuple):
    """What a backfill finds under its prefix."""

    files: list[tuple[str, str]]  # (file, dataset) to ingest
    refused: list[tuple[str, str | None, str]]  # (entry, dataset, error): meant to load, not a loadable file
    unclaimed: list[str]  # files no dataset claims (without --dataset): left out, counted for the user


def plan(prefix: str, dataset: str | None) -> list[tuple[str, str]]:
    """(file, dataset) for every file under ``prefix``: all of them for an explicit dataset, else the
    files some dataset claims by key."""
    return survey(prefix, dataset).files


def survey(prefix: str, dataset: str | None) -> Survey:
    """``plan``'s files, and (entry, dataset, error) for each entry under ``prefix`` that the user meant
    to load and that is not a loadable file: a broken link, an unreadable file, a pipe; a folder named as the
    dataset's files are with nothing listed in it; a folder that could not be read or a link to one (whatever
    its name: it may hold files). An entry no dataset claims is left out, as a file no dataset claims is; the
    files left out so are listed too."""
    listing = storage.list_files(prefix)
    name = datasets.get_dataset(dataset).name if dataset else None
    unclaimed: list[str] = []
    if name:
        files = [(uri, name) for uri in listing.files]
    else:
        files = []
        for uri in listing.files:
            if spec := datasets.resolve(uri):
                files.append((uri, spec.name))
            else:
                unclaimed.append(uri)
    refused: list[tuple[str, str | None, str]] = []
    for entry in listing.unlisted:
        claimant = datasets.resolve(entry.uri)
        if entry.always or claimant or (name and not entry.folder):
            owner = name or (claimant.name if claimant else None)
            refused.append((entry.uri, owner, f"not ingested: {entry.reason}"))
    return Survey(files, refused, unclaimed)


def refused_result(entry: tuple[str, str | None, str], *, deployment: bool) -> dict[str, Any]:
    """The failed result of an entry ``survey`` refused, shaped as the other results of the backfill (a
    deployment run's, or a local run's report)."""
    source, name, error = entry
    if deployment:
        return _result(source, name, None, "failed", None, error)
    report = IngestReport(run_id=None, dataset=name, source=source, status="failed", state=None, error=error)
    return dict(report.model_dump(exclude={"failures", "flow_run_id"}))


def fingerprint(uri: str) -> str:
    """SHA-256 of a landed file's content, streamed (a local file in place, an S3 object not kept)."""
    digest = hashlib.sha256()
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        body = storage.s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        for block in body.iter_chunks(_HASH_BLOCK):
            digest.update(block)
    else:
        with Path(storage.local_path(uri)).open("rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def find_loaded(files: list[tuple[str, str]], *, concurrency: int = 4) -> dict[str, tuple[str, uuid.UUID]]:
    """{file: (sha256, ingestion id)} for the files whose content is already loaded: one registry query.

    A file that cannot be read here is left to its flow run, which reports it properly.
    """

    def safe(uri: str) -> str | None:
        try:
            return fingerprint(uri)
        except Exception as exc:
            logger.debug("%s: not fingerprinted (%s); its run will report it", uri, exc)
            return None

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="sluice-hash") as pool:
        hashes = dict(zip((uri for uri, _ in files), pool.map(safe, [uri for uri, _ in files]), strict=True))
    pairs = {(name, sha): uri for uri, name in files if (sha := hashes[uri]) is not None}
    if not pairs:
        return {}
    engine = get_engine()
    ensure_bookkeeping(engine)
    found: dict[str, tuple[str, uuid.UUID]] = {}
    key = sa.tuple_(file_loads.c.dataset, file_loads.c.sha256)
    query = sa.select(file_loads.c.dataset, file_loads.c.sha256, file_loads.c.ingestion_id).where(
        key.in_(sa.bindparam("pairs", expanding=True))
    )
    with engine.connect() as conn:
        for dataset, sha, ingestion_id in conn.execute(query, {"pairs": list(pairs)}):
            found[pairs[(dataset, sha.strip())]] = (sha.strip(), ingestion_id)
    return found


def record_skips(
    files: list[tuple[str, str]], loaded: dict[str, tuple[str, uuid.UUID]]
) -> list[IngestReport]:
    """Record each already-loaded file as a skipped run in the ledger, in one insert; their reports."""
    now = datetime.now(UTC)
    entries: list[LedgerEntry] = []
    for uri, name in files:
        sha, earlier = loaded[uri]
        spec = datasets.get_dataset(name)
        entries.append(
            LedgerEntry(
                ingestion_id=uuid.uuid4(),
                state="extract",
                dataset=name,
                source=uri,
                status="skipped",
                target=spec.target or None,
                error=already_loaded_reason(sha, earlier),
                started_at=now,
                finished_at=now,
            )
        )
    ledger = get_ledger()
    if isinstance(ledger, PostgresLedger):
        rows = [
            {**{c.name: getattr(e, c.name) for c in run_ledger.columns if c.name != "seq"}, "seq": e.seq}
            for e in entries
        ]
        if rows:
            with ledger.engine.begin() as conn:
                conn.execute(run_ledger.insert(), rows)  # one multi-row INSERT (insertmanyvalues)
    else:
        for entry in entries:
            ledger.record(entry)
    return [
        IngestReport(
            run_id=str(e.ingestion_id),
            dataset=e.dataset,
            source=e.source,
            status="skipped",
            state="extract",
            table=e.target,
            error=e.error,
        )
        for e in entries
    ]


def _run_one(uri: str, name: str, mode: str | None) -> IngestReport:
    """One file's flow run; whatever goes wrong comes back as a failed report, never an exception."""
    # Imported once use_local_server() has pointed Prefect at its server: the flows import Prefect.
    from sluice.cli.runner import run_ingest

    try:
        return run_ingest(uri, dataset=name, mode=mode)
    except Exception as exc:
        logger.debug("%s: run failed outside the flow", uri, exc_info=True)
        return IngestReport(
            run_id=None,
            dataset=name,
            source=uri,
            status="failed",
            state=None,
            error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        )


def run_local(
    files: list[tuple[str, str]],
    *,
    concurrency: int,
    mode: str | None = None,
    on_done: Callable[[IngestReport], None] | None = None,
    on_interrupt: Callable[[int], None] | None = None,
) -> list[IngestReport]:
    """Skip the loaded files in bulk, then ingest the rest in this process, at most ``concurrency`` at once.
    Ctrl-C starts no further file and raises ``Interrupted`` once the runs in flight ended (see ``_collect``)."""
    try:
        loaded = find_loaded(files, concurrency=concurrency)
    except Exception as exc:  # registry unreachable: every file still goes through its own run
        warn(f"files already loaded not checked in bulk: {database_error(exc) or described(exc)}")
        loaded = {}
    skipped = [f for f in files if f[0] in loaded]
    try:
        reports = record_skips(skipped, loaded) if loaded else []
    except Exception as exc:
        # The ledger refused (DynamoDB without credentials or UpdateItem): it was a traceback and no result at all,
        # even for the files that would have loaded. Each file says it; the others go on, and say it in turn.
        reason = f"already loaded, and its skip could not be recorded: {described(exc)}"
        reports = [
            IngestReport(
                run_id=None, dataset=name, source=uri, status="failed", state="extract", error=reason
            )
            for uri, name in skipped
        ]
    for report in reports:
        if on_done:
            on_done(report)
    todo = [f for f in files if f[0] not in loaded]
    if todo:
        try:
            use_local_server()  # only now: a pass where every file was loaded needs no Prefect at all
        except Exception as exc:
            for uri, name in todo:
                report = IngestReport(
                    run_id=None, dataset=name, source=uri, status="failed", state=None, error=str(exc)
                )
                reports.append(report)
                if on_done:
                    on_done(report)
            return sorted(reports, key=lambda r: r.source)

    def not_started(uri: str, name: str) -> IngestReport:
        return IngestReport(
            run_id=None, dataset=name, source=uri, status="failed", state=None, error=NOT_STARTED
        )

    runs = wanted = max(1, min(concurrency, len(todo)))
    try:
        runs = serve_runs(wanted)
    except Exception as exc:  # the warehouse unreachable: each run reports it on its own
        logger.debug("warehouse pool not sized for %s runs: %s", wanted, exc)
    if runs < wanted:
        warn(
            f"--concurrency {concurrency} lowered to {runs}: the warehouse has connections for {runs} more "
            f"{'run' if runs == 1 else 'runs'} ({CONNECTIONS_PER_RUN} each)"
        )

    def abandoned(uri: str, name: str) -> IngestReport:
        return IngestReport(
            run_id=None, dataset=name, source=uri, status="failed", state="load", error=ABANDONED
        )

    pool = ThreadPoolExecutor(max_workers=runs, thread_name_prefix="sluice-backfill")
    left = 0
    try:
        futures = {pool.submit(lambda f: [_run_one(*f, mode)], f): [f] for f in todo}
        try:
            reports += _collect(pool, futures, not_started, on_done, on_interrupt, abandon=abandoned)
        except Interrupted as stop:
            left = stop.abandoned
            raise Interrupted(sorted([*reports, *stop.results], key=lambda r: r.source), left) from None
        except BaseException:  # SIGTERM (cli.Terminated): the command exits at once, without them
            left = 1
            raise
    finally:
        pool.shutdown(wait=not left)  # abandoned: the caller exits without them
    return sorted(reports, key=lambda r: r.source)


def _collect(
    pool: ThreadPoolExecutor,
    futures: dict[Future[list[R]], list[tuple[str, str]]],
    not_started: Callable[[str, str], R],
    on_done: Callable[[R], None] | None,
    on_interrupt: Callable[[int], None] | None,
    give_up: Callable[[], None] | None = None,
    abandon: Callable[[str, str], R] | None = None,
) -> list[R]:
    """The results of ``futures`` (each the runs of its files) as they complete.

    On Ctrl-C no further file starts: the files not started get ``not_started`` results, ``on_interrupt`` is told
    how many runs are in flight (at most the pool's size), those are waited for (a thread cannot be stopped safely;
    each run's load commits whole or not at all), and ``Interrupted`` carries every result. Before, the pool went
    on starting every remaining file and the command then exited 130 without a word. With ``give_up`` (runs that
    do not run in this process: deployment runs), a second Ctrl-C calls it, and the futures then end at once with
    what they know of their runs (still running, and where). With ``abandon`` (runs in this process's threads,
    which cannot be stopped), a second Ctrl-C stops waiting: each file still in flight gets ``abandon``'s result
    and ``Interrupted.abandoned`` counts them. It raised a bare KeyboardInterrupt: the report was lost, the command
    said its loads were rolled back, and it went on waiting for them at exit (they committed).
    """
    results: list[R] = []
    collected: set[Future[list[R]]] = set()
    try:
        for future in as_completed(futures):
            for result in future.result():
                results.append(result)
                if on_done:
                    on_done(result)
            collected.add(future)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        pending = [f for f in futures if f not in collected]
        in_flight = [f for f in pending if not f.cancelled()]
        if on_interrupt:
            on_interrupt(len(in_flight))
        gave_up = stopped_waiting = False
        for future in pending:
            while True:
                try:
                    if stopped_waiting and not future.done():  # still in flight: left to the exit
                        found = [abandon(*f) for f in futures[future]]  # type: ignore[misc]
                    elif future.cancelled():
                        found = [not_started(*f) for f in futures[future]]
                    else:
                        found = future.result()
                    break
                except KeyboardInterrupt:  # a second Ctrl-C while waiting
                    if abandon is not None and not stopped_waiting:
                        stopped_waiting = True
                        continue
                    if give_up is None or gave_up:
                        raise
                    gave_up = True
                    give_up()
            for result in found:
                results.append(result)
                if on_done:
                    on_done(result)
        raise Interrupted(results, abandoned=sum(1 for r in results if _error_of(r) == ABANDONED)) from None
    return results


def _error_of(result: Any) -> str | None:
    return result.get("error") if isinstance(result, dict) else getattr(result, "error", None)


def shards(files: list[tuple[str, str]], size: int) -> list[list[tuple[str, str]]]:
    """Consecutive groups of at most ``size`` files of one dataset each (a shard run takes one dataset)."""
    out: list[list[tuple[str, str]]] = []
    for item in files:
        if out and len(out[-1]) < size and out[-1][0][1] == item[1]:
            out[-1].append(item)
        else:
            out.append([item])
    return out


def check_deployment(deployment: str) -> None:
    """Fail with one message when ``deployment`` (``flow/name``) is not on the Prefect server runs would go to."""
    from prefect import get_client  # after prepare: Prefect reads its env once, at import
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            found = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ConfigurationError(
                f"deployment {deployment!r} not found on {str(client.api_url).rstrip('/')}: deploy it first (`prefect deploy`, "
                "README 'Deploy to AWS'; self-hosted: deployments/local.yaml), or set PREFECT_API_URL to its server"
            ) from None
        pool = client.read_work_pool(found.work_pool_name) if found.work_pool_name else None
    _check_pool(deployment, pool)


def _check_pool(deployment: str, pool: Any) -> None:
    """Refuse a pool whose runs would wait forever (the backfill waits for every run it starts): a paused pool,
    or a pool served by workers with none online. A push or managed pool has no worker to wait for."""
    if pool is None:
        return
    status = getattr(pool.status, "value", pool.status)
    if status == "PAUSED" or pool.is_paused:
        raise ConfigurationError(
            f"work pool {pool.name!r} of deployment {deployment!r} is paused: its runs would never start "
            f"(`prefect work-pool resume {pool.name}`)"
        )
    served_by_workers = not (pool.type.endswith(":push") or pool.type == "prefect:managed")
    if served_by_workers and status == "NOT_READY":
        raise ConfigurationError(
            f"work pool {pool.name!r} of deployment {deployment!r} has no worker online: its runs would wait "
            f"forever. Start one (`prefect worker start --pool {pool.name}`), then run the backfill again"
        )


def run_deployments(
    files: list[tuple[str, str]],
    deployment: str,
    *,
    concurrency: int,
    shard_size: int = 100,
    mode: str | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    on_interrupt: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Deployment runs (e.g. on an ECS pool), at most ``concurrency`` in flight: one per shard of
    ``shard_size`` files for an ``ingest-files`` deployment, one per file for an ``ingest-file`` one.

    The warehouse itself is guarded by the deployment's concurrency limit and, when
    ``SLUICE_WAREHOUSE_CONCURRENCY_LIMIT`` names one, a Prefect global concurrency limit every load task
    holds a slot of, so a large backfill cannot overload it.
    """
    sharded = deployment.split("/", 1)[0] == SHARD_FLOW
    groups = shards(files, shard_size) if sharded else [[f] for f in files]
    # a second Ctrl-C: the runs go on on their pool, this command stops waiting
    stop_waiting = threading.Event()

    def one(group: list[tuple[str, str]]) -> list[dict[str, Any]]:
        try:
            return _run_group(deployment, group, sharded=sharded, mode=mode, stop_waiting=stop_waiting)
        except Exception as exc:
            error = f"deployment run not started or lost: {type(exc).__name__}: {exc}"
            return [_result(uri, name, None, "failed", None, error) for uri, name in group]

    def not_started(uri: str, name: str) -> dict[str, Any]:
        return _result(uri, name, None, "failed", None, NOT_STARTED)

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="sluice-deploy") as pool:
        futures = {pool.submit(one, group): group for group in groups}
        try:
            results = _collect(pool, futures, not_started, on_done, on_interrupt, give_up=stop_waiting.set)
        except Interrupted as stop:
            raise Interrupted(sorted(stop.results, key=lambda r: r["source"])) from None
    return sorted(results, key=lambda r: r["source"])


def _result(
    source: str,
    dataset: str | None,
    flow_run_id: str | None,
    status: str,
    state: str | None,
    error: str | None,
    summary: str | None = None,
) -> dict[str, Any]:
    """A file's result; ``summary``: a deployment run's rows, as its completed state's message says them, and
    their counts as ``sluice ingest --json`` gives them (the backfill's last line adds them up)."""
    result = {
        "source": source,
        "dataset": dataset,
        "flow_run_id": flow_run_id,
        "status": status,
        "state": state,
        "error": error,
    }
    return result if summary is None else {**result, "summary": summary, **(rows_of(summary) or {})}


def still_running(flow_run_id: str) -> str:
    """What to tell about a deployment run the backfill stopped waiting for: it goes on, and how to stop it."""
    return (
        f"still running on the work pool as flow run {flow_run_id} (the backfill stopped waiting for it): "
        f"`prefect flow-run inspect {flow_run_id}` shows it, `prefect flow-run cancel {flow_run_id}` stops it"
    )


def _run_group(
    deployment: str,
    group: list[tuple[str, str]],
    *,
    sharded: bool,
    mode: str | None,
    stop_waiting: threading.Event,
) -> list[dict[str, Any]]:
    from prefect.deployments import run_deployment  # after prepare: Prefect reads its env once, at import

    name = group[0][1]
    parameters: dict[str, Any] = {"dataset": name}
    if sharded:
        parameters["sources"] = [uri for uri, _ in group]
    else:
        parameters["source"] = group[0][0]
    if mode:
        parameters["mode"] = mode
    # Created, then waited for here (not by run_deployment): a backfill told to stop waiting knows the run's id.
    created = run_deployment(deployment, parameters=parameters, timeout=0)
    flow_run = _final(created, stop_waiting)
    if not flow_run.state or not flow_run.state.is_final():
        run_id = str(flow_run.id)
        state = _name(flow_run.state)
        return [
            _result(uri, dataset, run_id, RUNNING, state, still_running(run_id)) for uri, dataset in group
        ]
    state = flow_run.state
    if not sharded:
        status, error, summary = _outcome(state)
        return [_result(group[0][0], name, str(flow_run.id), status, _name(state), error, summary)]
    return _shard_results(flow_run, group)


def _outcome(state: Any) -> tuple[str, str | None, str | None]:
    """(status, error, summary) of an ``ingest-file`` run from its final state: a completed run named ``Skipped``
    loaded nothing on purpose (already loaded, superseded, unclaimed: its message says which); another completed
    run's message is its rows (``flows.skeleton.completed``: a deployment's runs persist no result to read them
    from)."""
    if state is not None and state.is_completed():
        if state.name == "Skipped":
            return "skipped", state.message, None
        return "success", None, state.message or None
    return "failed", state.message if state is not None else "no final state", None


def _final(flow_run: Any, stop_waiting: threading.Event) -> Any:
    """``flow_run`` read again until its state is final, or as it is when ``stop_waiting`` is set."""
    # after prepare: Prefect reads its environment once, at import
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        while not (flow_run.state and flow_run.state.is_final()):
            if stop_waiting.wait(POLL_SECONDS):
                break
            flow_run = client.read_flow_run(flow_run.id)
    return flow_run


def _name(state: Any) -> str | None:
    return state.name if state is not None else None


def _shard_results(flow_run: Any, group: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per file: the state of its ``ingest-file`` subflow run in the shard; a file the shard never reached fails."""
    children = {run.parameters.get("source"): run for run in _subflow_runs(flow_run.id)}
    results = []
    for uri, name in group:
        child = children.get(uri)
        if child is None:
            shard_state = _name(flow_run.state) or "unknown"
            results.append(
                _result(uri, name, None, "failed", None, f"shard run {flow_run.id} ended {shard_state} first")
            )
            continue
        status, error, summary = _outcome(child.state)
        results.append(_result(uri, name, str(child.id), status, _name(child.state), error, summary))
    return results


def _subflow_runs(parent_id: Any) -> list[Any]:
    # after prepare: Prefect reads its environment once, at import
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    runs: list[Any] = []
    flow_run_filter = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
    with get_client(sync_client=True) as client:
        while page := client.read_flow_runs(flow_run_filter=flow_run_filter, limit=200, offset=len(runs)):
            runs.extend(page)
            if len(page) < 200:
                break
    return runs
