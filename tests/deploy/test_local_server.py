"""End to end on a real local Prefect server: deployments/local.yaml deployed with `prefect deploy --all
--prefect-file` and no variable set, a process worker started elsewhere, `prefect deployment run
'ingest-file/local'`, and the webhook's event starting runs through the trigger. And prefect.yaml's check: with a
stack output missing, `prefect deploy --all` fails naming it and deploys nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
pytestmark = pytest.mark.slow
CSV = (
    "user,timestamp,hours,project\nned,2018-12-20 00:00:00 UTC,1.5,bizdev\narya,09/27/2019 12:00 AM,2,infra\n"
)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def patched(url: str, body: dict[str, object], tries: int = 5) -> int:
    """PATCH as Prefect's own client does it: a 503 (the server's SQLite busy with the runs' events, "database is
    locked") is retried, after a pause; CI saw one on a loaded machine."""
    for _ in range(tries - 1):
        status = httpx.patch(url, json=body, timeout=10).status_code
        if status != 503:
            return status
        time.sleep(2)
    return httpx.patch(url, json=body, timeout=10).status_code


@pytest.fixture
def server(
    tmp_path: Path, pg_url: str, sluice_env: Path, moto_endpoint: str
) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_") or k == "PREFECT_SERVER_ANALYTICS_ENABLED"
    }
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # the scheduler looks every 2 s, not every 60: a schedule's runs appear within a test's patience
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        SLUICE_DATABASE_URL=pg_url,
        AWS_ENDPOINT_URL=moto_endpoint,
    )
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={k: v for k, v in env.items() if k != "PREFECT_API_URL"}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def healthy() -> bool:
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 180, "the Prefect server", proc)
        yield api, env
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def cli(env: dict[str, str], *args: str, timeout: float = 180, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        [PREFECT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"prefect {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )
    return result.stdout


def runs(api: str, deployment_id: str) -> list[dict]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


def checkins(pg_url: str) -> int:
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM tm.daily_checkins")).scalar_one()


def test_deployment_run_and_webhook_event_through_the_trigger(
    server: tuple[str, dict[str, str]], pg_url: str, sluice_env: Path, moto_endpoint: str
) -> None:
    api, env = server
    env = {k: v for k, v in env.items() if k != "SLUICE_PROJECT_DIR"}  # nothing to forget
    cli(env, "work-pool", "create", "sluice-local", "--type", "process")
    cli(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/local.yaml")
    names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()}
    assert names == {"local", "backfill-local", "every-20-minutes-local", "daily-local"}
    deployment = httpx.get(f"{api}/deployments/name/ingest-file/local", timeout=10).json()
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]  # resolved when deployed: no {{ $SLUICE_PROJECT_DIR }} left for a run to trip on
    elsewhere = sluice_env / "worker-cwd"
    elsewhere.mkdir()
    worker_log = (sluice_env / "worker.log").open("w")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "sluice-local", "--limit", "2"],
        env=env, cwd=elsewhere, stdout=worker_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # 1. From the CLI, as users do.
        landed = sluice_env / "landing" / "dailycheckins-cli.csv"
        landed.parent.mkdir(parents=True, exist_ok=True)
        landed.write_text(CSV, encoding="utf-8")
        cli(
            env,
            "deployment",
            "run",
            "ingest-file/local",
            "--param",
            f"source={landed}",
            "--param",
            "dataset=dailycheckins",
        )
        first = wait_for(
            lambda: [r for r in runs(api, deployment["id"]) if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")],
            240, "the CLI-started run", worker,
        )  # fmt: skip
        assert first[0]["state_type"] == "COMPLETED", first[0]["state"]
        assert first[0]["name"] == "dailycheckins · dailycheckins-cli.csv"  # says what ran
        assert checkins(pg_url) == 2

        # 2. The webhook's event, twice (EventBridge delivers at least once): the trigger starts two runs, one loads.
        bucket = f"sluice-landing-{uuid.uuid4().hex[:8]}"
        key = "tm/dailycheckins/2024/03/01/daily checkins ü.csv"
        s3 = boto3.client("s3", endpoint_url=moto_endpoint)
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=key, Body=CSV.replace("ned", "jon").encode())
        automations = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
        mine = [a for a in automations if a["name"] == "local__automation_1"]
        assert len(mine) == 1 and mine[0]["enabled"] is False  # off by default
        assert patched(f"{api}/automations/{mine[0]['id']}", {"enabled": True}) == 204
        time.sleep(2)  # the triggers service reloads automations
        payload = {"bucket": bucket, "key": key, "size": len(CSV), "etag": "x", "sequencer": "1"}
        resource = {"prefect.resource.id": f"s3.bucket.{bucket}"}
        for _ in range(2):
            cli(
                env,
                "event",
                "emit",
                "aws.s3.object.created",
                "--resource",
                json.dumps(resource),
                "--payload",
                json.dumps(payload),
            )
        done = wait_for(
            lambda: (lambda rs: rs if len(rs) >= 3 and all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") for r in rs) else None)(
                runs(api, deployment["id"])
            ),
            300, "the event-started runs", worker,
        )  # fmt: skip
        event_runs = done[1:]
        assert len(event_runs) == 2
        assert all(r["parameters"]["source"] == f"s3://{bucket}/{key}" for r in event_runs)
        assert all(r["state_type"] == "COMPLETED" for r in event_runs), [
            (r["state"]["name"], r["state"].get("message")) for r in event_runs
        ]
        assert checkins(pg_url) == 4  # the second delivery loaded nothing
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def test_the_aws_file_does_not_deploy_with_a_stack_output_missing(server: tuple[str, dict[str, str]]) -> None:
    api, env = server
    cli(env, "work-pool", "create", "sluice-ecs", "--type", "ecs")
    env = {k: v for k, v in env.items() if not k.startswith("SLUICE_") and k != "AWS_REGION"}
    env["SLUICE_IMAGE_REPO"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sluice"
    result = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    for name in (
        "SLUICE_TASK_ROLE_ARN",
        "SLUICE_EXECUTION_ROLE_ARN",
        "SLUICE_SUBNET_IDS",
        "SLUICE_LOG_GROUP",
    ):
        assert f"{name} is not set" in output, output[-3000:]
    assert "SLUICE_IMAGE_REPO is not set" not in output
    assert "build_docker_image" not in output  # the check ran first: nothing was built
    assert httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json() == []


def test_a_schedule_turned_on_makes_its_runs(server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """README: turn a local deployment's schedule on (`prefect deployment schedule resume`) and its runs come. With
    SQLAlchemy 2.1 in the lock, Prefect 3.8.8's scheduler failed every loop (`Can't evaluate bulk DML statement`,
    in the server's log only): no run was ever scheduled."""
    api, env = server
    cli(env, "work-pool", "create", "sluice-local", "--type", "process")
    cli(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/local.yaml")
    deployment = httpx.get(f"{api}/deployments/name/totesys/every-20-minutes-local", timeout=10).json()
    [schedule] = deployment["schedules"]
    assert not schedule["active"] and runs(api, deployment["id"]) == []
    cli(env, "deployment", "schedule", "resume", "totesys/every-20-minutes-local", schedule["id"])
    scheduled = wait_for(lambda: runs(api, deployment["id"]), 90, "the schedule's runs")
    assert {run["state_type"] for run in scheduled} == {"SCHEDULED"}
    starts = sorted(run["expected_start_time"] for run in scheduled)
    assert len(starts) >= 2 and len(set(starts)) == len(starts)  # every 20 minutes, each once
    assert "bulk DML" not in (tmp_path / "server.log").read_text()
