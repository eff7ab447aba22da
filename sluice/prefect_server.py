"""Entry point of the home's local Prefect server (``python -m sluice.prefect_server server start ...``).

It is ``prefect server start`` with one change for SQLite under concurrent runs: every write transaction
begins ``IMMEDIATE``. Prefect begins most of them ``DEFERRED``; in WAL mode a deferred transaction that read
before another connection committed cannot upgrade to a write (``SQLITE_BUSY_SNAPSHOT``, no busy wait), the
API answers 503 and the client backs off 2, 4, 8 s: four concurrent ``ingest-file`` runs spent most of their
time waiting. Beginning immediately makes writers queue on SQLite's busy timeout instead (milliseconds).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any


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


def main() -> None:
    _begin_writes_immediately()
    from prefect.cli import app  # after the patch above, so the server starts with it

    app()


if __name__ == "__main__":
    main()
