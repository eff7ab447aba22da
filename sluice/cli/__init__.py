"""``sluice``: ingest files, read the ledger, run the demo. Exit codes: 0 ok/skipped, 1 failed run, 2 usage.

Every command module of ``sluice/cli/`` is registered below, by name. Their heavy imports (Prefect, pandas,
the flows) are inside the commands, after ``runtime.prepare`` has set Prefect's environment, so that
``sluice --help`` and ``sluice ledger`` stay fast (tests/integration/test_cli.py checks pandas stays out).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from sluice import services
from sluice.cli import api, aws, backfill, data2bots, notify, output, sertis, totesys
from sluice.cli.output import AsJson, Verbose, console, err, escape, fail, print_json, warn, where
from sluice.errors import SluiceError, counted, rows_line, stopped_by
from sluice.files import identity
from sluice.progress import tell
from sluice.runtime import prepare

app = typer.Typer(
    name="sluice",
    help="Sluice: event-driven, validated ETL on Prefect 3 for AWS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The warehouse.", no_args_is_help=True)
app.add_typer(db_app, name="db")
services_app = typer.Typer(
    help="Local services of SLUICE_HOME: the Prefect server (runs, UI), the embedded PostgreSQL and the warm runner.",
    no_args_is_help=True,
)
app.add_typer(services_app, name="services")

__all__ = ["app", "console", "err", "fail", "main", "print_json", "print_runs"]

# The other pipelines' commands, each in its own module: listed here, so a renamed module fails loudly.
for _commands in (notify, totesys, data2bots, sertis, api, backfill, aws):
    _commands.register(app)


@functools.cache
def command() -> Any:
    """The click command typer builds from ``app``: once per process, and before the fork in the warm runner.

    Typer builds it on every call from the commands' signatures (``typing.get_type_hints`` on 34 functions,
    in every command). Nothing in it depends on the environment
    (``add_completion=False``); the context, terminal width and colours are per invocation, as before.
    """
    built = typer.main.get_command(app)
    _flags_take_no_value(built)
    return built


def _flags_take_no_value(group: Any) -> None:
    """Typer's rich help prints a flag's type as if it took a value (``--force <bool>``: ``--force true`` then
    fails with "unexpected extra argument"); its plain help does not. An empty metavar prints nothing there."""
    for param in group.get_params(typer.Context(group)):  # with --help, which typer builds per command
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(group, "commands", {}).values():
        _flags_take_no_value(sub)


def _prepare(verbose: bool = False, server: bool = True) -> None:
    prepare(verbose, server=server)


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="Landed file: a path or s3://bucket/key.")],
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Dataset name (default: resolved from the key).")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            "-m",
            metavar="hard|soft",
            help="hard: any bad row halts; soft: bad rows quarantine. Default: settings.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Reload a file already loaded (replaces its rows).")
    ] = False,
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """Ingest one landed file: extract → transform → validate → load, exactly once."""
    if mode is not None and mode not in ("hard", "soft"):
        raise fail(f"--mode must be hard or soft, not {mode!r}", code=2)
    output.known_dataset(dataset)
    output.landed(source)
    from sluice.adapters.storage import local_path  # standard library only

    if not source.startswith("s3://") and Path(local_path(source)).is_dir():
        # was "skipped: no registered dataset claims this key" (exit 0), or with --dataset "file not found"
        raise fail(f"{source} is a folder: `sluice backfill {source}` ingests every file under it", code=2)
    if dataset is None and not source.startswith("s3://") and Path(local_path(source)).is_file():
        from sluice import datasets  # the registry: kept off `sluice --help` (pandas)

        if datasets.resolve(local_path(source)) is None:
            # a file the user named, that nothing would load: was "skipped" and exit 0, which a script took for a
            # success (an S3 event for another prefix is still a recorded skip: the flow's, not this command's)
            raise fail(f"{source}: no dataset claims this file's name; --dataset NAME loads it as NAME")
    # On a terminal, what the command is doing: the home's services starting (a new home's first command was a
    # silent spinner for ~20 s), then the run's state and how far the read has got; -v: Prefect's log lines say it.
    with output.showing(f"ingest {Path(source).name}", quiet=verbose):
        _prepare(verbose)
        # after _prepare: the flows import Prefect, which reads its environment once, at import
        from sluice.cli.runner import run_ingest
        from sluice.ingest import progress as rows_read

        with rows_read(lambda _, rows: tell(f"{counted(rows, 'row')} read")):
            report = run_ingest(source, dataset=dataset, mode=mode, force=force)
    if as_json:
        print_json(report.model_dump(exclude={"failures", "flow_run_id"}))
    else:
        _print_report(report)
    if report.status == "failed":
        raise typer.Exit(1)


def _print_report(report: Any) -> None:
    from sluice.report import failure_lines

    colour = {"success": "green", "skipped": "yellow", "failed": "red"}.get(report.status, "white")
    # A run that read nothing (a skip, a missing file, a warehouse it could not reach) has no counts to give.
    counts = (
        ": " + rows_line(report.rows_read, report.rows_loaded, report.table, report.rows_quarantined)
        if report.status == "success" or report.rows_read or report.rows_quarantined
        else ""
    )
    console.print(
        f"[{colour}]{report.status}[/]{escape(' ' + report.dataset if report.dataset else '')} ← "
        f"{escape(report.source)}{counts}",
        highlight=False,
        soft_wrap=True,
    )
    if report.quarantine_uri:
        console.print(f"  quarantine: {report.quarantine_uri}", highlight=False, soft_wrap=True, markup=False)
    if report.status != "failed":  # a hard failure's error names the first failed checks already
        for line in failure_lines(report):
            console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
    if report.error and report.status == "failed":
        err.print(
            f"[bold red]error[/]{where(report)}: {escape(report.error)}", highlight=False, soft_wrap=True
        )
    elif report.error:
        console.print(f"  {report.error}", highlight=False, soft_wrap=True, markup=False)
    for note in getattr(report, "notes", None) or []:  # a cancellation that came too late, say
        console.print(f"  note: {note}", highlight=False, soft_wrap=True, markup=False)


@app.command()
def ledger(
    limit: Annotated[int, typer.Option(min=0, help="How many recent runs.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON array: each run with every state it went through.")
    ] = False,
) -> None:
    """Recent runs (file, status, the state reached, rows, error), from the configured ledger backend."""
    _prepare(server=False)
    from sluice.ledger import get_ledger, reap_abandoned, summarize  # kept off `sluice --help` (SQLAlchemy)
    from sluice.settings import get_settings

    settings = get_settings()
    if settings.ledger == "postgres" and "ledger_table" in settings.model_fields_set:
        # `. .sluice/deploy.env` sets the stack's table, not the backend: an empty list looked like no runs
        warn(
            f"SLUICE_LEDGER_TABLE={settings.ledger_table} is set, but SLUICE_LEDGER is postgres: these are the "
            "warehouse's runs (SLUICE_LEDGER=dynamodb reads the table)"
        )
    store = get_ledger()
    reap_abandoned(store, settings.home)  # the next run tells Prefect about the runs it closes
    runs = store.recent(limit)
    if as_json:
        print_json([{**summarize(r), "states": [e.as_dict() for e in r]} for r in runs])
        return
    columns = (
        "started",
        "run",
        "dataset",
        "status",
        "state",
        "read",
        "loaded",
        "quarantined",
        "error",
        "source",
    )
    rows = [
        (
            run[0].started_at.strftime("%Y-%m-%d %H:%M:%S"),
            s["run_id"],
            s["dataset"],
            s["status"],
            s["state"],
            str(s["rows_read"]),
            str(s["rows_loaded"]),
            str(s["rows_quarantined"]),
            " ".join((s["error"] or "").split()),
            s["source"] or "",
        )
        for run in runs
        for s in [summarize(run)]
    ]
    if not console.is_terminal:
        # piped or redirected: one tab-separated line per run, whole values, for grep/cut/awk (no box drawing to wrap)
        for line in (columns, *rows):
            print("\t".join(line))
        return
    if not rows:  # was an empty table: a header with nothing under it
        console.print(
            "no runs yet: `sluice ingest FILE --dataset NAME` or `sluice backfill FOLDER` makes them",
            highlight=False,
            markup=False,
        )
        return
    print_runs(console, rows)


#: The narrowest error column the ledger's table is drawn with; narrower, a terminal gets lines.
ERROR_MIN_WIDTH = 24
#: The table's source and error columns show at most this many characters (the lines view and piped output: all).
SOURCE_SHOWN, ERROR_SHOWN = 32, 120


def _cut(text: str, limit: int, keep_end: bool = False) -> str:
    """``text`` in at most ``limit`` characters, an ellipsis where it was cut (a path keeps its end: the file)."""
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :] if keep_end else text[: limit - 1] + "…"


def print_runs(to: Console, rows: list[tuple[str, ...]]) -> None:
    """The ledger's runs (``started, run, dataset, status, state, read, loaded, quarantined, error, source``: the
    error on one line, as ``ledger`` makes it) on a terminal: a table where its columns fit whole beside an error
    column of ``ERROR_MIN_WIDTH``; on a narrower one (80 columns: the table cut every value into pieces), a few
    lines per run, every value whole."""
    counted_rows = [(*row[:1], row[1][:8], *row[2:5], *(f"{int(n):,}" for n in row[5:8])) for row in rows]

    def table(errors: bool) -> Table:
        drawn = Table(title="Recent runs")
        for column in (
            "started",
            "run",
            "dataset",
            "source",
            "status",
            "state",
            "read",
            "loaded",
            "quarantined",
        ):
            right = column in ("read", "loaded", "quarantined")
            drawn.add_column(column, no_wrap=True, justify="right" if right else "left")
        if errors:
            drawn.add_column("error", overflow="fold")
        for row, counted_row in zip(rows, counted_rows, strict=True):
            source = _cut(row[9], SOURCE_SHOWN, keep_end=True)
            drawn.add_row(
                *counted_row[:3], source, *counted_row[3:], *([_cut(row[8], ERROR_SHOWN)] if errors else [])
            )
        return drawn

    if Measurement.get(to, to.options, table(errors=False)).maximum + ERROR_MIN_WIDTH + 3 <= to.width:
        to.print(table(errors=True))
        return
    to.print("Recent runs, newest first", style="italic", highlight=False)
    for row, (started, run, dataset, status, state, read, loaded, quarantined) in zip(
        rows, counted_rows, strict=True
    ):
        to.print(Text(f"{started}  {run}  {dataset}: {status} ({state})"))
        if row[9]:
            to.print(Padding(Text(row[9]), (0, 0, 0, 2), expand=False))
        to.print(
            Padding(
                Text(f"{read} read, {loaded} loaded, {quarantined} quarantined"), (0, 0, 0, 2), expand=False
            )
        )
        if row[8]:
            to.print(Padding(Text(row[8]), (0, 0, 0, 2), expand=False))


@db_app.command("url")
def db_url(
    show_password: Annotated[bool, typer.Option(help="Print the password too.")] = False,
) -> None:
    """Print the warehouse's SQLAlchemy URL (starting the embedded PostgreSQL if needed)."""
    from sluice.adapters.warehouse import database_url, redact  # kept off `sluice --help` (SQLAlchemy)

    url = database_url()
    print(url if show_password else redact(url))


