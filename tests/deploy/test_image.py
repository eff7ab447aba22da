"""The image, built and run here the way the ECS worker runs it (skipped when no Docker engine answers: CI has
none; `../shared/tools/local-docker.sh` starts one). A deployment with prefect.yaml's pull step, a flow run created
from it, and the container started with `prefect flow-run execute` against a local Prefect server, moto's S3 and the
host's PostgreSQL over the host network: the pull step, the entrypoint, the non-root user and the JSON logs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import httpx
import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import free_port
from tests.deploy.test_local_server import (  # noqa: F401 (server: a fixture)
    CSV,
    PREFECT,
    checkins,
    cli,
    server,
    wait_for,
)
from tests.deploy.test_prefect_yaml import STACK_ENV

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "sluice-test:image"
MAX_IMAGE_MB = 850  # 889 MB before the runtime set was trimmed (pgserver, deploy tooling, packages' tests)
pytestmark = pytest.mark.slow


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def image() -> str:
    if not engine_answers():
        pytest.skip("no Docker engine answers here (../shared/tools/local-docker.sh starts one)")
    build = subprocess.run(
        ["docker", "build", "--network", "host", "-t", IMAGE, str(ROOT)],
        env={**os.environ, "DOCKER_BUILDKIT": "0"}, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


class UnixToTcp(threading.Thread):
    """The embedded PostgreSQL listens on a Unix socket; the container reaches it over TCP on the host network."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.path)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def postgres_over_tcp(pg_url: str) -> Iterator[str]:
    url = urlparse(pg_url)
    socket_dir = parse_qs(url.query)["host"][0]
    proxy = UnixToTcp(str(Path(socket_dir) / ".s.PGSQL.5432"))
    proxy.start()
    yield f"postgresql://{url.username or 'postgres'}@127.0.0.1:{proxy.port}{url.path}"
    proxy.stop()


def test_the_image_is_small_and_runs_as_a_non_root_user(image: str) -> None:
    size = int(subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image], capture_output=True,
                              text=True, check=True).stdout)  # fmt: skip
    print(f"image size: {size / 1e6:.0f} MB")
    assert size / 1e6 < MAX_IMAGE_MB
    uid = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", image, "-u"], capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    assert uid != "0"
    absent = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", image, "-c",
         "import importlib.util as u; print([m for m in ('pgserver', 'pytest', 'moto', 'prefect_docker') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert absent == "[]"


