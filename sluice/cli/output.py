"""What every command prints through: the two consoles, one readable error line, one JSON object.

With ``--json``, stdout holds exactly one JSON document on every path: the command's own, or, when a command fails
before it has one (a usage error, no files, an unreachable warehouse or Prefect API), ``{"status": "failed",
"error": ..., "exit_code": ...}`` written by ``sluice.cli.main``. Progress, logs and the readable error line go to
stderr.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from sluice import errors, progress, warm

# emoji off: a message quoting ":-1:" (getaddrinfo's "127.0.0.1:-1: …") or a file named "x:smile:.csv" is printed
# as written; what a message quotes goes through ``escape`` (a file named "x[red].csv" kept its brackets)
console = Console(emoji=False)
err = Console(stderr=True, emoji=False)

__all__ = ["console", "err", "escape", "showing", "warn"]


def reset_consoles() -> None:
    """Re-create both consoles in place (every module holds them by reference): rich detects the terminal, colour
    system and size when a console is created, and a warm runner's child gets the client's terminal after that."""
    console.__init__(emoji=False)  # type: ignore[misc]
    err.__init__(stderr=True, emoji=False)  # type: ignore[misc]


Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Show the run's log lines (Prefect's and Sluice's), not only its warnings."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


class _Run:
    """This command's output so far (one process runs one command; ``begin`` resets it for in-process callers)."""

    as_json = False
    printed_json = False
    error: str | None = None


@contextmanager
def showing(
    label: str, on: Console | None = None, *, starting: str | None = None, quiet: bool = False
) -> Iterator[None]:
    """While inside, on a terminal: a spinner line ``starting`` (default ``label...``), then
    ``label: <what the run told last>...`` (``sluice.progress``: its stage and rows so far), redrawn at each line
    told and gone when done. Off a terminal (piped, redirected), ``quiet`` or with ``--json``: nothing at all."""
    target = on if on is not None else err
    if quiet or _Run.as_json or not target.is_terminal:
        yield
        return
    # only on a terminal: rich's live display is not needed to run a command
    from rich.live import Live
    from rich.spinner import Spinner
    from rich.text import Text

    def one_line(text: str) -> Text:  # cut to the terminal's width: a wrapped status line would be two
        shown = Text(text)
        shown.truncate(max(10, target.width - 2), overflow="ellipsis")
        return shown

    spinner = Spinner("dots", text=one_line(starting or f"{label}..."), style="status.spinner")

    def told(line: str) -> None:
        spinner.update(text=one_line(f"{label}: {line}..."))
        live.refresh()  # now: a stage that takes less than a refresh (0.08 s) is still seen

    with (
        Live(spinner, console=target, transient=True, refresh_per_second=12.5) as live,
        progress.listening(told),
    ):
        yield


def begin(argv: list[str]) -> None:
    _Run.as_json = "--json" in argv
    _Run.printed_json = False
    _Run.error = None


def error() -> str | None:
    """The error line this command printed with ``fail``, if any."""
    return _Run.error


def json_requested() -> bool:
    return _Run.as_json


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one readable error line and return the Exit to raise."""
    _Run.error = message
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print one ``warning: ...`` line on stderr: the console's, never a log record (in the warm runner's child a
    record can miss the client's stderr)."""
    err.print(f"warning: {message}", highlight=False, soft_wrap=True, markup=False)


def bucketless(uri: str) -> None:
    """Refuse an ``s3://`` URI without a bucket (``s3://``, ``s3:///x.csv``) as a usage error: it was a skipped run
    ("no registered dataset claims this key") or botocore's "Invalid bucket name" traceback."""
    if uri.startswith("s3://") and not uri.removeprefix("s3://").partition("/")[0]:
        raise fail(f"{uri!r} names no bucket: s3://BUCKET/KEY", code=2)


def landed(uri: str) -> None:
    """Refuse, before anything runs, a source ``sluice ingest`` cannot read as a landed file: none (``''`` was
    "is a folder", the current one), another scheme (``http://…`` was read as the local path ``./http:/…``: "file
    not found"), no bucket, or a name that is not UTF-8 or holds a control character (a traceback, or raw escape
    sequences on the terminal and in the ledger)."""
    if not uri.strip():
        raise fail("no file given: sluice ingest PATH or s3://BUCKET/KEY", code=2)
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    if scheme and scheme.group(1).lower() not in ("s3", "file"):
        raise fail(
            f"{uri}: {scheme.group(1)}:// is not read; land the file in a folder or S3 (a path or s3://BUCKET/KEY)",
            code=2,
        )
    bucketless(uri)
    from sluice.adapters.storage import printable, unusable_name  # standard library only (botocore is lazy)

    if reason := unusable_name(uri):
        raise fail(f"{printable(uri)}: {reason}")


def known_dataset(name: str | None) -> None:
    """Refuse a ``--dataset`` no dataset is registered as, as a usage error before anything runs: ``sluice ingest``
    made it a failed run (exit 1) in the ledger under a dataset that does not exist."""
    if name is None:
        return
    from sluice.datasets import get_dataset  # the registry (pandas, pandera): kept off `sluice --help`
    from sluice.errors import UnknownDataset

    try:
        get_dataset(name)
    except UnknownDataset as exc:
        raise fail(str(exc), code=2) from None


def where(report: Any) -> str:
    """`` at <state>`` for an error line, or nothing when the run failed before its first state."""
    return f" at {report.state}" if getattr(report, "state", None) else ""