def _service_paths() -> tuple[Path, Path | None]:
    """The home and, unless an external warehouse is configured, the embedded PostgreSQL's data folder."""
    from sluice.settings import get_settings  # kept off `sluice --help` (pydantic-settings)

    settings = get_settings()
    home = settings.home.resolve()
    external = settings.database_url is not None or settings.database_secret_arn is not None
    return home, None if external else home / "pg"


@services_app.command("status")
def services_status(as_json: AsJson = False) -> None:
    """Show the home's Prefect server (UI address), embedded PostgreSQL and warm runner, and whether they run."""
    info = services.status(*_service_paths(), env=dict(os.environ), cwd=os.getcwd())
    info["prefect_api_url_set"] = os.environ.get("PREFECT_API_URL")
    if as_json:
        print_json(info)
        return
    prefect, pg, runner = info["prefect"], info["postgres"], info["runner"]
    console.print(f"home      {info['home']}", highlight=False, soft_wrap=True)
    if info["prefect_api_url_set"]:
        console.print(
            f"note      PREFECT_API_URL is set: runs go to {info['prefect_api_url_set']}, not to this home's server",
            highlight=False,
            soft_wrap=True,
        )
    line = f"prefect   {prefect['state']}"
    if prefect["running"]:
        line += f"  pid {prefect['pid']}  UI {prefect['ui']}  (PREFECT_API_URL={prefect['api_url']})"
    console.print(line, highlight=False, soft_wrap=True)
    line = f"postgres  {pg['state']}"
    if pg["running"]:
        line += f"  pid {pg['pid']}  {pg['url']}"
    console.print(line, highlight=False, soft_wrap=True)
    line = f"runner    {runner['state']}"
    if runner["running"]:
        stale = "" if runner["current"] else "  (stale for this environment: replaced by the next command)"
        line += f"  pid {runner['pid']}  {counted(runner['commands'], 'command')} in progress{stale}"
    console.print(line, highlight=False, soft_wrap=True)