def ecs_flow_run(
    server: tuple[str, dict[str, str]],  # noqa: F811 (the fixture's value, passed on)
    moto_endpoint: str,
    postgres: str,
    body: str,
    pool: str,
) -> tuple[Any, list[str]]:
    """A landed object, a deployment of ingest-file on an `ecs` pool with prefect.yaml's pull step, and a flow run of
    it; returns the run and the `docker run` arguments of the environment the ECS worker gives it."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    api, env = server
    cli(env, "work-pool", "create", pool, "--type", "ecs")
    bucket = f"sluice-landing-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket=bucket)
    key = "tm/dailycheckins/2024/03/01/dailycheckins.csv"
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    pull = yaml.safe_load((ROOT / "prefect.yaml").read_text())["pull"]  # what the ECS container runs first

    async def create_run() -> Any:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("ingest-file")
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name=f"s3-event-{pool}", work_pool_name=pool,
                entrypoint="flows/ingest.py:ingest_file", pull_steps=pull,
            )  # fmt: skip
            return await client.create_flow_run_from_deployment(
                deployment_id, parameters={"source": f"s3://{bucket}/{key}"}
            )

    with temporary_settings({PREFECT_API_URL: api}):
        flow_run = run_coro_as_sync(create_run())
    container_env = {
        "PREFECT_API_URL": api,
        "PREFECT__FLOW_RUN_ID": str(flow_run.id),
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SLUICE_DATABASE_URL": postgres,
        "SLUICE_LANDING_URI": f"s3://{bucket}",
        "SLUICE_STAGING_URI": f"s3://{bucket}/staging",
        "SLUICE_QUARANTINE_URI": f"s3://{bucket}/quarantine",
    }
    return flow_run, [a for k, v in container_env.items() for a in ("-e", f"{k}={v}")]


def test_a_deployment_s_run_executes_inside_the_image_like_the_ecs_worker_runs_it(
    image: str,
    server: tuple[str, dict[str, str]],  # noqa: F811 (the fixture imported above)
    postgres_over_tcp: str,
    pg_url: str,
    moto_endpoint: str,
) -> None:
    api, _ = server
    flow_run, args = ecs_flow_run(server, moto_endpoint, postgres_over_tcp, CSV, "sluice-ecs")
    # The ECS worker's command for a flow run (prefect-aws: the container's command override).
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", *args, image, "prefect", "flow-run", "execute"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    state = wait_for(
        lambda: (r := httpx.get(f"{api}/flow_runs/{flow_run.id}", timeout=10).json())
        and r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") and r,
        60, "the run's final state",
    )  # fmt: skip
    assert state["state_type"] == "COMPLETED", state["state"]
    assert checkins(pg_url) == 2
    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line the container wrote is one JSON object
    mine = [r for r in records if r.get("flow_run_id") == str(flow_run.id)]
    assert any(r.get("state") == "load" and r.get("dataset") == "dailycheckins" for r in mine), records[-5:]
    assert not [r for r in records if r.get("level") == "ERROR"]


def test_a_stopped_container_ends_its_flow_run_and_says_so(
    image: str,
    server: tuple[str, dict[str, str]],  # noqa: F811 (the fixture imported above)
    postgres_over_tcp: str,
    pg_url: str,
    moto_endpoint: str,
) -> None:
    """`docker stop` (ECS: StopTask, a cancelled run, a scale-in) during a flow run: `prefect flow-run execute` as
    PID 1 ignored the SIGTERM and the flow's own process never got it, so the stop waited out its timeout, ended in
    SIGKILL (exit 137) and left the run `Running` and its ledger without a word. The image's init forwards it."""
    api, _ = server
    user = f"stop-{uuid.uuid4().hex[:6]}"
    flow_run, args = ecs_flow_run(server, moto_endpoint, postgres_over_tcp, CSV.replace("ned", user), "stop")
    from sluice.ledger_entry import TERMINATED
    from sluice.tables import ensure
    from sluice.tables.tm import daily_checkins

    held = sa.create_engine(pg_url)
    ensure(held, daily_checkins)
    name = f"sluice-stop-{uuid.uuid4().hex[:6]}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "host", *args, image, "prefect", "flow-run", "execute"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    try:

        def extracted() -> bool:
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=60)
            return "extract success" in logs.stdout + logs.stderr

        # The run's load waits on this lock, so the stop comes while it runs, whatever the machine's speed; the lock
        # goes soon after (a load blocked in PostgreSQL sees the signal once its statement returns).
        with held.begin() as conn:
            conn.execute(sa.text("LOCK TABLE tm.daily_checkins IN ACCESS EXCLUSIVE MODE"))
            wait_for(extracted, 120, "the run's extract")
            time.sleep(1)
            started = time.monotonic()
            stopping = subprocess.Popen(["docker", "stop", "-t", "25", name], stdout=subprocess.DEVNULL)
            time.sleep(2)
        stop_code = stopping.wait(timeout=120)
        stopped_in = time.monotonic() - started
        code = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.ExitCode}}", name],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)
        held.dispose()
    assert stop_code == 0
    assert code != "137", "SIGKILLed at the end of the stop timeout: the SIGTERM reached nothing"
    assert stopped_in < 20, stopped_in
    state = httpx.get(f"{api}/flow_runs/{flow_run.id}", timeout=10).json()
    assert state["state_type"] in ("FAILED", "CRASHED", "CANCELLED"), state["state"]
    with sa.create_engine(pg_url).connect() as conn:
        ledger = conn.execute(
            sa.text(
                "SELECT state, status, error FROM sluice.run_ledger WHERE flow_run_id = :id ORDER BY seq"
            ),
            {"id": str(flow_run.id)},
        ).all()
        loaded = conn.execute(
            sa.text("SELECT count(*) FROM tm.daily_checkins WHERE username = :user"), {"user": user}
        ).scalar_one()
    # The run says where it stopped and why; what it had not committed was rolled back.
    assert ledger[-1] == ("load", "fail", TERMINATED), ledger
    assert loaded == 0


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A local image registry (Debian's docker-registry) standing in for ECR: same push, no login."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("no docker-registry here (apt-get install docker-registry)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {"version": 0.1, "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry")}},
             "http": {"addr": f"127.0.0.1:{port}"}, "log": {"level": "error"}}
        )
    )  # fmt: skip
    proc = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail("the registry exited")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 30, "the registry")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_prefect_deploy_all_builds_and_pushes_one_image_for_every_deployment(
    image: str,
    server: tuple[str, dict[str, str]],  # noqa: F811 (the fixture imported above)
    registry: str,
) -> None:
    """prefect.yaml as it is, against a local server with an `ecs` pool (push pools are Prefect Cloud only)."""
    from prefect_aws.workers.ecs_worker import ECSVariables

    api, env = server
    cli(env, "work-pool", "create", "sluice-ecs", "--type", "ecs")
    repo = f"{registry}/sluice"
    deploy_env = {k: v for k, v in env.items() if not k.startswith("SLUICE_")}
    # No image registry is reachable here: the base images are the engine's local stand-ins, not pulled again.
    deploy_env.update(STACK_ENV, SLUICE_IMAGE_REPO=repo, SLUICE_IMAGE_PULL_BASE="false")
    result = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"],
        env=deploy_env, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    found = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    assert sorted(d["name"] for d in found) == sorted(d["name"] for d in declared)  # every one, none twice
    images = {d["job_variables"]["image"] for d in found}
    assert len(images) == 1  # one image for every deployment
    tags = httpx.get(f"http://{registry}/v2/sluice/tags/list", timeout=10).json()["tags"]
    assert len(tags) == 1 and images == {f"{repo}:{tags[0]}"}  # built and pushed once
    for d in found:
        variables = ECSVariables(**d["job_variables"])
        assert variables.network_configuration["subnets"] == STACK_ENV["SLUICE_SUBNET_IDS"].split(",")
        assert variables.cloudwatch_logs_options["awslogs-create-group"] == "false"
        assert d["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/prefect/sluice"}}
        ]
    totesys = next(d for d in found if d["name"] == "every-20-minutes")
    assert [s["active"] for s in totesys["schedules"]] == [False]  # no Totesys source in this stack
