"""Errors a user can act on. Each carries one readable message; none is retried."""

from __future__ import annotations

import errno
import re
import signal
import sys
from collections.abc import Iterator, Mapping
from typing import Any


class SluiceError(Exception):
    """A failure with a clear, user-facing message (bad input, bad configuration)."""

    retryable = False


class Transient(Exception):
    """A transient fault whose message is already the user's: retried like any other, then shown as it is (no
    class name in front)."""


class SourceNotFound(SluiceError):
    """The landed file does not exist."""


class SourceUnreadable(SluiceError):
    """The landed file exists but this principal may not read it (permissions, encryption key)."""


class DestinationUnwritable(SluiceError):
    """A zone or export location this principal may not write (permissions, encryption key, no such bucket)."""


class FileChanged(SluiceError):
    """The landed file changed between its fingerprint and the end of its read (still being written, or replaced):
    what was read is not what was fingerprinted, so nothing loads."""


class BadFile(SluiceError):
    """The file cannot be read as the dataset's format (columns, encoding, delimiter...)."""


class UnknownDataset(SluiceError):
    """No registered dataset has this name or claims this key."""


class ValidationFailed(SluiceError):
    """Rows failed the dataset's checks in hard mode."""

    def __init__(
        self,
        message: str,
        *,
        rows_invalid: int = 0,
        quarantine_uri: str | None = None,
        failures: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.rows_invalid = rows_invalid
        self.quarantine_uri = quarantine_uri
        self.failures = failures or []  # the first ones (row, column, check, value), for the run's artifact


class RunCancelled(SluiceError):
    """The run was cancelled from Prefect (the UI, ``prefect flow-run cancel``) while it ran in a command's own
    process, where no worker is there to stop it: it stopped at its next checkpoint (before a step, between the
    chunks of a load), and what it had not committed rolled back."""


class ConfigurationError(SluiceError):
    """A setting is missing or wrong."""


class NoSpace(SluiceError):
    """A disk or quota filled up while a run wrote its scratch files or its quarantine (not retried: the user frees
    space, then runs the same command again)."""


#: A write refused because a disk, a quota or the file-size limit is full.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def no_space(exc: BaseException, folder: object) -> NoSpace | None:
    """``exc`` as one ``NoSpace`` naming the path that could not be written (the destination of a copy, else the
    file, else ``folder``: pyarrow's and pandas' writers say no path), or None when it is not a full disk."""
    if not isinstance(exc, OSError) or exc.errno not in _FULL:
        return None
    path = exc.filename2 or exc.filename or folder
    problem = exc.strerror or "no space left on device"
    return NoSpace(
        f"{problem[:1].lower()}{problem[1:]} writing {path}: nothing was loaded and the landed file is untouched; "
        "free space there and run the same command again"
    )


#: The longest reason a ledger row, an alert or a report carries. An SNS message takes 256 KB, a DynamoDB item
#: 400 KB; a reason that quotes a 2 MB field or a 20,000-column header must still be recorded and sent. The
#: whole story stays where the reason points (the quarantine's rows or ``.error.json``).
MAX_ERROR_CHARS = 2000


def clipped(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` within ``limit`` characters: its start and its end (where the quarantine is named), and how much
    was cut between them."""
    if len(text) <= limit:
        return text
    tail = min(400, limit // 4)
    head = limit - tail - 40  # 40: room for the marker
    return f"{text[:head]} … [{len(text) - head - tail:,} characters cut] … {text[len(text) - tail :]}"


#: psycopg2's words for a connection that could not be made or was lost (its error classes do not tell them apart
#: from a deadlock or a cancelled statement: all are OperationalError).
_CONNECTING = re.compile(
    r"connection to server|could not connect|could not translate host name|server closed the connection|"
    r"terminating connection|connection refused|password authentication failed|no password supplied|"
    r"database \"[^\"]*\" does not exist|role \"[^\"]*\" does not exist|SSL|timeout expired",
    re.IGNORECASE,
)


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what led to it, as a traceback follows them: its ``__cause__``, else its ``__context__`` unless
    it was raised ``from None`` (an error that says what matters itself: the Totesys source's own line about its
    connection)."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


def database_error(exc: BaseException) -> str | None:
    """A database driver's error in ``exc``'s chain as one line, or None when there is none.

    As SQLAlchemy wraps it, it printed five lines: the wrapper's class, the driver's message and hint, the SQL and
    a documentation link. It is now the driver's message and hint on one line, after what failed: ``cannot connect
    to the warehouse: …`` for a connection, else the driver's error class (``DeadlockDetected: …``).
    """
    full = _disk_full(exc)
    if full is not None:
        return clipped(f"the warehouse's disk is full: {full}")
    sqlalchemy = sys.modules.get("sqlalchemy")  # loaded by whoever raised one; never imported for this
    if sqlalchemy is None:
        return None
    for seen in chain(exc):
        orig = getattr(seen, "orig", None)
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and orig is not None:
            text = " ".join(line.strip() for line in str(orig).splitlines() if line.strip())
            if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError) and (
                seen.connection_invalidated or _CONNECTING.search(text)
            ):
                return clipped(f"cannot connect to the warehouse: {text}")
            return clipped(f"{type(orig).__name__}: {text}")
    return None


#: PostgreSQL's SQLSTATE for "disk full" (class 53, insufficient resources).
DISK_FULL = "53100"


def _disk_full(exc: BaseException) -> str | None:
    """The warehouse's "disk full" error anywhere in ``exc``'s causes and contexts, as one line, or None.

    PostgreSQL stops when it cannot write its WAL: the COPY's DiskFull is followed by a failed rollback ("connection
    already closed") and by whatever tried to reach the warehouse next ("server closed the connection"), which
    were said instead of it.
    """
    pending, seen = [exc], set()
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        for candidate in (error, getattr(error, "orig", None)):
            if getattr(candidate, "pgcode", None) == DISK_FULL or type(candidate).__name__ == "DiskFull":
                return " ".join(line.strip() for line in str(candidate).splitlines() if line.strip())
        context = None if error.__suppress_context__ else error.__context__  # `from None`: as database_error
        pending.extend(e for e in (error.__cause__, context) if e is not None)
    return None


def described(exc: BaseException) -> str:
    """``exc`` as one line for a ledger row, an alert or a report: a database error as ``database_error`` says
    it, anything else its text (its type when it has none), at most ``MAX_ERROR_CHARS``."""
    return database_error(exc) or clipped(str(exc) or type(exc).__name__)


def shown(value: object, limit: int = 120) -> str:
    """A value quoted in a message (``repr``), at most ``limit`` characters, saying how long it was when cut."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}…{size}"


def failed_check(failure: Mapping[str, Any], limit: int = 120) -> str:
    """One failed check of a row, as the CLI, the demo and the quarantine file's ``reason`` say it: ``row 14, column
    hours: less_than_or_equal_to(24) (value '25')``; the value cut to ``limit`` characters (``shown``)."""
    value = shown(failure["value"], limit)
    return f"row {failure['row']}, column {failure['column']}: {failure['check']} (value {value})"


def rows_line(read: int, loaded: int, table: str | None, quarantined: int) -> str:
    """A run's rows, as ``sluice ingest``, each file's line of ``sluice backfill`` and a completed run's state
    message in the Prefect UI say them: ``1,036 read, 1,034 loaded into tm.daily_checkins, 2 quarantined``."""
    return f"{read:,} read, {loaded:,} loaded into {table or '-'}, {quarantined:,} quarantined"


_ROWS_LINE = re.compile(r"([\d,]+) read, ([\d,]+) loaded into (\S+), ([\d,]+) quarantined")


def rows_of(line: str | None) -> dict[str, Any] | None:
    """The counts a ``rows_line`` says (``rows_read``, ``rows_loaded``, ``table``, ``rows_quarantined``), or None
    for any other text: a deployment run's rows reach a backfill only as its completed state's message."""
    matched = _ROWS_LINE.fullmatch(line or "")
    if matched is None:
        return None
    read, loaded, table, quarantined = matched.groups()
    return {
        "rows_read": int(read.replace(",", "")),
        "rows_loaded": int(loaded.replace(",", "")),
        "table": None if table == "-" else table,
        "rows_quarantined": int(quarantined.replace(",", "")),
    }


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is one: ``1 row``, ``1,204 rows``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def listed(names: list[str], limit: int = 20) -> str:
    """Names joined by commas, the first ``limit`` of them and how many more."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} … ({len(names) - limit:,} more)"


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number that names none."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def rolled_back(what: str) -> str:
    """The line for a command that ``what`` ended before it finished: what it had not committed was rolled back."""
    return (
        f"{what}; what its run had not committed was rolled back (`sluice ledger` shows where it stopped). "
        "Run the same command again: nothing is loaded twice"
    )


def stopped_by(signum: int) -> str:
    """The line for a command stopped by ``signum`` (``kill``, a container's stop, a closed terminal) that it got
    itself: it died without a word (Prefect ends its run and then kills its own process with the signal), and
    ``--json`` printed nothing."""
    return rolled_back(f"stopped by {signal_name(signum)} before it finished")