@services_app.command("start")
def services_start() -> None:
    """Start them now (otherwise the first command that needs one starts it)."""
    from sluice import warm

    env, cwd = dict(os.environ), os.getcwd()  # the runner must match the commands' environment, as given
    home, pgdata = _service_paths()
    with err.status("starting the Prefect server..."):
        api_url = services.ensure_prefect_server(home)
    if pgdata is not None:
        from sluice.adapters.warehouse import database_url  # kept off `sluice --help` (SQLAlchemy)

        database_url()
    console.print(
        f"prefect   running  UI {api_url.removesuffix('/api')}  (PREFECT_API_URL={api_url})",
        highlight=False,
        soft_wrap=True,
    )  # the URL a worker or Prefect's own CLI needs to reach this server (README: self-hosted worker)
    if pgdata is not None:
        console.print(f"postgres  running  {pgdata}", highlight=False, soft_wrap=True)
    if not warm.enabled(env):
        console.print("runner    off (SLUICE_WARM)", highlight=False)
        return
    with err.status("starting the warm runner..."):
        started = warm.start(warm.home_of(env), env, cwd, wait=True)
    if not started:
        raise fail(f"the warm runner did not start; see {warm.runner_dir(home) / warm.LOG_FILE}")
    console.print(f"runner    running  {warm.socket_path(home)}", highlight=False, soft_wrap=True)


