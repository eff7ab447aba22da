"""``sluice backfill … --deployment``: a deployment whose runs could never start is one readable error, at once.

The backfill waits for every run it starts (``run_deployment(timeout=None)``): on a pool with no worker online, or
a paused pool, it used to wait forever, silently.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sluice.cli import app

pytestmark = pytest.mark.usefixtures("prefect_harness")


def deployment_on_a_new_pool(paused: bool = False) -> tuple[str, str]:
    """An ``ingest-files`` deployment on a new process pool that no worker serves: (deployment, pool)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"sluice-nobody-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process", is_paused=paused))
        flow_id = client.create_flow_from_name("ingest-files")
        name = f"backfill-{uuid.uuid4().hex[:6]}"
        client.create_deployment(
            flow_id=flow_id, name=name, work_pool_name=pool, entrypoint="flows/ingest_files.py:ingest_files"
        )
    return f"ingest-files/{name}", pool


def landed(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "dailycheckins-0.csv").write_text(
        "user,timestamp,hours,project\nu,2019-01-01 00:00:00 UTC,1,p\n", encoding="utf-8"
    )
    return folder


def invoke_within(seconds: float, *args: str) -> Any:
    """The CLI in a thread: a backfill that would wait forever fails the test instead of hanging it."""
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(CliRunner().invoke(app, list(args))), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"`sluice {' '.join(args)}` still waiting after {seconds:.0f} s"
    return outcome[0]


@pytest.mark.parametrize("paused", [False, True], ids=["no-worker-online", "paused-pool"])
def test_a_pool_whose_runs_would_never_start_is_one_readable_error(sluice_env: Path, paused: bool) -> None:
    deployment, pool = deployment_on_a_new_pool(paused=paused)
    folder = landed(sluice_env / "landing" / "tm" / "dailycheckins")

    result = invoke_within(60, "backfill", str(folder), "--deployment", deployment, "--json")

    assert result.exit_code == 1
    assert "results" not in result.stdout  # nothing was started
    expected = "is paused" if paused else "has no worker online"
    assert f"work pool '{pool}'" in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_pool_with_a_worker_online_passes_the_check(sluice_env: Path) -> None:
    from prefect.client.orchestration import get_client

    from sluice.cli.fanout import check_deployment

    deployment, pool = deployment_on_a_new_pool()
    with get_client(sync_client=True) as client:
        client.send_worker_heartbeat(work_pool_name=pool, worker_name="a-worker")
    check_deployment(deployment)  # no error: runs will be picked up
