"""What a deployed run shows and does: the S3 object version from the event is the one loaded, run names say what
ran, every flow leaves an artifact, and a run registers no block types (that is the deploy's job)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.usefixtures("prefect_harness")
HEADER = "user,timestamp,hours,project\n"
V1 = HEADER + "ned,2018-12-20 00:00:00 UTC,1.5,bizdev\narya,2019-01-02 10:00:00 UTC,2,infra\n"
V2 = (
    HEADER
    + "jon,2019-03-01 08:00:00 UTC,3,ops\nsansa,2019-03-02 08:00:00 UTC,4,ops\nbran,2019-03-03 08:00:00 UTC,5,ops\n"
)


def flow_run(run_id: Any) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_flow_run(run_id)

    return run_coro_as_sync(read())


def artifacts(key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )

    return run_coro_as_sync(read())


def test_the_event_s_object_version_is_the_one_loaded(
    sluice_env: Path, landing: tuple[Any, str], pg_url: str
) -> None:
    from flows.ingest import ingest_file
    from sluice.adapters import storage

    s3, bucket = landing
    key = "tm/dailycheckins/2024/03/01/dailycheckins.csv"
    v1 = s3.put_object(Bucket=bucket, Key=key, Body=V1.encode())["VersionId"]
    s3.put_object(Bucket=bucket, Key=key, Body=V2.encode())  # overwritten before the run reads it
    source = f"s3://{bucket}/{key}"

    fetched = storage.fetch(source, sluice_env / "fetch", version_id=v1)
    assert fetched.path.read_text() == V1 and fetched.version == v1
    assert storage.fetch(source, sluice_env / "latest").path.read_text() == V2  # no version: the latest

    state = ingest_file(source=source, version_id=v1, return_state=True)
    report = state.result()
    assert (report.status, report.rows_loaded) == ("success", 2)
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        users = set(conn.execute(sa.text("SELECT username FROM tm.daily_checkins")).scalars())
    assert users == {"ned", "arya"}  # v1's rows, not v2's
    run = flow_run(state.state_details.flow_run_id)
    assert run.name == "dailycheckins · dailycheckins.csv"
    assert run.parameters["version_id"] == v1
    # An event from an unversioned bucket renders version_id "": the latest version.
    assert ingest_file(source=source, version_id="", force=True, return_state=True).result().rows_loaded == 3


def test_analytics_and_customers_leave_an_artifact_and_a_name_that_says_what_ran(sluice_env: Path) -> None:
    from flows.data2bots import data2bots
    from flows.sertis import sertis

    for flow, key, name in (
        (sertis, "customers", "customers 20"),
        (data2bots, "analytics", "analytics 20"),
    ):
        before = len(artifacts(key))
        state = flow(return_state=True)
        assert len(artifacts(key)) == before + 1, key  # whether the run succeeded, skipped or failed
        assert flow_run(state.state_details.flow_run_id).name.startswith(name)
    state = data2bots(as_of="2021-09-05", return_state=True)
    assert flow_run(state.state_details.flow_run_id).name == "analytics as of 2021-09-05"


def test_a_run_registers_no_block_types(
    sluice_env: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registering a block type starts by reading it by slug: count those API calls during a run that notifies."""
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient
    from prefect_aws import AwsCredentials

    from sluice.adapters.notify import SnsNotification, deliver
    from sluice.cli.runner import run_ingest
    from sluice.report import IngestReport
    from sluice.settings import reload_settings

    topic = boto3.client("sns", endpoint_url=moto_endpoint).create_topic(Name=f"t-{uuid.uuid4().hex[:6]}")
    name = f"ops-{uuid.uuid4().hex[:8]}"
    SnsNotification(
        topic_arn=topic["TopicArn"], aws_credentials=AwsCredentials(region_name="us-east-1")
    ).save(name)
    monkeypatch.setenv("SLUICE_NOTIFY_BLOCKS", f"sns-notification/{name}")
    reload_settings()

    reads: list[str] = []
    read_async, read_sync = PrefectClient.read_block_type_by_slug, SyncPrefectClient.read_block_type_by_slug

    async def spy_async(self: Any, slug: str) -> Any:
        reads.append(slug)
        return await read_async(self, slug)

    def spy_sync(self: Any, slug: str) -> Any:
        reads.append(slug)
        return read_sync(self, slug)

    # A spy on Prefect's client (it calls through), not a stand-in for Sluice's code.
    monkeypatch.setattr(PrefectClient, "read_block_type_by_slug", spy_async)
    monkeypatch.setattr(SyncPrefectClient, "read_block_type_by_slug", spy_sync)
    landed = sluice_env / "landing" / "dailycheckins.csv"
    landed.parent.mkdir(parents=True, exist_ok=True)
    landed.write_text(V1, encoding="utf-8")
    assert run_ingest(str(landed), dataset="dailycheckins").status == "success"  # its hook sends the message
    report = IngestReport(
        run_id=None, dataset="dailycheckins", source="x", status="success", state="load", rows_loaded=1
    )  # a run that changed something: the default policy (SLUICE_NOTIFY_ON=change) alerts on it
    assert deliver(report) == 1  # what every run's hook does: the block loads and the message goes
    assert reads == []  # no block-type registration on the run path

    from sluice.deploycheck import register_block_types

    register_block_types()  # where it happens now: a build step of both deployment files
    assert "sns-notification" in reads
