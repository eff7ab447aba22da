"""The warehouse: a SQLAlchemy engine on PostgreSQL (embedded pgserver by default), COPY loading and the upsert."""

from __future__ import annotations

import contextvars
import errno
import functools
import io
import json
import logging
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import sqlalchemy as sa
from psycopg2 import sql

from sluice.errors import ConfigurationError
from sluice.progress import checkpoint, tell
from sluice.services import (  # stop_postgres removes what pg_alias names
    clear_stale_postmaster_pid,
    pg_alias,
    running_postgres,
    stale_postmaster_pid,
    zombie_postmaster,
)
from sluice.settings import Settings, get_settings
from sluice.tables import name_of

if TYPE_CHECKING:  # imported where used: `sluice ledger`, `db url` and `services` run without pandas
    import pandas as pd

logger = logging.getLogger(__name__)

#: One thread of this process at a time looks at, starts or restarts the embedded PostgreSQL. pgserver is not
#: thread-safe: its start lock is a file lock ("Unable to release an unaquired lock" when two threads took it), and
#: a handle another thread is restarting has no postmaster info yet (a bare AssertionError from get_uri). A
#: backfill's threads all restarted a killed PostgreSQL at once: 70 of 200 files failed in seconds.
_START_LOCK = threading.RLock()


def _start_embedded(pgdata: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``pgdata``; returns its SQLAlchemy URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice
        try:
            import pgserver  # the embedded group: only in a checkout, not in the image (Aurora)
        except ModuleNotFoundError:
            raise ConfigurationError(
                "no warehouse configured: set SLUICE_DATABASE_URL or SLUICE_DATABASE_SECRET_ARN (the embedded "
                "PostgreSQL is only installed by ./run in a checkout, not in the image)"
            ) from None

        pgdata.mkdir(parents=True, exist_ok=True)
        if not os.access(pgdata, os.R_OK | os.W_OK | os.X_OK):
            # Another user's data folder (a home created by root): pgserver would fail on its first file and then
            # print a traceback from its exit handler. The CLI says this as one line (sluice.cli.output.filesystem).
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(pgdata))
        with _START_LOCK:
            return _start_locked(pgserver, pgdata)


def _start_locked(pgserver: Any, pgdata: Path) -> str:
    """``_start_embedded`` once it holds ``_START_LOCK``."""
    try:
        # cleanup_mode=None: the server outlives this process and is reused by the next one.
        plain = _plain_path(pgdata)
        _forget_if_dead(pgdata, plain)
        # Only when this process holds no live handle (every get_engine call comes through here): a
        # postmaster.pid whose pid was reused is then cleared, and a new home's start is told.
        if plain not in pgserver.PostgresServer._instances:
            if stale_postmaster_pid(pgdata) is not None:  # rare: checked again holding the start locks
                # pgserver's is a file lock: not for two threads of one process (a backfill's) at once
                with pgserver.PostgresServer._lock:
                    clear_stale_postmaster_pid(pgdata)
            if running_postgres(pgdata) is None:
                # a new home's first command: initdb, then the start (a terminal showed nothing meanwhile)
                tell("starting the embedded PostgreSQL (once)")
        server = _get_server(pgserver, pgdata, plain)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        raise ConfigurationError(_start_failure(pgdata)) from None
    uri = server.get_uri()
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)


#: How long a start waits for a killed postmaster's process to be reaped (PID 1 reaps orphans every ~2 s here)
_ZOMBIE_WAIT_SECONDS = 15.0


