"""``sluice backfill … --deployment``: a deployment whose runs could never start is one readable error, at once.

The backfill waits for every run it starts (``run_deployment(timeout=None)``): on a pool with no worker online, or
a paused pool, it used to wait forever, silently.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from sluice.cli import app
from tests.deploy.test_local_server import cli, server  # noqa: F401 (server: a fixture)

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


def test_backfill_to_a_deployment_goes_to_the_prefect_profile_the_user_logged_in_with(
    server: tuple[str, dict[str, str]],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """`prefect cloud login` writes the API to the user's Prefect profile, not to the environment: the backfill's
    deployment runs (and `sluice aws setup`, by the same switch) must go there, not to a local server of the home."""
    api, env = server
    pool = f"sluice-remote-{uuid.uuid4().hex[:6]}"
    cli(env, "work-pool", "create", pool, "--type", "process")
    flow = httpx.post(f"{api}/flows/", json={"name": "ingest-files"}, timeout=10).json()
    created = httpx.post(
        f"{api}/deployments/",
        json={"name": "backfill", "flow_id": flow["id"], "work_pool_name": pool,
              "entrypoint": "flows/ingest_files.py:ingest_files"},
        timeout=10,
    )  # fmt: skip
    assert created.status_code in (200, 201), created.text
    user = tmp_path / "user"
    (user / ".prefect").mkdir(parents=True)
    (user / ".prefect" / "profiles.toml").write_text(
        f'active = "cloud"\n\n[profiles.cloud]\nPREFECT_API_URL = "{api}"\n', encoding="utf-8"
    )
    sluice_home = tmp_path / "sluice-home"
    run_env = {k: v for k, v in env.items() if not k.startswith("PREFECT_")}
    run_env |= {"HOME": str(user), "SLUICE_HOME": str(sluice_home)}
    folder = landed(tmp_path / "landing" / "tm" / "dailycheckins")
    sluice = str(Path(sys.executable).parent / "sluice")
    try:
        result = subprocess.run(
            [sluice, "backfill", str(folder), "--deployment", "ingest-files/backfill", "--json"],
            env=run_env, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    finally:
        subprocess.run(
            [sluice, "services", "stop"], env=run_env, capture_output=True, timeout=120, check=False
        )

    # The deployment was found on the profile's server (its pool has no worker: the check stops it there).
    assert result.returncode == 1
    assert f"work pool '{pool}'" in result.stderr and "no worker online" in result.stderr, result.stderr
    assert not (sluice_home / "prefect" / "server.json").exists()  # no local server was started for it


def test_backfill_plans_every_claimed_object_of_a_large_s3_prefix(s3_bucket: str, moto_endpoint: str) -> None:
    """More than one page of ListObjectsV2 (1,000 keys): every file is planned once; folder markers and keys no
    dataset claims are not."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    from sluice.cli.fanout import plan, shards

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    keys = [f"landing/tm/dailycheckins/2024/{i:04d} checkins.csv" for i in range(1_005)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=s3_bucket, Key=k, Body=b"user\n"), keys))
    s3.put_object(Bucket=s3_bucket, Key="landing/tm/dailycheckins/2024/", Body=b"")  # a folder marker
    s3.put_object(Bucket=s3_bucket, Key="landing/notes/readme.txt", Body=b"no dataset claims this")

    planned = plan(f"s3://{s3_bucket}/landing/", None)

    assert sorted(uri for uri, _ in planned) == sorted(f"s3://{s3_bucket}/{k}" for k in keys)
    assert {name for _, name in planned} == {"dailycheckins"}
    assert [len(s) for s in shards(planned, 400)] == [400, 400, 205]
