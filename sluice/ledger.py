"""The run ledger: every state of every run, written as it happens (outside the load's transaction).

Backends share one small interface; PostgreSQL (in the warehouse) is the default. Rows are keyed by
(ingestion id, state): a state is written ``running`` when it starts and updated to ``success``,
``fail`` or ``skipped`` when it ends, so the history of a run is its rows in order.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sluice import tables
from sluice.adapters.warehouse import get_engine
from sluice.errors import clipped
from sluice.ledger_entry import CANCELLED, INTERRUPTED, TERMINATED
from sluice.ledger_entry import STATES as STATES
from sluice.ledger_entry import Ledger as Ledger
from sluice.ledger_entry import LedgerEntry as LedgerEntry
from sluice.settings import Settings, get_settings
from sluice.tables.ledger import BOOKKEEPING
from sluice.tables.ledger import file_loads as file_loads
from sluice.tables.ledger import run_ledger as run_ledger

logger = logging.getLogger(__name__)


def close_entry(ledger: Ledger, counts: dict[str, Any], entry: LedgerEntry) -> None:
    """Stamp, record and log a state's end; carry its counts to the next state of the run."""
    entry.finished_at = datetime.now(UTC)
    for key in ("rows_read", "rows_loaded", "rows_quarantined", "quarantine_uri"):
        if getattr(entry, key) is not None:
            counts[key] = getattr(entry, key)
    ledger.record(entry)
    logger.log(
        logging.WARNING if entry.status == "fail" else logging.INFO,
        "%s",
        state_line(entry),
        extra={
            "dataset": entry.dataset,
            "source": entry.source,
            "state": entry.state,
            "status": entry.status,
            "ingestion_id": str(entry.ingestion_id),
            # the run's record (its logs, CloudWatch), not a console warning: the command says a failure itself
            "to_console": False,
        },
    )


def state_line(entry: LedgerEntry) -> str:
    """A state's end as its log line says it (the run's logs in the UI, CloudWatch): ``load success: 994 rows
    loaded``, ``validate success: 6 rows quarantined``, ``transform fail: <error>``; only the counts it has."""
    said = f"{entry.state} {entry.status}"
    if entry.error:
        return f"{said}: {entry.error}"
    counts = [
        (count, what)
        for count, what in (
            (entry.rows_read, "read"),
            (entry.rows_loaded, "loaded"),
            (entry.rows_quarantined, "quarantined"),
        )
        if count is not None
    ]
    if not counts:
        return said
    (count, what), *more = counts
    return f"{said}: {count:,} rows {what}" + "".join(f", {n:,} {w}" for n, w in more)


def hold_run(ledger: Ledger, ingestion_id: uuid.UUID) -> None:
    """Mark the run alive for its lifetime (backends without liveness locks ignore this)."""
    if hasattr(ledger, "hold"):
        ledger.hold(ingestion_id)


def release_run(ledger: Ledger) -> None:
    if hasattr(ledger, "release"):
        ledger.release()


def reap_abandoned(ledger: Ledger, home: Path | None = None) -> int:
    """Close the states of runs that died without saying so (``crashed``). With ``home``, the runs closed are also
    written down there (``REAPED``) for the next run to close in Prefect (``sluice ledger`` talks to no Prefect)."""
    reaped = ledger.reap() if hasattr(ledger, "reap") else 0
    runs: dict[uuid.UUID, bool] = getattr(ledger, "reaped_runs", {})
    if home is not None and runs:
        # best effort: if it cannot be written, the UI shows the run Running a while longer
        with contextlib.suppress(OSError), (home / REAPED).open("a", encoding="utf-8") as f:
            f.writelines(f"{run} {int(committed)}\n" for run, committed in runs.items())
    return reaped


#: Runs a reaper closed that Prefect may still show running (one ``<run id> <1 if its load committed>`` a line)
REAPED = "reaped-runs"


def take_reaped(ledger: Ledger, home: Path) -> dict[uuid.UUID, bool]:
    """The runs ``ledger``'s last reap closed, and those written down in ``home`` by another process's (which are
    then forgotten): each with whether its load had committed."""
    runs = dict(getattr(ledger, "reaped_runs", {}))
    path = home / REAPED
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        path.unlink()
    except OSError:
        return runs
    for line in lines:
        with contextlib.suppress(ValueError):
            run, committed = line.split()
            runs.setdefault(uuid.UUID(run), committed == "1")
    return runs


def close_stopped(ledger: Ledger, ingestion_id: uuid.UUID, status: str, why: str) -> int:
    """Close what a run stopped from outside left open (states ``running``, or failed by the SIGTERM or the
    interruption that stopped it) as ``status`` (``cancelled``, or ``fail`` for a timeout) with ``why``, the
    reason only the run's hook knows; returns how many states."""
    closed = 0
    for entry in ledger.history(ingestion_id):
        error = entry.error or ""
        stopped = entry.status == "fail" and (
            any(s in error for s in (TERMINATED, INTERRUPTED))
            or error.removeprefix("stopped: ").startswith(CANCELLED)
        )
        if entry.status == "running" or stopped:
            entry.status, entry.error = status, why
            close_entry(ledger, {}, entry)  # recorded and logged (JSON logs) like any state's end
            closed += 1
    return closed


