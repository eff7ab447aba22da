"""The Totesys OLTP source as production sees it: where it is, and an engine on it.

``SLUICE_TOTESYS_SOURCE_URL`` (or its secret) points at the real OLTP; without it, with the embedded warehouse,
the source is a second database (``totesys``) of the embedded PostgreSQL, created empty on first use (the demo
and the tests seed it with ``sluice.fakes.totesys``).
"""

from __future__ import annotations

import sqlalchemy as sa

from sluice.adapters.warehouse import database_url, secret_value
from sluice.errors import ConfigurationError
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
        return secret_value(settings.totesys_source_secret_arn)
    if settings.database_url is not None or settings.database_secret_arn:
        raise ConfigurationError(
            "SLUICE_TOTESYS_SOURCE_URL is not set: with an external warehouse, say where the Totesys OLTP is "
            "(SLUICE_TOTESYS_SOURCE_URL or SLUICE_TOTESYS_SOURCE_SECRET_ARN; the stack's TotesysSourceUrl)"
        )
    warehouse = sa.make_url(database_url(settings))
    _ensure_database(warehouse, SOURCE_DATABASE)
    return warehouse.set(database=SOURCE_DATABASE).render_as_string(hide_password=False)


def _ensure_database(server: sa.URL, name: str) -> None:
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def source_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 10})
