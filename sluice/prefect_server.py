"""Entry point of the home's local Prefect server (``python -m sluice.prefect_server server start ...``).

It is ``prefect server start`` with two changes:

- **Every SQLite write transaction begins ``IMMEDIATE``.** Prefect begins most of them ``DEFERRED``; in WAL mode a
  deferred transaction that read before another connection committed cannot upgrade to a write
  (``SQLITE_BUSY_SNAPSHOT``, no busy wait), the API answers 503 and the client backs off 2, 4, 8 s: four concurrent
  ``ingest-file`` runs spent most of their time waiting. Immediate writers queue on SQLite's busy timeout instead.
- **A new home's database starts as a copy of a migrated empty one.** Prefect takes a new SQLite database through
  its ~110 migrations: 10 s of a new home's 15 s start on 2 cores. The first new home keeps a copy of its database
  as it is once migrated and its block types registered, before the server serves anything, in the user's cache
  (``$XDG_CACHE_HOME/sluice``, else ``~/.cache/sluice``), named by Prefect's version and migrations; later new
  homes start from that copy, and Prefect's own upgrade then has nothing to do. Another database
  (``PREFECT_SERVER_DATABASE_CONNECTION_URL``), an existing one, or a cache we cannot write: Prefect as it is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

SQLITE_URL = "sqlite+aiosqlite:///"


def _begin_writes_immediately() -> None:
    from prefect.server.database import configurations  # the server's modules: only in the server process

    config = getattr(configurations, "AioSqliteConfiguration", None)
    original = getattr(config, "begin_transaction", None)
    if config is None or original is None or getattr(original, "_sluice_immediate", False):
        return  # another Prefect version: run it unchanged

    @asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncGenerator[Any, None]:
        async with original(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction._sluice_immediate = True  # type: ignore[attr-defined]
    config.begin_transaction = begin_transaction


def template_path() -> Path | None:
    """The migrated empty database of the installed Prefect (named by its version and its migrations); None
    without a home folder to cache it in."""
    import prefect

    migrations = Path(prefect.__file__).parent / "server" / "database" / "_migrations" / "versions" / "sqlite"
    names = "\n".join(sorted(path.name for path in migrations.glob("*.py")))
    digest = hashlib.sha256(names.encode()).hexdigest()[:12]
    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no HOME and no passwd entry
        return None
    return cache / "sluice" / f"prefect-{prefect.__version__}-{digest}.db"


def _database() -> Path | None:
    """The server's SQLite database file; None for another database or an in-memory one."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    text = url.get_secret_value() if url is not None else ""
    if not text.startswith(SQLITE_URL) or ":memory:" in text:
        return None
    return Path(text.removeprefix(SQLITE_URL).split("?", 1)[0])


def _start_from_template() -> None:
    """A new database: copied from the template if there is one, else kept as a template once migrated."""
    database = _database()
    if database is None or database.exists():
        return
    template = template_path()
    if template is None:
        return
    if template.is_file():
        _copy_whole(template, database, shutil.copyfile)  # failed: Prefect migrates a new database, as before
        return
    _keep_after_migrating(database, template)


def _keep_after_migrating(database: Path, template: Path) -> None:
    """Copy ``database`` to ``template`` once Prefect has migrated it and registered its block types: in the
    server's start-up, before it serves anything."""
    from prefect.server.models import block_registration

    original = block_registration.run_block_auto_registration

    async def run_block_auto_registration(session: Any) -> None:
        await original(session=session)
        block_registration.run_block_auto_registration = original  # once
        # committed now, so that the copy holds the block types
        await session.commit()
        _copy_whole(database, template, _backup)  # failed: the next new home migrates, as before

    block_registration.run_block_auto_registration = run_block_auto_registration


def _backup(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the WAL's pages included), as one file."""
    with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(target)) as copy:
        live.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")  # no -wal file beside it (Prefect turns WAL on again)


def _copy_whole(source: Path, target: Path, copy: Callable[[Path, Path], object]) -> None:
    """``copy`` ``source`` to ``target``, whole or not at all (two new homes may write the template at once)."""
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        copy(source, partial)
        partial.replace(target)
    except (OSError, sqlite3.Error):
        partial.unlink(missing_ok=True)


def main() -> None:
    _begin_writes_immediately()
    _start_from_template()
    from prefect.cli import app  # after the patch above, so the server starts with it

    app()


if __name__ == "__main__":
    main()