def _run_lock_key(ingestion_id: uuid.UUID) -> str:
    return f"sluice.run:{ingestion_id}"


#: Why the reaper closes a state: its run no longer holds its lock
LOST = "the run stopped without finishing this state (process killed or lost)"
#: Why the reaper closes a dead run's state as a success: the file registry has its load
COMMITTED = (
    "the run stopped before it recorded this state's end, after its load committed (sluice.file_loads has it)"
)


@contextlib.contextmanager
def _if_dead(conn: sa.Connection, ingestion_id: uuid.UUID) -> Iterator[bool]:
    """Whether the run is dead (its lock is free), holding its lock meanwhile so that it is not reaped twice."""
    key = _run_lock_key(ingestion_id)
    if not conn.execute(sa.text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key}).scalar():
        yield False  # alive
        return
    try:
        yield True
    finally:
        conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
        conn.commit()


class PostgresLedger:
    """The ledger as a table in the warehouse (``sluice.run_ledger``).

    A live run holds a session-level advisory lock on its ingestion id (``hold``). When its process dies
    (SIGKILL, OOM, a lost container) PostgreSQL drops the session and the lock with it, so ``reap`` can tell
    an abandoned ``running`` state from a live one and mark it ``crashed``.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._held: Any = None
        #: The runs the last ``reap`` closed, each with whether its load had committed (their flow runs may still
        #: say ``Running`` in Prefect)
        self.reaped_runs: dict[uuid.UUID, bool] = {}
        ensure_bookkeeping(engine)

    def hold(self, ingestion_id: uuid.UUID) -> None:
        """Take the run's liveness lock on a dedicated connection, kept until ``release``."""
        connection = self.engine.raw_connection()
        cursor = connection.cursor()
        cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", (_run_lock_key(ingestion_id),))
        connection.commit()
        cursor.close()
        self._held = connection

    def release(self) -> None:
        if self._held is not None:
            self._held.invalidate()  # closes the session, and the lock with it (never back to the pool)
            self._held = None

    def reap(self) -> int:
        """Mark ``running`` states whose run no longer holds its lock as ``crashed``, and close a dead run whose
        last state is a ``success`` that is not its end (killed between two states: ``sluice ledger`` called it a
        success at ``extract``, of a file that never loaded) with a ``crashed`` next state; returns how many."""
        running = sa.select(run_ledger.c.ingestion_id).where(run_ledger.c.status == "running").distinct()
        later = run_ledger.alias("later")
        stalled = sa.select(run_ledger).where(
            run_ledger.c.status == "success",
            run_ledger.c.state.in_(STATES[:-1]),
            run_ledger.c.started_at > sa.func.now() - sa.text("interval '1 day'"),
            ~sa.exists().where(
                later.c.ingestion_id == run_ledger.c.ingestion_id, later.c.seq > run_ledger.c.seq
            ),
        )
        reaped = 0
        self.reaped_runs = {}
        with self.engine.connect() as conn:
            for ingestion_id in conn.execute(running).scalars().all():
                with _if_dead(conn, ingestion_id) as dead:
                    if dead:
                        # Died after its load committed, before it said so (a kill between the COPY's commit
                        # and the ledger's next write): what the file registry has is loaded. Called crashed,
                        # the run read as failed with 0 rows while its rows were there and a re-run skipped
                        # the file "already loaded by" it.
                        loaded = conn.execute(
                            sa.select(file_loads.c.rows_loaded).where(
                                file_loads.c.ingestion_id == ingestion_id
                            )
                        ).scalar()
                        closed: dict[str, Any] = (
                            {"status": "crashed", "error": LOST}
                            if loaded is None
                            else {"status": "success", "error": COMMITTED}
                        )
                        result = conn.execute(
                            run_ledger.update()
                            .where(
                                run_ledger.c.ingestion_id == ingestion_id, run_ledger.c.status == "running"
                            )
                            .values(**closed, finished_at=sa.func.now())
                        )
                        if loaded is not None:
                            conn.execute(
                                run_ledger.update()
                                .where(
                                    run_ledger.c.ingestion_id == ingestion_id,
                                    run_ledger.c.state == "load",
                                    run_ledger.c.error == COMMITTED,
                                )
                                .values(rows_loaded=loaded)
                            )
                        conn.commit()
                        reaped += result.rowcount
                        self.reaped_runs[ingestion_id] = loaded is not None
            for last in [_entry(row) for row in conn.execute(stalled).mappings()]:
                with _if_dead(conn, last.ingestion_id) as dead:
                    if dead:
                        self.record(
                            replace(
                                last,
                                state=STATES[STATES.index(last.state) + 1],
                                status="crashed",
                                error=LOST,
                                rows_read=None,
                                rows_loaded=None,
                                rows_quarantined=None,
                                quarantine_uri=None,
                                started_at=datetime.now(UTC),
                                finished_at=datetime.now(UTC),
                            )
                        )
                        reaped += 1
                        self.reaped_runs[last.ingestion_id] = False
        return reaped

    def record(self, entry: LedgerEntry) -> None:
        values = {c.name: getattr(entry, c.name) for c in run_ledger.columns if c.name != "seq"}
        if values["error"]:
            values["error"] = clipped(values["error"])
        for key in ("error", "source", "quarantine_uri"):
            if isinstance(
                values[key], str
            ):  # PostgreSQL text cannot hold NUL; a hostile file can put one here
                values[key] = values[key].replace("\x00", "\\0")
        values["seq"] = entry.seq
        with self.engine.begin() as conn:
            conn.execute(_RECORD, values)

    def history(self, ingestion_id: uuid.UUID) -> list[LedgerEntry]:
        query = (
            sa.select(run_ledger).where(run_ledger.c.ingestion_id == ingestion_id).order_by(run_ledger.c.seq)
        )
        with self.engine.connect() as conn:
            return [_entry(row) for row in conn.execute(query).mappings()]

    def recent(self, limit: int = 20) -> list[list[LedgerEntry]]:
        runs = (
            sa.select(run_ledger.c.ingestion_id, sa.func.min(run_ledger.c.started_at).label("started"))
            .group_by(run_ledger.c.ingestion_id)
            .order_by(sa.desc("started"))
            .limit(limit)
            .subquery()
        )
        query = (
            sa.select(run_ledger)
            .join(runs, runs.c.ingestion_id == run_ledger.c.ingestion_id)
            .order_by(runs.c.started.desc(), run_ledger.c.seq)
        )
        grouped: dict[uuid.UUID, list[LedgerEntry]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                grouped.setdefault(row["ingestion_id"], []).append(_entry(row))
        return list(grouped.values())


def _record_statement() -> sa.Insert:
    """One state of a run, inserted or updated in place (its ``started_at`` kept): one statement, built and
    compiled once (SQLAlchemy's cache), with the entry's values as parameters; building it per record cost 1.2 ms of
    CPU a state, four or five states a run."""
    insert = postgresql.insert(run_ledger)
    kept = ("ingestion_id", "state", "started_at")
    update = {c.name: insert.excluded[c.name] for c in run_ledger.columns if c.name not in kept}
    return insert.on_conflict_do_update(index_elements=["ingestion_id", "state"], set_=update)


_RECORD = _record_statement()


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(**{k: v for k, v in dict(row).items() if k != "seq"})


_BOOTSTRAPPED: set[str] = set()


def ensure_bookkeeping(engine: sa.Engine) -> None:
    """Create Sluice's own schema and tables once per process and database."""
    key = engine.url.render_as_string(hide_password=False)
    if key in _BOOTSTRAPPED:
        return
    tables.ensure(engine, *BOOKKEEPING)
    _BOOTSTRAPPED.add(key)


def get_ledger(settings: Settings | None = None) -> Ledger:
    """The configured ledger backend."""
    settings = settings or get_settings()
    if settings.ledger == "dynamodb":
        from sluice.adapters.ledger_dynamodb import (
            DynamoDBLedger,  # boto3 only when the DynamoDB ledger is configured
        )

        return DynamoDBLedger(settings.ledger_table)
    return PostgresLedger(get_engine(settings))


def summarize(entries: list[LedgerEntry]) -> dict[str, Any]:
    """A run's overall status from its states: failed if any failed, cancelled, skipped, else success."""
    statuses = [e.status for e in entries]
    if "fail" in statuses or "crashed" in statuses:
        status = "failed"
    elif "cancelled" in statuses:
        status = "cancelled"
    elif "skipped" in statuses:
        status = "skipped"
    elif "running" in statuses:
        status = "running"
    else:
        status = "success"
    last = entries[-1] if entries else None

    def latest(attr: str) -> Any:
        values = [getattr(e, attr) for e in entries if getattr(e, attr) is not None]
        return values[-1] if values else None

    return {
        "run_id": str(last.ingestion_id) if last else None,
        "dataset": last.dataset if last else None,
        "source": last.source if last else None,
        "status": status,
        "state": last.state if last else None,
        "rows_read": latest("rows_read") or 0,
        "rows_loaded": latest("rows_loaded") or 0,
        "rows_quarantined": latest("rows_quarantined") or 0,
        "quarantine_uri": latest("quarantine_uri"),
        "table": latest("target"),
        "error": latest("error"),
        "started_at": entries[0].started_at.isoformat() if entries else None,
        "finished_at": last.finished_at.isoformat() if last and last.finished_at else None,
    }