@services_app.command("stop")
def services_stop() -> None:
    """Stop the home's warm runner, Prefect server and embedded PostgreSQL; the next command restarts them."""
    home, pgdata = _service_paths()
    stopped = services.stop(home, pgdata)
    for name, was_running in stopped.items():
        if name == "postgres" and pgdata is None:  # SLUICE_DATABASE_URL: not this home's to stop
            console.print(f"{name:9} external (left as it is)", highlight=False)
            continue
        console.print(f"{name:9} {'stopped' if was_running else 'was not running'}", highlight=False)


@app.command()
def demo(
    rows: Annotated[int, typer.Option(min=1, help="Rows per generated file.")] = 1000,
    verbose: Verbose = False,
) -> None:
    """The main job: generate sample files for every dataset, land them, ingest them, summarize."""
    # a new home's services start first (about 12 s): said, as the demo's own steps are
    with output.showing("demo", console, starting="demo: starting...", quiet=verbose):
        _prepare(verbose)
        from sluice.demo import run_demo  # after _prepare (the demo runs flows); kept off `sluice --help`

    code = run_demo(console, rows=rows)
    raise typer.Exit(code)


#: The shell's status for a command stopped by Ctrl-C (128 + SIGINT); typer exits with it on KeyboardInterrupt.
INTERRUPTED = 130
#: 128 + SIGPIPE: the reader of stdout went away (``sluice ledger | head``), as a shell reports a producer a closed
#: pipe stopped; click exits 1 on EPIPE, which is a failed run's code.
BROKEN_PIPE = 141
INTERRUPTED_MESSAGE = (
    "interrupted: the run stopped before it finished; what it had not committed was rolled back "
    "(`sluice ledger` shows where it stopped). Run the same command again: nothing is loaded twice"
)


