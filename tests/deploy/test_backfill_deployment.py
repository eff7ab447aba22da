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


def test_a_second_ctrl_c_stops_waiting_and_says_which_deployment_runs_go_on(
    server: tuple[str, dict[str, str]],  # noqa: F811 (the fixture imported above)
    sluice_env: Path,
) -> None:
    """Ctrl-C during `backfill --deployment` waits for the runs in flight, which run on the pool's workers and can
    take long; a second Ctrl-C then exited 130 saying the run 'stopped … rolled back' (it had not: it goes on on the
    pool), with no result per file and no word of which runs go on or how to stop them."""
    import json
    import os
    import signal
    import time

    from tests.deploy.test_local_server import PREFECT, ROOT, wait_for

    api, env = server
    cli(env, "work-pool", "create", "sluice-local", "--type", "process")
    cli(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/local.yaml")
    folder = sluice_env / "landing" / "tm" / "slow"
    folder.mkdir(parents=True)
    for i in range(4):  # two shards of two files, each several seconds of work for the worker
        with (folder / f"dailycheckins-{i}.csv").open("w", encoding="utf-8") as f:
            f.write("user,timestamp,hours,project\n")
            f.writelines(
                f"s{i}-{j},2019-03-{1 + j % 28:02d} 00:00:00 UTC,{j % 9},slow\n" for j in range(300_000)
            )
    worker_log = (sluice_env / "worker.log").open("w")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "sluice-local", "--limit", "1"],
        env=env, cwd=sluice_env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    online = lambda: httpx.get(f"{api}/work_pools/sluice-local", timeout=10).json()["status"] == "READY"  # noqa: E731
    wait_for(online, 120, "the worker to come online", worker)  # else the backfill refuses the pool, rightly
    args = [
        "backfill",
        str(folder),
        "--dataset",
        "dailycheckins",
        "--deployment",
        "ingest-files/backfill-local",
    ]
    backfill = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", *args, "--shard-size", "2", "--concurrency", "1", "--json"],
        env={**env, "SLUICE_WARM": "0"}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def running_shard() -> list[dict[str, Any]]:
            body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
            found = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
            return [r for r in found if r["name"].startswith("shard of")]

        shard = wait_for(running_shard, 240, "the first shard run to start on the worker", backfill)[0]
        backfill.send_signal(signal.SIGINT)
        time.sleep(3)  # the first Ctrl-C is being handled: it waits for the shard in flight
        backfill.send_signal(signal.SIGINT)
        out, err = backfill.communicate(timeout=60)  # at once, not when the shard ends

        assert backfill.returncode == 130, err[-3000:]
        assert "Traceback" not in err and "rolled back" not in err, err[-3000:]
        doc = json.loads(out)
        by_name = {Path(r["source"]).name: r for r in doc["results"]}
        assert doc["interrupted"] is True and len(by_name) == 4, doc
        going_on = [by_name[f"dailycheckins-{i}.csv"] for i in (0, 1)]
        assert all(r["status"] == "running" and r["flow_run_id"] == shard["id"] for r in going_on), going_on
        assert all(f"prefect flow-run cancel {shard['id']}" in r["error"] for r in going_on), going_on
        assert all(by_name[f"dailycheckins-{i}.csv"]["error"].startswith("not started") for i in (2, 3))
        assert doc["running"] == 2 and doc["failed"] == 2
        last = [line for line in err.splitlines() if line.strip()][-1]
        assert last.startswith("error: interrupted: 2 of 4 files were not started") and shard["id"] in last, (
            err
        )

        # It did go on: the worker finishes the shard.
        done = wait_for(
            lambda: (lambda r: r if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") else None)(
                httpx.get(f"{api}/flow_runs/{shard['id']}", timeout=10).json()
            ),
            300, "the shard run the backfill left running", worker,
        )  # fmt: skip
        assert done["state_type"] == "COMPLETED", done["state"]
    finally:
        backfill.kill()
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
