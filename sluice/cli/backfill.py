"""``sluice backfill``: ingest every file under a prefix, with a progress bar."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sluice.cli.output import (
    AsJson,
    Verbose,
    bucketless,
    console,
    err,
    exit_now,
    fail,
    known_dataset,
    print_json,
)
from sluice.errors import ConfigurationError, counted, rows_line
from sluice.runtime import prepare

#: The flows a backfill starts deployment runs of: a shard of files per run, or one file per run.
DEPLOYMENT_FLOWS = ("ingest-files", "ingest-file")


def register(app: typer.Typer) -> None:
    app.command()(backfill)


def backfill(
    prefix: Annotated[str, typer.Argument(help="Landing prefix: a folder or s3://bucket/prefix.")],
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset (default: by key).")] = None,
    # 4, not 2: on 2 cores, 17-22% more small files a second and the same time for large ones (benchmarks/local.py)
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Files in flight at once.")] = 4,
    deployment: Annotated[
        str | None,
        typer.Option(
            help="Run as deployment runs: ingest-files/NAME takes a shard of files per run, "
            "ingest-file/NAME one file per run."
        ),
    ] = None,
    shard_size: Annotated[
        int | None,
        typer.Option(min=1, help="Files per ingest-files run (default: SLUICE_BACKFILL_SHARD_SIZE, 100)."),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(metavar="hard|soft", help="hard or soft (default: settings).")
    ] = None,
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """Ingest every file under PREFIX; files already loaded are skipped. Exit 1 if any file failed.

    Locally, the files already loaded are skipped in bulk by one query; the rest run --concurrency at a time.
    """
    if mode is not None and mode not in ("hard", "soft"):
        raise fail(f"--mode must be hard or soft, not {mode!r}", code=2)
    flow, _, name = (deployment or "").partition("/")
    if deployment is not None and (flow not in DEPLOYMENT_FLOWS or not name):
        # Prefect's own error was a traceback ("Invalid deployment name format"), and another flow's deployment
        # would have been sent a file's parameters
        raise fail(
            f"--deployment must be ingest-files/NAME or ingest-file/NAME (flow/deployment), not {deployment!r}",
            code=2,
        )
    known_dataset(dataset)
    bucketless(prefix)
    # local: the server starts once files need it; deployments: where the user's Prefect profile points
    prepare(verbose, server=deployment is not None, remote=deployment is not None)
    from sluice.adapters import storage
    from sluice.cli import fanout  # kept off `sluice --help` (SQLAlchemy, the registry)

    files, refused, unclaimed = fanout.survey(prefix, dataset)
    if not files and not refused:
        if not storage.is_s3(prefix) and not Path(prefix).exists():  # a mistyped folder is not an empty one
            raise fail(f"{prefix}: no such folder")
        # the file named itself: "it holds 1 file" was about a folder
        if unclaimed == [storage.absolute(prefix)]:
            raise fail(f"{prefix}: no dataset claims this file's name; --dataset NAME loads it as NAME")
        there = (
            f" (it holds {counted(len(unclaimed), 'file')} named as no dataset's are: "
            f"{_names(unclaimed)}; --dataset NAME loads them as NAME)"
            if unclaimed
            else ""
        )
        raise fail(f"{prefix}: no files that {dataset or 'any dataset'} claims{there}")
    if deployment and files:
        try:
            fanout.check_deployment(deployment)
        except ConfigurationError as exc:
            raise fail(str(exc)) from None
    shown = not as_json and console.is_terminal  # off a terminal the bar would leave a blank line
    with (
        Progress(
            TextColumn("backfill"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[now]}"),
            console=console,
            disable=not shown,
            transient=True,
        ) as progress,
        _rows_read(progress, shown),
    ):
        bar = progress.add_task("files", total=len(files), now="")

        def done(_: Any) -> None:
            progress.advance(bar)

        def interrupted(in_flight: int) -> None:  # said at once: the runs in flight may take a while
            progress.stop()
            if deployment:  # they run on the pool's workers, not here: a second Ctrl-C leaves them running
                err.print(
                    f"interrupted: starting no more deployment runs; waiting for the {in_flight} in flight to "
                    "finish on the work pool (Ctrl-C again to stop waiting: they go on running there)",
                    highlight=False,
                )
                return
            err.print(
                f"interrupted: starting no more files; waiting for the {in_flight} in flight to finish (Ctrl-C "
                "again to stop without them: their loads roll back)",
                highlight=False,
            )

        try:
            results = (
                _run(files, deployment, concurrency, shard_size, mode, done, interrupted) if files else []
            )
        except fanout.Interrupted as stop:
            results, abandoned = stop.results, stop.abandoned
            stopped = True
        else:
            stopped, abandoned = False, 0
    # an entry that is not a loadable file (a broken link, a pipe, ...) is a failed result of its own, never dropped
    results = sorted(
        [*results, *(fanout.refused_result(r, deployment=bool(deployment)) for r in refused)],
        key=lambda r: str(r["source"]),
    )
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("success", "skipped", "failed")}
    not_started = sum(1 for r in results if r.get("error") == fanout.NOT_STARTED)
    running = sorted({r["flow_run_id"] or "?" for r in results if r["status"] == fanout.RUNNING})
    if running:
        counts[fanout.RUNNING] = sum(1 for r in results if r["status"] == fanout.RUNNING)
    if as_json:
        print_json(
            {
                "prefix": prefix,
                "files": len(results),
                **counts,
                "unclaimed": len(unclaimed),
                # which: the text names the first only, and a count said nothing a script could act on
                "unclaimed_files": unclaimed,
                "interrupted": stopped,
                "results": results,
            }
        )
    else:
        for r in results:
            console.print(
                f"{r['status']:8} {r['source']}" + (f"  {_what(r)}" if _what(r) else ""),
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
        console.print(
            f"{len(results)} file{'' if len(results) == 1 else 's'}: {counts['success']} loaded, "
            f"{counts['skipped']} skipped, {counts['failed'] - not_started} failed"
            + (f", {not_started} not started" if not_started else "")  # were counted failed after a Ctrl-C
            + (f", {counts[fanout.RUNNING]} still running" if running else "")
            + _rows(results)
            + _left_out(unclaimed),
            highlight=False,
            soft_wrap=True,
        )
    if stopped:
        going_on = (
            f"; {counts[fanout.RUNNING]} are still loading in {len(running)} deployment run(s) that go on on the "
            f"work pool ({', '.join(running)}): `prefect flow-run cancel ID` stops one, `prefect flow-run ls` "
            "lists them"
            if running
            else ""
        )
        said = [f"{not_started} of {len(results)} files were not started"] if not_started else []
        said += [f"{abandoned} were stopped while loading"] if abandoned else []
        message = (
            f"interrupted: {' and '.join(said) or 'every file had started'}; run the same backfill again to load "
            f"the rest (loaded files are skipped){going_on}"
        )
        if abandoned:  # their threads cannot be stopped, and an exit would wait for them: exit now
            err.print(f"[bold red]error[/]: {message}", highlight=False, soft_wrap=True)
            exit_now(130)
        raise fail(message, code=130)
    if counts["failed"]:
        raise typer.Exit(1)


@contextlib.contextmanager
def _rows_read(progress: Progress, shown: bool) -> Iterator[None]:
    """Beside the bar, on a terminal: the rows read so far of the file a pass last told of (``sluice.ingest.progress``,
    as ``sluice ingest`` shows them): a big file kept the bar at 0 for as long as it took."""
    if not shown:
        yield
        return
    from sluice.ingest import progress as rows_read  # kept off `sluice --help` (pandas)

    def told(source: str, rows: int) -> None:
        progress.update(progress.task_ids[0], now=f"{source.rsplit('/', 1)[-1]}: {rows:,} rows read")
        progress.refresh()

    with rows_read(told):
        yield


def _run(
    files: list[tuple[str, str]],
    deployment: str | None,
    concurrency: int,
    shard_size: int | None,
    mode: str | None,
    done: Callable[[Any], None],
    interrupted: Callable[[int], None],
) -> list[dict[str, Any]]:
    """Every file's result, as deployment runs or in this process (``fanout.Interrupted`` on Ctrl-C)."""
    from sluice.cli import fanout  # kept off `sluice --help` (SQLAlchemy, the registry)

    if deployment:
        from sluice.settings import get_settings  # kept off `sluice --help` (pydantic-settings)

        return fanout.run_deployments(
            files,
            deployment,
            concurrency=concurrency,
            shard_size=shard_size or get_settings().backfill_shard_size,
            mode=mode,
            on_done=done,
            on_interrupt=interrupted,
        )
    try:
        reports = fanout.run_local(
            files, concurrency=concurrency, mode=mode, on_done=done, on_interrupt=interrupted
        )
    except fanout.Interrupted as stop:
        raise fanout.Interrupted([_dump(r) for r in stop.results], stop.abandoned) from None
    return [_dump(r) for r in reports]