#: 128 + SIGTERM
TERMINATED_CODE = 143


class Terminated(BaseException):
    """SIGTERM to an in-process command, raised in its main thread. Prefect closes a run as failed on SIGTERM, then
    kills its own process with the signal: the command died without a word, and ``--json`` printed nothing."""


def _terminated(_signum: int, _frame: object) -> None:
    raise Terminated


def main(prog_name: str | None = None, served: bool = False) -> None:
    code: int = 0
    stdout_was = identity(1)  # descriptor 1: what rich points at /dev/null on EPIPE
    output.begin(sys.argv[1:])
    if not served:  # a warm runner's child dies of the signal: its client says so
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, _terminated)
    try:
        # not standalone: click's usage errors reach this function, which prints them as typer would and keeps
        # the message for the --json document (standalone, typer printed it and exited: the document only said
        # "usage error"); a command's Exit comes back as its code
        result = command().main(prog_name=prog_name, standalone_mode=False)
        code = result if isinstance(result, int) else 0
        if code == INTERRUPTED and output.error() is None:  # typer's Exit(130) for a KeyboardInterrupt
            fail(INTERRUPTED_MESSAGE)
    except typer.TyperException as exc:  # click's usage errors (typer's own click) derive from it
        output.usage_error(exc)
        code = exc.exit_code
    except typer.Abort:
        output.usage_error(None)
        code = 1
    except SluiceError as exc:
        fail(str(exc))
        code = 1
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if _reader_gone(stdout_was):
            code = BROKEN_PIPE
        if not isinstance(exc.code, int | None):
            err.print(str(exc.code), highlight=False)
        if code == INTERRUPTED and output.error() is None:  # typer's silent Exit(130) for a KeyboardInterrupt
            fail(INTERRUPTED_MESSAGE)
    except KeyboardInterrupt:  # raised outside typer's own handling (after the command returned)
        code = INTERRUPTED
        fail(INTERRUPTED_MESSAGE)
    except Terminated:
        fail(stopped_by(signal.SIGTERM))
        output.finish_json(TERMINATED_CODE)
        output.exit_now(TERMINATED_CODE)
    except Exception as exc:
        message = output.unreachable(exc) or output.filesystem(exc)
        if message is None:
            if not output.json_requested():
                raise  # a bug: its traceback, as before
            err.print_exception()  # a bug under --json: the traceback on stderr, the JSON document on stdout
            message = f"{type(exc).__name__}: {exc}"
        fail(message)
        code = 1
    output.finish_json(code)
    _exit(code)


def _reader_gone(stdout_was: tuple[int, int] | None) -> bool:
    """Whether the exit is the answer to EPIPE on stdout: click wraps stdout to pacify its flushes, and rich (ours and
    typer's help) points descriptor 1 at /dev/null, and both exit 1."""
    if type(sys.stdout).__name__ == "PacifyFlushWrapper":
        return True
    now = identity(1)
    return now is not None and now != stdout_was and now == identity(os.devnull)


def _exit(code: int) -> None:
    """Exit once the work is done and flushed, without tearing the interpreter down.

    With Prefect, pandas and pyarrow loaded, Python's finalisation (collecting every module's objects) took
    0.5-1.2 s of a 10-row ingest here. Exit handlers still run first (Prefect flushes its logs and events
    to the API, pgserver's bookkeeping), pooled warehouse connections are closed and stdout is flushed;
    with a non-daemon thread still alive, or nothing heavy loaded, the exit is the normal one.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if "prefect" not in sys.modules or others:
        sys.exit(code)
    if "sluice.adapters.warehouse" in sys.modules:
        sys.modules["sluice.adapters.warehouse"].dispose_engines()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`sluice ... | head`)
            stream.flush()
    os._exit(code)