def print_json(data: Any) -> None:
    _Run.printed_json = True
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def usage_error(exc: Any) -> None:
    """Print click's usage error (or, for None, its abort) as typer does, on stderr, and keep its message for the
    ``--json`` document: ``No such option: --limt (Possible options: --limit)``, ``Missing argument 'SOURCE'``."""
    from typer import rich_utils  # only on this path: rich's panels are not needed to run a command

    if exc is None:
        rich_utils.rich_abort_error()
        _Run.error = "aborted"
        return
    rich_utils.rich_format_error(exc)
    _Run.error = " ".join(exc.format_message().split())


def exit_now(code: int) -> NoReturn:
    """Flush stdout and stderr and leave with ``code`` at once: a backfill's threads cannot be stopped, and a normal
    exit waits for them (the loads they hold roll back when the process ends)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`sluice ... | head`)
            stream.flush()
    os._exit(code)


def finish_json(code: int) -> None:
    """With ``--json``, a command that failed without printing its document prints the failure as one."""
    if not _Run.as_json or _Run.printed_json or code == 0:
        return
    print_json({"status": "failed", "error": _Run.error or "failed (see stderr)", "exit_code": code})


def unreachable(exc: BaseException) -> str | None:
    """One readable line when ``exc`` (or what caused it) is an unreachable service, the user's to fix: the
    warehouse (SQLAlchemy's operational errors, worded as a run's ledger and alert word them:
    ``errors.database_error``) or the Prefect API (httpx transport errors)."""
    sqlalchemy = sys.modules.get("sqlalchemy")
    httpx = sys.modules.get("httpx")
    for seen in errors.chain(exc):
        if sqlalchemy is not None and isinstance(
            seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError
        ):
            return errors.database_error(seen) or f"the warehouse failed: {str(seen).strip().splitlines()[0]}"
        if httpx is not None and isinstance(seen, httpx.TransportError):
            if (stopped := _stopped_server(seen)) is not None:
                return stopped
            top = str(exc).strip().splitlines()[0] if exc is not seen else "the Prefect API"
            return (
                f"{top}: {type(seen).__name__}: {seen} "
                "(is the Prefect server running? `sluice services status`; check PREFECT_API_URL; "
                "`sluice ledger` shows how far a run got)"
            )
        if (forgotten := _run_forgotten(seen)) is not None:
            if (stopped := _stopped_server(getattr(seen, "http_exc", None))) is not None:
                return stopped
            return (
                f"the Prefect server at {forgotten} no longer knows this run: it was stopped or replaced while the "
                "run was going (`sluice services status`; check PREFECT_API_URL). `sluice ledger` shows how far "
                "the run got; run the same command again: nothing is loaded twice"
            )
    return None


def _stopped_server(exc: object) -> str | None:
    """The line for a request to the home's Prefect server that failed because `sluice services stop` stopped it
    after this process started (``services.prefect_stopped_since``); None for any other request or failure."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]  # httpx's errors; RuntimeError when built without it
    except (AttributeError, RuntimeError):
        return None
    if url.host not in ("127.0.0.1", "localhost"):
        return None
    import psutil  # on this error path only

    from sluice import services

    home = warm.home_of(os.environ)
    if not services.prefect_stopped_since(home, url.port, psutil.Process().create_time()):
        return None
    api = str(url.copy_with(query=None, fragment=None)).split("/api/", 1)[0] + "/api"
    return (
        f"the home's Prefect server ({api}) was stopped (`sluice services stop`) while this command ran; "
        "`sluice ledger` shows how far the run got. Run the same command again: nothing is loaded twice"
    )


def _run_forgotten(exc: BaseException) -> str | None:
    """The API URL when ``exc`` is Prefect's 404 for the flow or task run under way: the server that answered does
    not know the run (killed and replaced by another home's server on the same port, or its database reset). Was
    Prefect's ``ObjectNotFound: None`` with a traceback."""
    prefect_exceptions = sys.modules.get("prefect.exceptions")
    if prefect_exceptions is None or not isinstance(exc, prefect_exceptions.ObjectNotFound):
        return None
    try:
        path = str(exc.http_exc.request.url.copy_with(query=None, fragment=None))
    except (AttributeError, RuntimeError):  # not an httpx error, or one built without its request
        return None
    for part in ("/flow_runs/", "/task_runs/"):
        if part in path:
            return path[: path.index(part)]
    return None


#: A file system that refuses a write for a reason the user fixes: permissions, a read-only mount, a path through
#: a regular file, no space or quota left.
_FILESYSTEM = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def filesystem(exc: BaseException) -> str | None:
    """One readable line when ``exc`` (or what caused it) is the file system refusing a path, naming the path;
    under ``SLUICE_HOME``, what to do about the home. Before, an unwritable home was a traceback."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FILESYSTEM:
            paths = [str(p) for p in (seen.filename, seen.filename2) if p is not None]
            where = f"{' -> '.join(paths)}: " if paths else ""
            message = f"{where}{seen.strerror or os.strerror(seen.errno or 0)}"
            home = warm.home_of(os.environ)
            if any(Path(p).resolve().is_relative_to(home) for p in paths):
                message += (
                    f" (SLUICE_HOME is {home}: set SLUICE_HOME to a folder this user can write"
                    f"{', or free some space there' if seen.errno in (errno.ENOSPC, errno.EDQUOT) else ''})"
                )
            return message
        seen = seen.__cause__ or seen.__context__
    return None
