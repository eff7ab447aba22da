"""A run of a command (``sluice ingest``, ``backfill``, ``totesys`` …) cancelled from Prefect (the UI, ``prefect
flow-run cancel``). No worker is there to stop it: it used to load on to its end, stay ``Cancelling`` in Prefect for
good, alert ``CANCELLED`` with every row loaded, and end the command with a traceback (``UnfinishedRun``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sluice.ledger import get_ledger
from tests.notify.conftest import Inbox, Topic
from tests.notify.test_run_notifications import one_message

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def landed(sluice_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A file of 40 chunks of 1,000 rows."""
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_CHUNK_ROWS", "1000")
    reload_settings()
    path = sluice_env / "landing" / "dailycheckins-cancelled.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write("user,timestamp,hours,project\n")
        f.writelines(f"u{i % 500},2019-09-26 00:00:00 UTC,{i % 20}.5,p{i % 7}\n" for i in range(40_000))
    yield path
    monkeypatch.delenv("SLUICE_CHUNK_ROWS")
    reload_settings()


def cancel_when_rows_read(rows: int) -> Callable[[str, int], None]:
    """A listener of the pass's rows read that cancels the run from Prefect, as the UI does, once past ``rows``."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Cancelling

    asked: list[str] = []

    def listener(_source: str, read: int) -> None:
        if read >= rows and not asked:
            asked.append(flow_run.get_id())
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(asked[0], Cancelling(message="cancelled by a test"), force=True)

    return listener


def prefect_state(run_id: str) -> tuple[str, str | None]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(run_id)).state
    assert state is not None
    return state.type.value, state.message


def loaded(run_id: str) -> int:
    from sluice.adapters.warehouse import get_engine

    with get_engine().connect() as conn:
        query = sa.text("SELECT count(*) FROM tm.daily_checkins WHERE _ingestion_id = :id")
        return conn.execute(query, {"id": run_id}).scalar_one()


def test_a_commands_run_cancelled_while_it_loads_stops_rolls_back_and_says_so(
    landed: Path, notify_blocks: tuple[Topic, Inbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.cli.runner import run_ingest
    from sluice.ingest import progress
    from tasks.toolkit import Cancellation

    monkeypatch.setattr(Cancellation, "POLL", 0.1)
    with progress(cancel_when_rows_read(2_000)):
        report = run_ingest(str(landed), dataset="dailycheckins")

    assert (report.status, report.state) == ("failed", "load"), report
    assert report.error == "cancelled: cancelled by a test" and report.run_id
    assert prefect_state(report.run_id) == ("CANCELLED", "cancelled: cancelled by a test")
    assert loaded(report.run_id) == 0
    history = get_ledger().history(uuid.UUID(report.run_id))
    assert history[-1].state == "load" and history[-1].status == "cancelled", history
    assert {e.status for e in history} <= {"success", "cancelled"}, [(e.state, e.status) for e in history]
    assert all(e.error == report.error for e in history if e.status == "cancelled")
    subject, body, _ = one_message(*notify_blocks)
    assert subject == "[sluice] CANCELLED dailycheckins at load: cancelled: cancelled by a test"
    assert (body["runStatus"], body["latestState"], body["rowsLoaded"]) == ("cancelled", "load", 0)


def test_a_cancellation_that_comes_after_the_load_committed_leaves_a_completed_run(
    landed: Path, notify_blocks: tuple[Topic, Inbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run never looks (as a run shorter than one look, or cancelled once its load committed): it loads, and
    Prefect, the ledger, the alert and the command all say it completed."""
    from sluice.cli.runner import run_ingest
    from sluice.ingest import progress
    from tasks.toolkit import Cancellation

    monkeypatch.setattr(Cancellation, "POLL", 3600.0)
    with progress(cancel_when_rows_read(2_000)):
        report = run_ingest(str(landed), dataset="dailycheckins")

    assert (report.status, report.rows_loaded) == ("success", 40_000), report
    assert report.notes == ["cancelled: cancelled by a test: too late, the run had done its work"]
    assert report.run_id and prefect_state(report.run_id)[0] == "COMPLETED"
    assert loaded(report.run_id) == 40_000
    assert {e.status for e in get_ledger().history(uuid.UUID(report.run_id))} == {"success"}
    subject, body, _ = one_message(*notify_blocks)
    assert (
        subject.startswith("[sluice] OK dailycheckins: 40,000 rows loaded") and body["runStatus"] == "success"
    )
