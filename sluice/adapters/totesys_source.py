"""The Totesys OLTP source as production sees it: where it is, and an engine on it.

``SLUICE_TOTESYS_SOURCE_URL`` (or its secret) points at the real OLTP; without it, with the embedded warehouse,
the source is a second database (``totesys``) of the embedded PostgreSQL, created empty on first use (the demo
and the tests seed it with ``sluice.fakes.totesys``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import sqlalchemy as sa

from sluice.adapters.warehouse import database_url, redact, secret_value, sqlalchemy_url
from sluice.errors import ConfigurationError, Transient
from sluice.settings import Settings, get_settings

SOURCE_DATABASE = "totesys"


def source_url(settings: Settings | None = None, override: str | None = None) -> str:
    """The OLTP: ``override``, else ``SLUICE_TOTESYS_SOURCE_URL``, else database ``totesys`` of the embedded server."""
    settings = settings or get_settings()
    if override:
        return override
    if settings.totesys_source_url is not None:
        return settings.totesys_source_url.get_secret_value()
    if settings.totesys_source_secret_arn:
        return secret_value(settings.totesys_source_secret_arn, "SLUICE_TOTESYS_SOURCE_SECRET_ARN")
    if settings.database_url is not None or settings.database_secret_arn:
        raise ConfigurationError(
            "SLUICE_TOTESYS_SOURCE_URL is not set: with an external warehouse, say where the Totesys OLTP is "
            "(SLUICE_TOTESYS_SOURCE_URL or SLUICE_TOTESYS_SOURCE_SECRET_ARN; the stack's TotesysSourceUrl)"
        )
    warehouse = sa.make_url(database_url(settings))
    _ensure_database(warehouse, SOURCE_DATABASE)
    return warehouse.set(database=SOURCE_DATABASE).render_as_string(hide_password=False)


def _ensure_database(server: sa.URL, name: str) -> None:
    """Create database ``name`` unless it exists. Two first commands at once (two demos) both found it missing
    and the second CREATE failed (a unique violation on pg_database): a session advisory lock serialises them."""
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    lock = {"key": f"sluice: create database {name}"}
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(hashtext(:key))"), lock)
        try:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:key))"), lock)
    engine.dispose()


class SourceUnreachable(ConnectionError, Transient):
    """The OLTP cannot be reached (refused, timed out, dropped): transient, so the extract task retries it."""


#: What to check when the OLTP cannot be reached, after the driver's reason.
CHECK_SOURCE = "is the OLTP running and reachable? check SLUICE_TOTESYS_SOURCE_URL (or --source-url)"


# libpq's messages for a refusal that no retry changes: the login or the database is wrong.
_PERMANENT = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "no password supplied",
)


def source_engine(url: str) -> sa.Engine:
    """An engine on the OLTP through psycopg2, whatever PostgreSQL URL it is given (``postgresql://``, what clients
    are given, or with another driver); rows arrive as UTF-8 whatever the source database's encoding."""
    try:
        parsed = sa.make_url(
            sqlalchemy_url(url, "the Totesys source URL", any_driver=True)
        )  # refuses mysql://
        # the extract COPYs through psycopg2's cursor, whichever PostgreSQL driver the URL names
        return sa.create_engine(
            parsed.set(drivername="postgresql+psycopg2"),
            poolclass=sa.pool.NullPool,
            connect_args={"connect_timeout": 10, "client_encoding": "utf8"},
        )
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"the Totesys source URL is not a valid database URL: {exc}") from None
    except (ModuleNotFoundError, sa.exc.NoSuchModuleError) as exc:
        raise ConfigurationError(
            f"the Totesys source URL names a driver that is not installed ({exc}); use postgresql://…"
        ) from None


@contextmanager
def readable_errors(url: str | sa.URL) -> Iterator[None]:
    """The OLTP's connection failures as one line naming the source (never its password): a refused login or a
    missing database is a ``ConfigurationError`` (not retried); anything else ``SourceUnreachable`` (retried)."""
    try:
        yield
    except (
        sa.exc.OperationalError,
        sa.exc.InterfaceError,
        psycopg2.OperationalError,
        psycopg2.InterfaceError,
    ) as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        where = (
            # the engine reads through psycopg2 whatever driver was written: name the source as users write it
            url.set(drivername="postgresql").render_as_string(hide_password=True)
            if isinstance(url, sa.URL)
            else redact(url)
        )
        if any(marker in detail for marker in _PERMANENT):
            raise ConfigurationError(f"the Totesys source {where} refused the connection: {detail}") from None
        raise SourceUnreachable(
            f"cannot connect to the Totesys source {where}: {detail} ({CHECK_SOURCE})"
        ) from None
