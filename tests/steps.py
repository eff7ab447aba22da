"""What the pipelines' step tests read: a flow run's task runs from the Prefect API, and a fault that heals once.

A pipeline's steps are pinned by what Prefect recorded of its run (the task runs, in the order they were
created, each with the retry policy it ran under), not by reading the flow's code.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa


@dataclass(frozen=True)
class Step:
    """One task run of a flow run: its task's name, its retries, how many times it ran, its final state."""

    name: str
    retries: int
    run_count: int
    state: str


#: The state types a task run ends in.
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def steps(flow_run_id: str | None, last: str, timeout: float = 30.0) -> list[Step]:
    """The flow run's task runs in the order they were created, once the task ``last`` and every other has finished.

    Task runs reach the API as events, a little after the flow returns, and the server records them in batches: an
    earlier task's last state can land after ``last``'s (CI saw ``validate`` still RUNNING beside a FAILED
    ``reject``). So wait until ``last`` is there and no task run is left unfinished.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.utilities.asyncutils import run_coro_as_sync

    assert flow_run_id, "the report names no flow run"

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
            )

    deadline = time.monotonic() + timeout
    while True:
        runs = sorted(run_coro_as_sync(read()), key=lambda r: r.expected_start_time)
        found = [
            Step(
                name=r.name.rsplit("-", 1)[0],
                retries=r.empirical_policy.retries or 0,
                run_count=r.run_count,
                state=r.state_type.value if r.state_type else "?",
            )
            for r in runs
        ]
        if any(s.name == last for s in found) and all(s.state in FINAL for s in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"task {last} did not finish in {timeout} s; task runs so far: {found}")
        time.sleep(0.2)


def final_state(flow_run_id: str | None) -> tuple[str, str, str | None]:
    """The flow run's last state as the Prefect UI shows it: (type, name, message)."""
    from prefect.client.orchestration import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    assert flow_run_id, "the report names no flow run"

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_flow_run(uuid.UUID(flow_run_id))

    state = run_coro_as_sync(read()).state
    return state.type.value, state.name, state.message


@contextmanager
def healed_after_first_failure(
    engine: sa.Engine, dataset: str, state: str, heal: Callable[[], None]
) -> Iterator[threading.Event]:
    """Call ``heal`` as soon as the ledger shows ``state`` of ``dataset`` failed; the event says it happened.

    The fault is real (a folder the quarantine cannot be written to) and healed from outside the run, between
    the failed attempt and its retry (the test sets a retry delay long enough for that).
    """
    healed = threading.Event()
    stop = threading.Event()
    query = sa.text(
        "SELECT count(*) FROM sluice.run_ledger WHERE dataset = :d AND state = :s AND status = 'fail'"
    )

    def failed() -> bool:
        with engine.connect() as conn:
            try:
                return bool(conn.execute(query, {"d": dataset, "s": state}).scalar_one())
            # no ledger yet: the run creates it (a test alone, first on its warehouse)
            except sa.exc.ProgrammingError:
                return False

    def watch() -> None:
        while not stop.is_set():
            if failed():
                heal()
                healed.set()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield healed
    finally:
        stop.set()
        thread.join(timeout=5)


@contextmanager
def quarantine_fails_once(
    home: Path, folder: str, dataset: str, state: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The quarantine zone's ``folder`` cannot be written (a file stands where it goes) until the ledger shows
    ``state`` of ``dataset`` failed; retries wait about a second, so the fault heals between two attempts."""
    from sluice.adapters.warehouse import get_engine
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_RETRY_DELAY_SECONDS", "1")
    reload_settings()
    blocker = home / "quarantine" / folder
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    with healed_after_first_failure(get_engine(), dataset, state, blocker.unlink) as healed:
        yield
    assert healed.is_set(), "the quarantine write never failed: the fault did not take"


def rejected_after_a_retried_quarantine(flow_run_id: str | None) -> list[Step]:
    """The run's task runs, which end: validate once, quarantine twice (the retry wrote it), reject (failed)."""
    runs = steps(flow_run_id, last="reject")
    assert [(s.name, s.run_count, s.state) for s in runs][-3:] == [
        ("validate", 1, "COMPLETED"),
        ("quarantine", 2, "COMPLETED"),
        ("reject", 1, "FAILED"),
    ]
    return runs


def retried_as_configured(runs: list[Step], io: set[str]) -> None:
    """The I/O tasks ran with the configured retries (more than none), every other task with none."""
    from sluice.settings import get_settings

    retries = get_settings().retries
    assert retries > 0
    assert {s.name: s.retries for s in runs} == {s.name: retries if s.name in io else 0 for s in runs}