def _get_server(pgserver: Any, pgdata: Path, plain: Path) -> Any:
    """pgserver's handle on the server of ``pgdata`` (started if it is not running), through ``plain``, its alias
    when its path has a character a shell would split. A killed postmaster is a zombie until its parent (PID 1, for
    a server that outlives its command) reaps it, and PostgreSQL refuses to start while the pid in its socket's
    lock file exists ("lock file … already exists"): a backfill's runs failed in that window (seconds under load)
    instead of waiting for it."""
    deadline = time.monotonic() + _ZOMBIE_WAIT_SECONDS
    while True:
        try:
            if plain == pgdata:
                return pgserver.get_server(pgdata, cleanup_mode=None)
            # get_server would resolve the alias back to the real path
            known = pgserver.PostgresServer._instances.get(plain)
            return known or pgserver.PostgresServer(plain, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline or not zombie_postmaster(pgdata):
                raise
            pgserver.PostgresServer._instances.pop(plain, None)
            pgserver.PostgresServer._instances.pop(pgdata, None)
            time.sleep(0.5)


def _forget_if_dead(pgdata: Path, key: Path) -> None:
    """Drop pgserver's handle on a server that has died since this process started it (killed, crashed), so that
    it is started again: pgserver hands back its handle without looking, and every retry of a load in this process
    failed with "connection refused". Stopped by `sluice services stop` meanwhile: one readable error instead."""
    import pgserver
    import psutil

    # psutil only; its check treats a zombie postmaster as dead
    from sluice.services import postgres_stopped_since, running_postgres

    if key not in pgserver.PostgresServer._instances or running_postgres(pgdata) is not None:
        return
    if postgres_stopped_since(pgdata, psutil.Process().create_time()):
        raise ConfigurationError(
            f"the embedded PostgreSQL in {pgdata} was stopped (`sluice services stop`) while this command ran"
        )
    logger.info("the embedded PostgreSQL in %s stopped; starting it again", pgdata)
    del pgserver.PostgresServer._instances[key]


def _plain_path(pgdata: Path) -> Path:
    """``pgdata``, or a plain alias of it when its path has a space or another character a shell would split.

    pgserver 0.1.4 hands the socket folder (the data folder) to ``pg_ctl -o "-k <folder>"`` unquoted, and pg_ctl
    starts postgres through a shell, so a checkout in "~/My Projects" could not start its warehouse. The alias is a
    symbolic link in the temp folder named after a hash of the real path; it is made again by every start (a temp
    cleaner may remove it), and the data stays in ``pgdata``.
    """
    if shlex.quote(str(pgdata)) == str(pgdata):
        return pgdata
    alias = pg_alias(pgdata)
    if not (alias.is_symlink() and os.readlink(alias) == str(pgdata)):
        fresh = alias.with_name(f"{alias.name}.{os.getpid()}")
        fresh.unlink(missing_ok=True)
        fresh.symlink_to(pgdata, target_is_directory=True)
        fresh.replace(alias)  # atomic: a concurrent start sees the old link or the new one
    if os.name == "posix" and os.geteuid() == 0:
        # as root, pgserver runs postgres as its own user and opens the path's folders to it; here the real ones
        from pgserver.utils import ensure_prefix_permissions

        ensure_prefix_permissions(pgdata)
    return alias


def _start_failure(pgdata: Path) -> str:
    """One line on why the embedded PostgreSQL did not start: the last FATAL or PANIC line of its last attempt (else
    its last line), and where the log is. The last line alone is "database system is shut down", which says
    nothing (a full disk: the FATAL line before it says "No space left on device")."""
    log = pgdata / "log"
    try:
        lines = [
            line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
        ]
    except OSError:
        lines = []
    attempt = lines[max((i for i, line in enumerate(lines) if "starting PostgreSQL" in line), default=0) :]
    serious = [line for line in attempt if " FATAL: " in line or " PANIC: " in line]
    reason = (serious or attempt)[-1].strip() if attempt else "no log written"
    return f"the embedded PostgreSQL in {pgdata} did not start: {reason} (log: {log})"


@functools.lru_cache(maxsize=8)
def secret_value(arn: str, variable: str = "SLUICE_DATABASE_SECRET_ARN") -> str:
    """A Secrets Manager secret's string (a plain URL, or JSON with a ``url`` key); cached per process.

    No credentials, access denied or no such secret is one line naming the secret, ``variable`` and the region (it
    was botocore's "Unable to locate credentials", or a traceback from ``sluice db url``)."""
    import boto3  # AWS modules only when the warehouse URL is in Secrets Manager
    from botocore.exceptions import BotoCoreError, ClientError

    from sluice.adapters.storage import access_denied, no_credentials

    client = boto3.client("secretsmanager")
    where = f"secret {arn.rsplit(':', 1)[-1]} ({variable}, in {client.meta.region_name})"
    try:
        value = client.get_secret_value(SecretId=arn)["SecretString"]
    except (BotoCoreError, ClientError) as exc:
        if (unsigned := no_credentials(where, exc, "read it")) is not None:
            raise unsigned from None
        if (
            isinstance(exc, ClientError)
            and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
        ):
            raise ConfigurationError(
                f"{where}: no such secret there (is AWS_REGION the stack's region? is {variable} its output?)"
            ) from None
        if access_denied(exc):
            raise ConfigurationError(
                f"{where}: access denied reading it: these credentials need secretsmanager:GetSecretValue on it "
                "(on ECS, the stack's task role reads the warehouse's and the Totesys source's secrets only)"
            ) from None
        raise
    if value.lstrip().startswith("{"):
        data = json.loads(value)
        if "url" not in data:
            raise ConfigurationError(f"secret {arn.rsplit(':', 1)[-1]} is JSON without a 'url' key")
        value = data["url"]
    return str(value)


#: The URL schemes of a warehouse (or Totesys source) URL: PostgreSQL, through psycopg2 (the loads COPY through
#: its cursor).
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg2://")


def sqlalchemy_url(url: str, what: str = "the database URL", *, any_driver: bool = False) -> str:
    """``url`` with psycopg2 as its driver when it names none; a password holding a raw ``@`` is refused, and so
    is a URL of another database (``mysql://``…), in one line that says ``what`` it is and shows it without its
    password (SQLAlchemy's own error was the driver it could not import: "No module named 'MySQLdb'").

    A PostgreSQL URL naming another driver (``postgresql+asyncpg://``, ``+psycopg``, ``+pg8000``) is refused too
    unless ``any_driver`` (the Totesys source, whose engine swaps in psycopg2 itself): the warehouse's loads COPY
    through psycopg2's cursor, and with asyncpg the first query failed with SQLAlchemy's "greenlet_spawn has not
    been called" traceback (`sluice db url` printed the URL and exit 0)."""
    _password_encoded(url)
    _postgresql(url, what, any_driver)
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _postgresql(url: str, what: str, any_driver: bool) -> None:
    try:
        parsed = sa.make_url(url)
        backend = parsed.get_backend_name()
    except (sa.exc.ArgumentError, ValueError):
        return  # not parseable: the caller's own message (which never quotes the URL)
    forms = f"postgresql://user:password@host/db (or {', '.join(POSTGRESQL_SCHEMES[1:])})"
    if backend not in {"postgresql", "postgres"}:
        raise ConfigurationError(f"{what} must be PostgreSQL: {forms}, not {redact(url)}")
    driver = parsed.drivername.partition("+")[2]
    if driver and driver != "psycopg2" and not any_driver:
        raise ConfigurationError(
            f"{what} names the driver {driver}, but Sluice loads through psycopg2: write {forms}, "
            f"not {redact(url)}"
        )


def _password_encoded(url: str) -> None:
    """A raw ``@`` in the password ends it there: the rest becomes the host, which every connection error, the
    ledger, the alerts and ``redact`` would then show. One message instead, that shows neither."""
    try:
        host = sa.make_url(url).host
    except (sa.exc.ArgumentError, ValueError):
        return  # not parseable: the caller's own message (which never quotes the URL)
    if host and "@" in host:
        raise ConfigurationError(
            "the database URL's password holds an '@' that is not percent-encoded: write it as %40 "
            "(postgresql://user:pa%40ss@host/db); its host is not shown, it would show part of the password"
        )


def database_url(settings: Settings | None = None) -> str:
    """The warehouse URL: ``SLUICE_DATABASE_URL``, else the Secrets Manager secret, else the embedded server."""
    settings = settings or get_settings()
    if settings.database_url is not None:
        return sqlalchemy_url(settings.database_url.get_secret_value(), "SLUICE_DATABASE_URL (the warehouse)")
    if settings.database_secret_arn:
        where = f"the URL in secret {settings.database_secret_arn.rsplit(':', 1)[-1]} (the warehouse)"
        return sqlalchemy_url(secret_value(settings.database_secret_arn), where)
    return _start_embedded((settings.home / "pg").resolve())


_ENGINES: dict[str, sa.Engine] = {}
#: The lineage column a load stamps with its transaction's time (``sluice.tables.core``)
LOADED_AT = "_loaded_at"
#: Warehouse connections one ingest run holds at once: its liveness lock (all the run long), its load's transaction,
#: and a ledger write made while that transaction is open (each stage of the fused pass is recorded as it starts).
CONNECTIONS_PER_RUN = 3
#: Connections kept for this process's own queries beside its runs (a backfill's registry query and skips).
_SPARE = 2
#: Concurrent runs this process's pools are sized for (``serve_runs``); one for a command, the CLI's default.
_runs = 1


def _pool_size() -> int:
    return max(5, CONNECTIONS_PER_RUN * _runs + _SPARE)


def _engine(url: str) -> sa.Engine:
    engine = _ENGINES.get(url)
    if engine is None or engine.pool.size() < _pool_size():  # type: ignore[attr-defined] (QueuePool)
        if engine is not None:
            # A smaller pool made before ``serve_runs``: its idle connections closed now (they count against the
            # server's max_connections); one checked out of it still works, and is closed when it is returned.
            engine.dispose()
        engine = _ENGINES[url] = sa.create_engine(
            url, pool_pre_ping=True, pool_size=_pool_size(), max_overflow=5
        )
    return engine


def serve_runs(runs: int, settings: Settings | None = None) -> int:
    """Size this process's warehouse pool for ``runs`` ingest runs at once; returns how many the warehouse can take.

    A pool of 5 (+5) served a backfill at ``--concurrency 8`` (24 connections at once): a run waited 30 s for a
    connection and failed with "QueuePool limit of size 5 overflow 5 reached". The pool now holds
    ``CONNECTIONS_PER_RUN`` per run. The server's own limit (``max_connections``, less the connections other
    clients hold and a margin) caps the runs: more would fail with "too many clients".
    """
    global _runs
    engine = get_engine(settings)
    with engine.connect() as conn:
        limit = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
        reserved = int(conn.execute(sa.text("SHOW superuser_reserved_connections")).scalar_one())
        used = int(conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity")).scalar_one())
    free = limit - reserved - used - _SPARE - 5  # 5: room for the user's other clients
    runs = max(1, min(runs, free // CONNECTIONS_PER_RUN))
    _runs = max(_runs, runs)
    get_engine(settings)  # the pool, resized if it was smaller
    return runs


def get_engine(settings: Settings | None = None) -> sa.Engine:
    """A pooled engine on the warehouse (one per URL per process)."""
    url = database_url(settings)
    try:
        return _engine(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"SLUICE_DATABASE_URL is not a valid SQLAlchemy URL: {exc}") from None


def dispose_engines() -> None:
    """Close every pooled connection (tests, forks)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        parsed = sa.make_url(url)
        if parsed.host and "@" in parsed.host:  # the rest of a password with a raw '@' (see sqlalchemy_url)
            parsed = parsed.set(host="…")
        # an empty password is none to hide: `postgres:***@` made the embedded server's URL look like it had one
        return parsed.render_as_string(hide_password=parsed.password != "")
    except Exception:
        return "<unparseable url>"


@contextmanager
def raw_connection(conn: sa.Connection) -> Iterator[Any]:
    """The DBAPI (psycopg2) cursor inside a SQLAlchemy connection's transaction."""
    dbapi = conn.connection.dbapi_connection
    cursor = dbapi.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


def qualified(table: str) -> sql.Composed:
    """``schema.table`` as a quoted identifier."""
    schema, _, name = table.rpartition(".")
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def frame_to_csv(frame: pd.DataFrame) -> bytes:
    """Encode a frame as headerless CSV for COPY (pyarrow's C++ writer: nulls are empty, strings quoted)."""
    # pandas and pyarrow only when frames are loaded: `sluice ledger` and `sluice db url` import this module
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    zoned = [c for c in frame.columns if isinstance(frame[c].dtype, pd.DatetimeTZDtype)]
    if zoned:  # written as naive UTC (10x faster to format); copy_frames sets the session zone to UTC
        frame = frame.assign(**{c: frame[c].dt.tz_convert("UTC").dt.tz_localize(None) for c in zoned})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
    return buffer.getvalue()


#: Set in a thread while it runs a COPY through ``run_copy``.
_copying = threading.local()


def run_copy(cursor: Any, statement: str, file: Any, size: int = 8192) -> None:
    """``cursor.copy_expert(statement, file, size)``, without the bare exception text psycopg2 prints when the
    server ends the connection mid-COPY (a stop, a restart, a failover).

    psycopg2 (2.9) raises for each failed result it reads after the COPY; from the second one on, its C code
    calls into Python with an exception already set, and Python's error printing (``sys.excepthook``) writes
    both exceptions to stderr, without a traceback, above the command's own error line. ``copy_expert`` raises
    the first as it should, and that one is what the command reports; the printed copy goes to the debug log."""
    _quiet_copy_prints()
    _copying.active = True
    try:
        cursor.copy_expert(statement, file, size=size)
    finally:
        _copying.active = False


@functools.cache
def _quiet_copy_prints() -> None:
    printing = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if getattr(_copying, "active", False):
            logger.debug("psycopg2 printed an error during a COPY (raised as well): %r", value)
            return
        printing(kind, value, tb)

    sys.excepthook = excepthook


def copy_frames(
    conn: sa.Connection,
    table: str,
    columns: list[str],
    frames: Iterable[pd.DataFrame],
    *,
    binary: bool = True,
) -> int:
    """COPY each frame into ``table`` on ``conn``'s open transaction; returns rows copied.

    Chunks go in PostgreSQL's binary format (``sluice.pgbinary``: the server skips parsing text) when every
    column's type has an encoder, else as CSV: values quoted, an unquoted empty field is NULL, so empty
    strings and NULLs stay distinct. A producer thread encodes the next chunk while PostgreSQL ingests the
    current one (two cores); at most two encoded chunks wait, so memory stays bounded by the chunk size.
    """
    from sluice import pgbinary  # pyarrow: see frame_to_csv

    target = qualified(table)
    column_list = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    with raw_connection(conn) as cursor:
        cursor.execute("SET LOCAL TIME ZONE 'UTC'")  # zoned timestamps are encoded as naive UTC
        types = (
            pgbinary.column_types(cursor, target.as_string(cursor.connection), columns) if binary else None
        )
        statements = {
            fmt: sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT {})")
            .format(target, column_list, sql.SQL(fmt))
            .as_string(cursor.connection)
            for fmt in ("csv", "binary")
        }
    encoded: queue.Queue[tuple[str, bytes, int] | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def encode(frame: pd.DataFrame) -> tuple[str, bytes, int]:
        payload = pgbinary.encode(frame, types) if types is not None else None
        if payload is not None:
            return "binary", payload, len(frame)
        return "csv", frame_to_csv(frame), len(frame)

    def produce() -> None:
        try:
            for frame in frames:
                if stop.is_set():
                    return
                if not frame.empty:
                    encoded.put(encode(frame[columns]))
            encoded.put(None)
        except BaseException as exc:  # handed to the consumer, re-raised there
            encoded.put(exc)

    # In the caller's context: the records of the read, transform and validate it drives (a column a drift policy
    # ignores) belong to the caller's run (its logs in the UI, its ids in JSON log lines).
    context = contextvars.copy_context()
    producer = threading.Thread(target=context.run, args=(produce,), name="sluice-copy-encoder", daemon=True)
    producer.start()
    total = 0
    try:
        with raw_connection(conn) as cursor:
            while (item := encoded.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                fmt, data, rows = item
                checkpoint()  # a run cancelled meanwhile stops here, not after the queued chunks
                # One read of the whole payload: psycopg2 takes the GIL back for every read (8 KB by
                # default), and each hand-back waits on the encoder thread (GIL convoy).
                run_copy(cursor, statements[fmt], io.BytesIO(data), size=max(len(data), 8192))
                total += rows
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            try:
                encoded.get_nowait()
            except queue.Empty:
                producer.join(0.05)
    return total


#: How ``upsert`` moves the staged rows into the target (see its docstring).
OnConflict = Literal["update_changed", "new_versions", "last_row_wins", "replace"]


class Upserted(NamedTuple):
    copied: int  # rows COPYed into the staging table
    written: int  # rows the INSERT inserted or updated


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    frames: Iterable[pd.DataFrame],
    *,
    keys: Sequence[str] = (),
    on_conflict: OnConflict,
    columns: Sequence[str] | None = None,
    latest: str = "_source_row",
) -> Upserted:
    """COPY ``frames`` (binary where every type has an encoder) into an ON COMMIT DROP temp table shaped like
    ``table``, then move them in with one ``INSERT … SELECT`` on ``conn``'s open transaction:

    - ``update_changed``: new keys inserted; a row whose other columns differ is updated
      (``… WHERE (old) IS DISTINCT FROM (new)``); others untouched.
    - ``new_versions``: rows whose keys are already there are skipped (``DO NOTHING``): facts' versions.
    - ``last_row_wins``: for each key the staged row with the greatest ``latest`` (the file's last) replaces
      the row (ON CONFLICT cannot touch a row twice, so the others are dropped first).
    - ``replace``: the target is emptied (``TRUNCATE``) and takes every staged row.

    Without ``keys`` every staged row is inserted. ``columns`` defaults to the table's columns that have
    neither an identity nor a server default. The staged rows must not repeat a key (except ``last_row_wins``).
    """
    names = list(
        columns or [c.name for c in table.columns if c.identity is None and c.server_default is None]
    )
    target = qualified(name_of(table))
    alias = sql.Identifier(table.name)
    staging_name = f"_sluice_staging_{uuid.uuid4().hex[:12]}"
    staging = sql.Identifier(staging_name)

    def listed(items: Iterable[str], template: str = "{}") -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL(template).format(sql.Identifier(c)) for c in items)

    with raw_connection(conn) as cursor:
        if on_conflict == "replace":
            cursor.execute(sql.SQL("TRUNCATE {}").format(target))
        cursor.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                staging, listed(names), target
            )
        )
    copied = copy_frames(conn, staging_name, names, frames)
    others = [c for c in names if c not in keys]
    select = sql.SQL("SELECT {} FROM {}").format(listed(names), staging)
    conflict = sql.SQL("")
    # an updated row is loaded now too: _loaded_at kept the first load's time, beside the new _ingestion_id
    stamp = (
        sql.SQL(", {} = now()").format(sql.Identifier(LOADED_AT))
        if LOADED_AT in table.columns and LOADED_AT not in names
        else sql.SQL("")
    )
    if keys and on_conflict != "replace":
        key_list = listed(keys)
        if on_conflict == "new_versions" or not others:
            select = sql.SQL("{} ORDER BY {}").format(select, key_list)
            conflict = sql.SQL("ON CONFLICT ({}) DO NOTHING").format(key_list)
        elif on_conflict == "last_row_wins":
            select = sql.SQL("SELECT DISTINCT ON ({}) {} FROM {} ORDER BY {}, {} DESC").format(
                key_list, listed(names), staging, key_list, sql.Identifier(latest)
            )
            conflict = sql.SQL("ON CONFLICT ({}) DO UPDATE SET {}{}").format(
                key_list, listed(others, "{0} = EXCLUDED.{0}"), stamp
            )
        else:
            changed = sql.SQL("({}) IS DISTINCT FROM ({})").format(
                sql.SQL(", ").join(sql.SQL("{}.{}").format(alias, sql.Identifier(c)) for c in others),
                listed(others, "EXCLUDED.{}"),
            )
            conflict = sql.SQL("ON CONFLICT ({}) DO UPDATE SET {}{} WHERE {}").format(
                key_list, listed(others, "{0} = EXCLUDED.{0}"), stamp, changed
            )
    insert = sql.SQL("INSERT INTO {} AS {} ({}) {} {}").format(target, alias, listed(names), select, conflict)
    with raw_connection(conn) as cursor:
        cursor.execute(insert)
        return Upserted(copied, cursor.rowcount)


def embedded_pgdata(settings: Settings | None = None) -> Path | None:
    """Data folder of the embedded server, or None when an external database is configured."""
    settings = settings or get_settings()
    return None if settings.database_url is not None else (settings.home / "pg").resolve()
