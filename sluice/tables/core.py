"""The one MetaData, the lineage columns, and the one way to create what is missing (``ensure``).

Every warehouse table Sluice owns is declared in this package (``sluice/tables/<pipeline>.py``, plus
``ledger.py`` for Sluice's own bookkeeping). ``ensure`` is the only DDL path: under one transaction-scoped
advisory lock it creates the schemas and tables that are missing and applies the idempotent migrations below.
Only SQLAlchemy here: the package sits below the rest of the engine (import-linter's layers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa

logger = logging.getLogger(__name__)

#: One MetaData for every warehouse table Sluice owns (targets and its own bookkeeping).
metadata = sa.MetaData()

LINEAGE_COLUMNS = ("_ingestion_id", "_source_row")

#: The DDL lock every ``ensure`` takes: concurrent runs creating the same schema or table (``CREATE SCHEMA IF
#: NOT EXISTS`` races on the catalogue's unique index) wait for each other instead of failing.
DDL_LOCK = "sluice.ddl"

#: Columns once named differently by Sluice: (schema.table, old name, name its users query). Renamed in place.
RENAMED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("warehouse.dim_counterparty", "counterparty_legal_address_line_2", "counterparty_legal_address_line2"),
)

#: Per-row lineage that Sluice 0.1 required (now in ``sluice.file_loads``): kept, no longer required.
OLD_LINEAGE = ("_source_uri", "_source_sha256")


def lineage_columns() -> list[sa.Column]:
    """Columns every loaded row carries: which ingestion and which record of its file.

    The file itself (URI, content hash, row count) is one row of ``sluice.file_loads`` with the same
    ``ingestion_id``: a join away, instead of ~130 bytes repeated on every row (a third of COPY time).
    """
    return [
        sa.Column(
            "_ingestion_id",
            sa.Uuid,
            nullable=False,
            comment="Run ledger ingestion id = sluice.file_loads.ingestion_id",
        ),
        sa.Column("_source_row", sa.BigInteger, nullable=False, comment="1-based record number in the file"),
        sa.Column("_loaded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]


def name_of(table: sa.Table) -> str:
    """``schema.name`` (``public`` when the table has no schema)."""
    return f"{table.schema or 'public'}.{table.name}"


def quoted(conn: sa.Connection, table: sa.Table) -> str:
    """The table's schema-qualified name, quoted as PostgreSQL needs it."""
    prepare = conn.dialect.identifier_preparer
    return f"{prepare.quote_identifier(table.schema or 'public')}.{prepare.quote_identifier(table.name)}"


def exists(conn: sa.Connection, table: sa.Table) -> bool:
    """True when the table exists in the warehouse."""
    return bool(
        conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": quoted(conn, table)}).scalar()
    )


def ensure(bind: sa.Engine | sa.Connection, *tables: sa.Table, lock: str | None = DDL_LOCK) -> list[str]:
    """Create the schemas and tables that are missing, then migrate old shapes in place; idempotent.

    ``bind`` is an engine (its own transaction) or a connection (its open transaction). The lock is
    transaction-scoped (``lock=None`` when the caller already holds it). Returns the migrations applied.
    """
    if isinstance(bind, sa.Engine):
        with bind.begin() as conn:
            return ensure(conn, *tables, lock=lock)
    conn = bind
    if _settled(conn, tables):
        return []
    if lock:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": lock})
    prepare = conn.dialect.identifier_preparer
    for schema in dict.fromkeys(t.schema or "public" for t in tables):
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {prepare.quote_identifier(schema)}"))
    done = _rename_columns(conn, tables)
    metadata.create_all(conn, tables=list(tables))
    done += _relax_old_lineage(conn, tables)
    return done


def _settled(conn: sa.Connection, tables: Iterable[sa.Table]) -> bool:
    """True when every table exists and no migration applies: one catalogue read, no lock, no DDL.

    Every run ensures its tables (the bookkeeping, its targets), and they are there on every run but the first:
    the lock, one ``CREATE SCHEMA IF NOT EXISTS`` per schema and an ``information_schema`` query per table and
    migration cost a warm 10-row ingest about 20 ms of its CPU. Anything missing or old takes the full path.
    """
    tables = list(tables)
    found = conn.execute(
        sa.text(
            "SELECT n.nspname || '.' || c.relname, a.attname, a.attnotnull FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(:names)"
        ),
        {"names": [name_of(t) for t in tables]},
    )
    columns: dict[str, dict[str, bool]] = {}
    for table, column, required in found:
        columns.setdefault(table, {})[column] = required
    for table in tables:
        name = name_of(table)
        present = columns.get(name)
        if present is None:
            return False
        if any(n == name and old in present and new not in present for n, old, new in RENAMED_COLUMNS):
            return False
        if "_ingestion_id" in table.c and any(present.get(c) for c in OLD_LINEAGE):
            return False
    return True


def _columns(
    conn: sa.Connection, table: sa.Table, names: Iterable[str], *, required: bool = False
) -> set[str]:
    query = (
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = :s AND table_name = :t AND column_name IN :names"
    )
    if required:
        query += " AND is_nullable = 'NO'"
    statement = sa.text(query).bindparams(sa.bindparam("names", expanding=True))
    found = conn.execute(statement, {"s": table.schema or "public", "t": table.name, "names": list(names)})
    return set(found.scalars())


def _rename_columns(conn: sa.Connection, tables: Iterable[sa.Table]) -> list[str]:
    """``ALTER TABLE … RENAME COLUMN`` for each old name still present (and its new name absent): data stays."""
    done: list[str] = []
    prepare = conn.dialect.identifier_preparer
    for table in tables:
        for name, old, new in RENAMED_COLUMNS:
            if name != name_of(table):
                continue
            present = _columns(conn, table, (old, new))
            if old in present and new not in present:
                conn.execute(
                    sa.text(
                        f"ALTER TABLE {quoted(conn, table)} RENAME COLUMN "
                        f"{prepare.quote_identifier(old)} TO {prepare.quote_identifier(new)}"
                    )
                )
                logger.info("%s: column %s renamed to %s", name, old, new)
                done.append(f"{table.name}.{old} → {new}")
    return done


def _relax_old_lineage(conn: sa.Connection, tables: Iterable[sa.Table]) -> list[str]:
    """Tables made by Sluice 0.1 carry per-row ``_source_uri``/``_source_sha256`` (now in file_loads): keep the
    old values, stop requiring new ones."""
    done: list[str] = []
    prepare = conn.dialect.identifier_preparer
    for table in tables:
        if "_ingestion_id" not in table.c:  # only loaded datasets ever had them
            continue
        for column in sorted(_columns(conn, table, OLD_LINEAGE, required=True)):
            conn.execute(
                sa.text(
                    f"ALTER TABLE {quoted(conn, table)} ALTER COLUMN {prepare.quote_identifier(column)} "
                    "DROP NOT NULL"
                )
            )
            done.append(f"{table.name}.{column} nullable")
    return done
