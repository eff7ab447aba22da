"""Entry point of the home's local Prefect server (``python -m sluice.prefect_server server start ...``).

It is ``prefect server start`` with these changes:

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
- **Block types are registered once per installation, not checked at every start.** Prefect's check (is the
  registry unchanged since the last start?) imports every installed collection to hash its blocks: prefect-aws and
  boto3 & co., 0.9 s of a 4.9 s start on 2 cores, for a home's every first command after `services stop`. A
  marker beside the database names the installation (Prefect's and its collections' versions, from their
  metadata) whose block types it holds; while it matches, the start skips the check. A new or upgraded
  installation registers them as Prefect does and writes the marker.
- **It stops when its home's Prefect folder is removed** (``rm -rf .sluice`` to start again): no state file is left
  for ``services stop`` to find it by, and it would keep the UI's port, sending the next home's UI to another one.
  A thread checks the folder (``PREFECT_HOME``) every ``WATCH_SECONDS``; gone or made anew, it sends the server's
  process group the ``SIGTERM`` of ``services stop``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

from sluice.files import identity, replace_whole, write_whole

SQLITE_URL = "sqlite+aiosqlite:///"
#: How often the server checks that its home's Prefect folder is still there.
WATCH_SECONDS = 5.0


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


def template_path(key: str) -> Path | None:
    """The migrated empty database of the installed Prefect (named by its version, its migrations and ``key``,
    the installation of its block types: ``blocks_key``); None without a home folder to cache it in."""
    import prefect

    migrations = Path(prefect.__file__).parent / "server" / "database" / "_migrations" / "versions" / "sqlite"
    names = "\n".join(sorted(path.name for path in migrations.glob("*.py")))
    # with the block types' installation: a collection's upgrade (new block schemas) makes a new template
    digest = hashlib.sha256(f"{names}\n{key}".encode()).hexdigest()[:12]
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


def blocks_key() -> str:
    """The installation whose block types a database holds: Prefect's version and its collections' (prefect-aws,
    prefect-email, ...), read from their metadata, nothing imported."""
    from importlib import metadata

    import prefect

    collections = metadata.entry_points(group="prefect.collections")
    versions = sorted({(ep.dist.name, ep.dist.version) for ep in collections if ep.dist is not None})
    return hashlib.sha256(repr((prefect.__version__, versions)).encode()).hexdigest()[:12]


def blocks_marker(database: Path) -> Path:
    return database.with_name(f"{database.name}.sluice-blocks")


def _start_from_template(database: Path | None, key: str) -> bool:
    """A new database: copied from the template if there is one (True: its block types are this installation's),
    else kept as a template once migrated."""
    if database is None or database.exists():
        return False
    # a database removed by hand: its marker is not its successor's
    blocks_marker(database).unlink(missing_ok=True)
    template = template_path(key)
    if template is None:
        return False
    if template.is_file():
        # failed: Prefect migrates a new database, as before
        return _copy_whole(template, database, shutil.copyfile)
    _after_registering(lambda: _copy_whole(database, template, _backup))  # failed: the next new home migrates
    return False


def _after_registering(then: Callable[[], object]) -> None:
    """Call ``then`` once Prefect has registered the block types, committed: in the server's start-up, before it
    serves anything."""
    from prefect.server.models import block_registration

    original = block_registration.run_block_auto_registration

    async def run_block_auto_registration(session: Any) -> None:
        await original(session=session)
        await session.commit()
        then()

    block_registration.run_block_auto_registration = run_block_auto_registration


def _registering_blocks(database: Path | None, key: str, copied: bool) -> Any:
    """Prefect's settings for this start: block types registered (and the marker written) unless the database
    already holds this installation's, which its marker says."""
    from prefect.plugins import load_prefect_collections
    from prefect.settings import (
        PREFECT_API_BLOCKS_REGISTER_ON_START,
        PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION,
        temporary_settings,
    )

    if database is None:
        return contextlib.nullcontext()  # another database: Prefect as it is
    marker = blocks_marker(database)
    if copied:
        with contextlib.suppress(OSError):
            write_whole(marker, key)
    try:
        registered = marker.read_text(encoding="utf-8") == key
    except OSError:
        registered = False
    if registered:
        updates = {
            PREFECT_API_BLOCKS_REGISTER_ON_START: False,
            PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION: False,
        }
        return temporary_settings(updates=updates)

    def remember() -> None:
        with contextlib.suppress(OSError):  # a home we cannot write: checked at every start, as before
            write_whole(marker, key)

    _after_registering(remember)
    # As Prefect's own check does: the installed collections imported, so that their block types register too.
    # Its check then stays off: it would skip the registration after a start that registered without the marker.
    load_prefect_collections()
    return temporary_settings(updates={PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION: False})


def _backup(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the WAL's pages included), as one file."""
    with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(target)) as copy:
        live.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")  # no -wal file beside it (Prefect turns WAL on again)


def _copy_whole(source: Path, target: Path, copy: Callable[[Path, Path], object]) -> bool:
    """``copy`` ``source`` to ``target``, whole or not at all (two new homes may write the template at once)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        replace_whole(target, lambda partial: copy(source, partial))
    except (OSError, sqlite3.Error):
        return False
    return True


def _stop_when_removed(folder: str | None) -> None:
    """Watch ``folder`` (the home's Prefect folder) from a daemon thread: removed, or removed and made anew, the
    server's process group gets ``SIGTERM`` (uvicorn shuts down as on ``services stop``)."""
    if not folder or (first := identity(folder)) is None:
        return  # not started by `sluice.services` (no PREFECT_HOME): nothing to watch
    path = folder

    def watch() -> None:
        while identity(path) == first:
            time.sleep(WATCH_SECONDS)
        # the group services._start made (start_new_session), which stop() signals too
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGTERM)
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sluice-home-watch", daemon=True).start()


def main() -> None:
    _stop_when_removed(os.environ.get("PREFECT_HOME"))
    _begin_writes_immediately()
    database, key = _database(), blocks_key()
    copied = _start_from_template(database, key)
    with _registering_blocks(database, key, copied):
        from prefect.cli import app  # after the patches above, so the server starts with them

        app()


if __name__ == "__main__":
    main()
