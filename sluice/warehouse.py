"""The warehouse: a SQLAlchemy engine on PostgreSQL (embedded pgserver by default) and COPY loading."""

from __future__ import annotations

import functools
import io
import json
import logging
import queue
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from psycopg2 import sql

from sluice.errors import ConfigurationError
from sluice.settings import Settings, get_settings

if TYPE_CHECKING:  # imported where used: `sluice ledger`, `db url` and `services` run without pandas
    import pandas as pd

logger = logging.getLogger(__name__)


def _start_embedded(pgdata: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``pgdata``; returns its SQLAlchemy URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice
        import pgserver  # the embedded group: only in a checkout, not in the image (Aurora)

        pgdata.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this process and is reused by the next one.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        uri = server.get_uri()
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)


@functools.lru_cache(maxsize=8)
def secret_value(arn: str) -> str:
    """A Secrets Manager secret's string (a plain URL, or JSON with a ``url`` key); cached per process."""
    import boto3  # AWS modules only when the warehouse URL is in Secrets Manager

    value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    if value.lstrip().startswith("{"):
        data = json.loads(value)
        if "url" not in data:
            raise ConfigurationError(f"secret {arn.rsplit(':', 1)[-1]} is JSON without a 'url' key")
        value = data["url"]
    return str(value)


def _sqlalchemy_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def database_url(settings: Settings | None = None) -> str:
    """The warehouse URL: ``SLUICE_DATABASE_URL``, else the Secrets Manager secret, else the embedded server."""
    settings = settings or get_settings()
    if settings.database_url is not None:
        return _sqlalchemy_url(settings.database_url.get_secret_value())
    if settings.database_secret_arn:
        return _sqlalchemy_url(secret_value(settings.database_secret_arn))
    return _start_embedded((settings.home / "pg").resolve())


_ENGINES: dict[str, sa.Engine] = {}


def _engine(url: str) -> sa.Engine:
    if url not in _ENGINES:
        _ENGINES[url] = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    return _ENGINES[url]


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
        return sa.make_url(url).render_as_string(hide_password=True)
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

    producer = threading.Thread(target=produce, name="sluice-copy-encoder", daemon=True)
    producer.start()
    total = 0
    try:
        with raw_connection(conn) as cursor:
            while (item := encoded.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                fmt, data, rows = item
                # One read of the whole payload: psycopg2 takes the GIL back for every read (8 KB by
                # default), and each hand-back waits on the encoder thread (GIL convoy).
                cursor.copy_expert(statements[fmt], io.BytesIO(data), size=max(len(data), 8192))
                total += rows
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            try:
                encoded.get_nowait()
            except queue.Empty:
                producer.join(0.05)
    return total


def ensure_schema(conn: sa.Connection, schema: str) -> None:
    conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


def embedded_pgdata(settings: Settings | None = None) -> Path | None:
    """Data folder of the embedded server, or None when an external database is configured."""
    settings = settings or get_settings()
    return None if settings.database_url is not None else (settings.home / "pg").resolve()