def _what(result: dict[str, Any]) -> str:
    """A file's line after its status: why it failed or was skipped; for a load, its rows as ``sluice ingest``
    counts them (a soft load's quarantined rows were invisible: ``success  x.csv`` said nothing of them)."""
    if result.get("error"):  # most errors start with the file, which the line has just named
        return str(result["error"]).removeprefix(f"{result['source']}: ")
    # a deployment run whose state's message gave no counts (fanout._result reads them from it): the message
    if result["status"] != "success" or "rows_read" not in result:
        return result.get("summary") or ""
    what = rows_line(
        result["rows_read"], result["rows_loaded"], result.get("table"), result["rows_quarantined"]
    )
    return what + (f" ({result['quarantine_uri']})" if result.get("quarantine_uri") else "")


def _rows(results: list[dict[str, Any]]) -> str:
    """``; rows: N read, N loaded, N quarantined`` over the files that ran, here or as deployment runs (not the
    skipped ones' 0s)."""
    ran = [
        r for r in results if r["status"] in ("success", "failed") and r.get("state") and "rows_read" in r
    ]  # not an entry refused before any run (no state), nor a deployment run whose state gave no counts
    if not ran:
        return ""
    read, loaded, quarantined = (
        sum(r.get(k) or 0 for r in ran) for k in ("rows_read", "rows_loaded", "rows_quarantined")
    )
    return f"; rows: {read:,} read, {loaded:,} loaded, {quarantined:,} quarantined"


def _left_out(unclaimed: list[str]) -> str:
    """``; N files no dataset claims were left out (…)``: they had no line at all, so a file landed under a name
    no pattern matches (``sales.csv`` beside ``orders.csv``) went unnoticed."""
    if not unclaimed:
        return ""
    return (
        f"; {counted(len(unclaimed), 'file')} no dataset claims left out "
        f"({_names(unclaimed)}: --dataset NAME loads them as NAME)"
    )


def _names(uris: list[str]) -> str:
    """``address.csv`` or ``address.csv and 3 more``."""
    first = uris[0].rsplit("/", 1)[-1]
    return first + (f" and {len(uris) - 1:,} more" if len(uris) > 1 else "")


def _dump(report: Any) -> dict[str, Any]:
    return dict(report.model_dump(exclude={"failures", "flow_run_id"}))
