"""Real flows under IAM enforcement: the stack deployed into a moto server of its own, then ingest (S3 landing,
DynamoDB ledger, SNS alert, the warehouse URL from Secrets Manager) and Sertis's Glue catalog run with credentials
that hold exactly the task role's policies. A write outside the stack's buckets is denied.

How moto enforces IAM (moto/core/authorization.py, moto/iam/access_control.py): S3 requests are checked against
the bucket/object ARN, every other service's action against the resource ``*``. So the test principal holds the
task role's statements as they are for S3, and with ``Resource: "*"`` for the other services (same actions, same
effect); that those statements name exactly the topic, table, secret and Glue database the flows used is asserted
separately below, against the resolved policy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from tests.deploy.conftest import MotoStack, as_list, deploy_stack, drain, moto_view, user_with_policies

pytestmark = pytest.mark.usefixtures("prefect_harness")

CHECKINS = (
    "user,timestamp,hours,project\n"
    "ned,26 сентября 2019 00:00,4.0,bizdev\n"
    "jaime,2018-12-20 00:00:00 UTC,1.5,project-00\n"
    "arya,09/27/2019 12:00 AM,24,infra\n"
)
BAD_ROW = "bran,2019-01-01 00:00:00 UTC,25,infra\n"
SERTIS = (
    "transactionId|custId|transactionDate|productSold|unitsSold\n"
    "1|0000001|2011-01-01|A|3\n1|0000001|2011-01-02|B|2\n2|0000002|2011-01-05|B|9\n"
)


@pytest.fixture(scope="module")
def stack(moto_server: str, fresh_warehouse: str) -> MotoStack:
    """The stack, with the warehouse URL secret holding a fresh database's URL."""
    return deploy_stack(moto_server, warehouse_url=fresh_warehouse)


@pytest.fixture
def as_task_role(
    stack: MotoStack, task_keys: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MotoStack]:
    """The environment an ECS task of the stack gets: its zones, ledger, secret, topic block, credentials."""
    from prefect_aws import AwsCredentials

    from sluice.adapters.notify import SnsNotification
    from sluice.adapters.storage import reset_clients
    from sluice.adapters.warehouse import secret_value
    from sluice.settings import reload_settings

    out = stack.outputs
    block = f"alerts-{uuid.uuid4().hex[:8]}"
    SnsNotification(
        topic_arn=out["AlertsTopicArn"], aws_credentials=AwsCredentials(region_name="us-east-1")
    ).save(block)
    env = {
        "AWS_ENDPOINT_URL": stack.endpoint,
        "AWS_ACCESS_KEY_ID": task_keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": task_keys["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": out["Region"],
        "SLUICE_LANDING_URI": out["LandingUri"],
        "SLUICE_STAGING_URI": out["StagingUri"],
        "SLUICE_QUARANTINE_URI": out["QuarantineUri"],
        "SLUICE_DATABASE_SECRET_ARN": out["DatabaseSecretArn"],
        "SLUICE_LEDGER": "dynamodb",
        "SLUICE_LEDGER_TABLE": out["LedgerTableName"],
        "SLUICE_GLUE_DATABASE": out["GlueDatabase"],
        "SLUICE_NOTIFY_BLOCKS": f"sns-notification/{block}",
        "SLUICE_HOME": str(tmp_path / "home"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLUICE_DATABASE_URL", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    # boto3.client() reuses one default session, which keeps the credentials it resolved first: start afresh.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    secret_value.cache_clear()
    reset_clients()
    reload_settings()
    yield stack
    secret_value.cache_clear()
    monkeypatch.undo()
    reset_clients()
    reload_settings()


def test_ingest_from_s3_with_dynamodb_ledger_secret_and_sns_under_the_task_role(
    as_task_role: MotoStack, alerts_queue: str
) -> None:
    from sluice.adapters.warehouse import get_engine, secret_value
    from sluice.cli.runner import run_ingest

    stack = as_task_role
    landing = stack.outputs["LandingUri"].removeprefix("s3://")
    key = f"tm/dailycheckins/2024/03/01/{uuid.uuid4().hex[:6]}.csv"
    stack.client("s3").put_object(Bucket=landing, Key=key, Body=(CHECKINS + BAD_ROW).encode())
    drain(stack, alerts_queue)

    report = run_ingest(f"s3://{landing}/{key}", mode="soft")

    assert (report.status, report.rows_loaded, report.rows_quarantined) == ("success", 3, 1), report.error
    assert secret_value.cache_info().currsize == 1  # the warehouse URL came from Secrets Manager
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tm.daily_checkins")).scalar_one() == 3
    data_bucket = stack.outputs["QuarantineUri"].removeprefix("s3://").split("/", 1)[0]
    quarantined = (
        stack.client("s3").list_objects_v2(Bucket=data_bucket, Prefix="quarantine/").get("Contents", [])
    )
    assert quarantined, "the bad row was not written to the quarantine zone"
    items = stack.client("dynamodb").scan(TableName=stack.outputs["LedgerTableName"])["Items"]
    assert any(
        item["ingestedTable"]["S"] == "dailycheckins"
        and item["status"]["S"] == "success"
        and key in item["source"]["S"]
        for item in items
    ), items
    messages = drain(stack, alerts_queue)
    assert len(messages) == 1 and messages[0]["Subject"].startswith("[sluice] OK dailycheckins")


def test_a_failed_run_is_alerted_under_the_task_role(as_task_role: MotoStack, alerts_queue: str) -> None:
    from sluice.cli.runner import run_ingest

    stack = as_task_role
    landing = stack.outputs["LandingUri"].removeprefix("s3://")
    key = f"tm/dailycheckins/2024/03/02/{uuid.uuid4().hex[:6]}.csv"
    bad = "theon,2019-01-02 00:00:00 UTC,30,infra\n"  # content of its own: not skipped as already loaded
    stack.client("s3").put_object(Bucket=landing, Key=key, Body=(CHECKINS + bad).encode())
    drain(stack, alerts_queue)

    report = run_ingest(f"s3://{landing}/{key}", mode="hard")

    assert (report.status, report.state, report.rows_loaded) == ("failed", "validate", 0), report.error
    messages = drain(stack, alerts_queue)
    assert len(messages) == 1 and messages[0]["Subject"].startswith(
        "[sluice] FAILED dailycheckins at validate"
    )
    assert json.loads(messages[0]["Message"])["status"] == "Ingestion Fail"


def test_a_ledger_table_that_is_missing_and_may_not_be_created_is_one_readable_failure_and_alerted(
    as_task_role: MotoStack, alerts_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task role has no dynamodb:CreateTable: a wrong SLUICE_LEDGER_TABLE fails the run at extract with what to
    set (was botocore's AccessDeniedException for CreateTable), and the alert still goes out."""
    from sluice.cli.runner import run_ingest
    from sluice.settings import reload_settings

    stack = as_task_role
    monkeypatch.setenv("SLUICE_LEDGER_TABLE", "sluice-ledger-typo")
    reload_settings()
    landing = stack.outputs["LandingUri"].removeprefix("s3://")
    key = f"tm/dailycheckins/2024/03/03/{uuid.uuid4().hex[:6]}.csv"
    stack.client("s3").put_object(Bucket=landing, Key=key, Body=CHECKINS.encode())
    drain(stack, alerts_queue)

    report = run_ingest(f"s3://{landing}/{key}")

    assert (report.status, report.state) == ("failed", "extract")
    assert report.error and report.error.startswith(
        "the DynamoDB ledger table 'sluice-ledger-typo' in us-east-1 does not exist, and these credentials may not "
        "create it "
        "(access denied: User: arn:aws:iam::123456789012:user/sluice-task is not authorized to perform: "
        "dynamodb:CreateTable)"
    )
    assert (
        "set SLUICE_LEDGER_TABLE to the stack's table (output LedgerTableName) and AWS_REGION" in report.error
    )
    [message] = drain(stack, alerts_queue)
    assert message["Subject"].startswith(
        "[sluice] FAILED dailycheckins at extract: the DynamoDB ledger table"
    )
    assert json.loads(message["Message"])["error"] == report.error


def _cli(*args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """``sluice ARGS`` in its own process (the CLI's own exit path prints a configuration error), this process's
    environment with ``env`` over it (None: unset)."""
    merged = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    for name in (k for k, v in env.items() if v is None):
        merged.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        env=merged, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


#: No credentials anywhere botocore looks (nor the instance metadata service, which would take seconds to fail).
NO_CREDENTIALS: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
}


def test_a_ledger_or_secret_aws_refuses_is_one_line_naming_it_and_the_grant(
    as_task_role: MotoStack, tmp_path: Path
) -> None:
    """With the ledger in DynamoDB and the warehouse URL in Secrets Manager (as the task's environment has them):
    `sluice ledger` under the task role (no dynamodb:Scan) and `sluice db url`, `sluice ledger` and `sluice ingest`
    without credentials were tracebacks, or botocore's bare "Unable to locate credentials" naming nothing."""
    stack = as_task_role
    table = stack.outputs["LedgerTableName"]

    ledger = _cli("ledger")
    assert ledger.returncode == 1 and "Traceback" not in ledger.stderr, ledger.stderr
    assert ledger.stderr.startswith(
        f"error: the DynamoDB ledger table '{table}' in us-east-1: access denied: "
    )
    assert "need dynamodb:Scan on it" in ledger.stderr, ledger.stderr

    secret = stack.outputs["DatabaseSecretArn"].rsplit(":", 1)[-1]
    url = _cli("db", "url", **NO_CREDENTIALS)
    assert url.returncode == 1 and "Traceback" not in url.stderr, url.stderr
    assert url.stderr.startswith(
        f"error: secret {secret} (SLUICE_DATABASE_SECRET_ARN, in us-east-1): no AWS credentials to read it "
        "(AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; on ECS, the task role)"
    ), url.stderr
    wrong_region = _cli("db", "url", AWS_DEFAULT_REGION="eu-west-1", AWS_REGION="eu-west-1")
    assert wrong_region.stderr.startswith(
        f"error: secret {secret} (SLUICE_DATABASE_SECRET_ARN, in eu-west-1): no such secret there"
    ), wrong_region.stderr
    unsigned = _cli("ledger", **NO_CREDENTIALS)
    assert unsigned.stderr.startswith(
        f"error: the DynamoDB ledger table '{table}' in us-east-1: no AWS credentials to use it"
    ), unsigned.stderr
    landed = tmp_path / "dailycheckins.csv"
    landed.write_text(CHECKINS, encoding="utf-8")
    ingest = _cli("ingest", str(landed), **NO_CREDENTIALS, SLUICE_WARM="0")
    assert ingest.returncode == 1 and "Traceback" not in ingest.stdout + ingest.stderr, ingest.stderr
    assert f"'{table}' in us-east-1: no AWS credentials to use it" in ingest.stderr, ingest.stderr


def test_a_backfill_whose_skips_the_ledger_refuses_gives_each_file_its_result(
    as_task_role: MotoStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skips are recorded in bulk before any run: a ledger that refused them (no dynamodb:UpdateItem) aborted the
    backfill with a traceback and no result for any file, the ones that would have loaded included."""
    stack = as_task_role
    folder = tmp_path / "landing" / "tm" / "dailycheckins"
    folder.mkdir(parents=True)
    # content of its own: the other tests' files are not skipped as already loaded
    (folder / "loaded.csv").write_text(CHECKINS + "robb,2019-01-04 00:00:00 UTC,3,infra\n", encoding="utf-8")
    assert _cli("ingest", str(folder / "loaded.csv"), SLUICE_WARM="0").returncode == 0
    (folder / "new.csv").write_text(CHECKINS + "sansa,2019-01-03 00:00:00 UTC,2,infra\n", encoding="utf-8")
    documents = [moto_view(d) for d in stack.policies("TaskRole")]
    for document in documents:
        for statement in document["Statement"]:
            statement["Action"] = [a for a in as_list(statement["Action"]) if a != "dynamodb:UpdateItem"]
    keys = user_with_policies(stack, f"no-update-{uuid.uuid4().hex[:6]}", documents)

    done = _cli(
        "backfill", str(tmp_path / "landing"), "--json", SLUICE_WARM="0",
        AWS_ACCESS_KEY_ID=keys["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=keys["aws_secret_access_key"],
    )  # fmt: skip

    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr
    body = json.loads(done.stdout)
    results = {Path(r["source"]).name: r for r in body["results"]}
    assert set(results) == {"loaded.csv", "new.csv"} and body["failed"] == 2, body
    assert results["loaded.csv"]["error"].startswith(
        f"already loaded, and its skip could not be recorded: the DynamoDB ledger table "
        f"'{stack.outputs['LedgerTableName']}' in us-east-1: access denied: "
    ), results["loaded.csv"]
    assert "need dynamodb:UpdateItem on it" in results["new.csv"]["error"], results["new.csv"]


def test_sertis_glue_catalog_under_the_task_role(as_task_role: MotoStack) -> None:
    from sluice.cli.runner import run_ingest, run_sertis

    stack = as_task_role
    landing = stack.outputs["LandingUri"].removeprefix("s3://")
    key = "sertis/transactions/transactions-2011-01.csv"
    stack.client("s3").put_object(Bucket=landing, Key=key, Body=SERTIS.encode())

    ingest = run_ingest(f"s3://{landing}/{key}")
    gold = run_sertis()

    assert ingest.status == "success", ingest.error
    assert gold.status == "success", gold.error
    glue = stack.client("glue")
    database = stack.outputs["GlueDatabase"]
    tables = {t["Name"] for t in glue.get_tables(DatabaseName=database)["TableList"]}
    assert {"silver_transactions", "gold_customers"} <= tables
    assert glue.get_partitions(DatabaseName=database, TableName="silver_transactions")["Partitions"]


def test_writes_outside_the_stacks_buckets_are_denied(
    as_task_role: MotoStack, task_keys: dict[str, str], outside_bucket: str
) -> None:
    s3 = as_task_role.client("s3", task_keys)
    landing = as_task_role.outputs["LandingUri"].removeprefix("s3://")
    data = as_task_role.outputs["StagingUri"].removeprefix("s3://").split("/", 1)[0]
    s3.put_object(Bucket=data, Key="staging/probe.txt", Body=b"allowed")  # the control: the policy works
    for bucket, key in [(outside_bucket, "x.txt"), (landing, "tm/dailycheckins/overwrite.csv")]:
        with pytest.raises(ClientError) as denied:
            s3.put_object(Bucket=bucket, Key=key, Body=b"nope")
        assert denied.value.response["Error"]["Code"] == "AccessDenied", (bucket, denied.value.response)
    with pytest.raises(ClientError) as denied:
        s3.delete_object(Bucket=data, Key="staging/probe.txt")  # the zones are append-only for runs
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_an_s3_event_for_an_awkward_key_loads_its_version_under_the_task_role(
    as_task_role: MotoStack,
) -> None:
    """The event path as it runs in ECS: the webhook's event (URL-encoded key, version-id) → the trigger's
    parameters → ingest-file, reading the stack's versioned landing bucket with the task role's grants only."""
    from tests.deploy.test_s3_events import event_parameters, run

    stack = as_task_role
    landing = stack.outputs["LandingUri"].removeprefix("s3://")
    s3 = stack.client("s3")
    # The template versions the bucket (test_cloudformation.py); moto's CloudFormation does not apply it.
    s3.put_bucket_versioning(Bucket=landing, VersioningConfiguration={"Status": "Enabled"})
    key = f"tm/dailycheckins/2024/03/03/daily checkins+{uuid.uuid4().hex[:6]} (ü).csv"
    body = CHECKINS.encode()
    version = s3.put_object(Bucket=landing, Key=key, Body=body)["VersionId"]
    s3.put_object(Bucket=landing, Key=key, Body=b"overwritten since\n")

    report = run(event_parameters(landing, quote_plus(key, safe="/"), version, len(body)))

    assert (report.status, report.rows_loaded) == ("success", 3), report.error


def test_an_object_the_task_role_may_not_read_is_one_readable_failure(
    as_task_role: MotoStack, outside_bucket: str
) -> None:
    """AccessDenied (another bucket; an object under a customer-managed KMS key) names the cause, once."""
    from sluice.cli.runner import run_ingest
    from tests.steps import steps

    stack = as_task_role
    key = "tm/dailycheckins/2024/03/04/dailycheckins.csv"
    stack.client("s3").put_object(Bucket=outside_bucket, Key=key, Body=CHECKINS.encode())

    report = run_ingest(f"s3://{outside_bucket}/{key}")

    assert (report.status, report.state, report.rows_loaded) == ("failed", "extract", 0)
    assert report.error and "access denied" in report.error and "kms:Decrypt" in report.error, report.error
    assert "ClientError" not in report.error
    extract = [s for s in steps(report.flow_run_id, last="extract") if s.name == "extract"]
    assert [s.run_count for s in extract] == [1]  # a permission to grant, not a fault to retry


def test_a_reference_file_the_task_role_may_not_read_is_one_readable_error(
    as_task_role: MotoStack, outside_bucket: str
) -> None:
    """SLUICE_HOLIDAYS_FILE / SLUICE_PRODUCTS_FILE may be s3:// objects: one the role may not read says why."""
    from sluice.adapters import storage
    from sluice.errors import SourceUnreadable

    as_task_role.client("s3").put_object(Bucket=outside_bucket, Key="holidays.csv", Body=b"date\n")
    with pytest.raises(SourceUnreadable, match=r"access denied .*TaskRoleArn"):
        storage.read_bytes(f"s3://{outside_bucket}/holidays.csv")


def test_the_task_roles_other_statements_name_exactly_what_the_flows_used(stack: MotoStack) -> None:
    """moto checks these services' actions only; their resources are pinned here against the resolved policy."""
    (policy,) = stack.policies("TaskRole")
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    out = stack.outputs
    assert by_sid["Alerts"]["Resource"] == out["AlertsTopicArn"]
    assert by_sid["Ledger"]["Resource"].endswith(f":table/{out['LedgerTableName']}")
    assert by_sid["WarehouseUrl"]["Resource"] == out["DatabaseSecretArn"]
    assert "TotesysSourceUrl" not in by_sid  # no Totesys source configured in this stack
    glue = as_list(by_sid["SertisCatalog"]["Resource"])
    assert any(r.endswith(f":database/{out['GlueDatabase']}") for r in glue)
    assert any(r.endswith(f":table/{out['GlueDatabase']}/*") for r in glue)
    assert by_sid["AlertsKey"]["Condition"] == {
        "StringEquals": {"kms:ViaService": f"sns.{out['Region']}.amazonaws.com"}
    }


# --- the push pool's principal: prefect-aws's ECS worker under enforcement -------------------------------------


async def submit_as_push_pool(stack: MotoStack, keys: dict[str, str], variables: dict[str, Any]) -> list[str]:
    """Submit one s3-event run the way the push pool does: prefect-aws's ECS worker with the pool's keys."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect_aws import AwsClientParameters, AwsCredentials
    from prefect_aws.workers.ecs_worker import ECSWorker

    from tests.deploy.test_ecs_worker import submit_through_worker

    template = ECSWorker.get_default_base_job_template()
    credentials = AwsCredentials(
        **keys,
        region_name=stack.outputs["Region"],
        aws_client_parameters=AwsClientParameters(endpoint_url=stack.endpoint),
    )
    run_task_errors: list[str] = []
    async with get_client() as client:
        pool = await client.create_work_pool(
            WorkPoolCreate(name=f"sluice-ecs-{uuid.uuid4().hex[:6]}", type="ecs", base_job_template=template)
        )
        flow_id = await client.create_flow_from_name("ingest-file")
        deployment_id = await client.create_deployment(
            flow_id=flow_id, name="s3-event", work_pool_name=pool.name,
            entrypoint="flows/ingest.py:ingest_file", job_variables=variables,
        )  # fmt: skip
        deployment = await client.read_deployment(deployment_id)
        flow = await client.read_flow(flow_id)
        async with ECSWorker(work_pool_name=pool.name) as worker:
            source = "s3://landing/tm/dailycheckins/1.csv"
            try:
                await submit_through_worker(
                    worker, client, deployment, flow, source, template, variables, credentials
                )
            except ClientError as exc:
                # AccessDenied is a finding; moto 5.2.5's RunTask of a Fargate task whose memory is set on the
                # task fails inside moto (see tests/deploy/test_ecs_worker.py): that gap is tolerated.
                assert exc.response["Error"]["Code"] != "AccessDenied", exc
                assert exc.operation_name == "RunTask", exc
                run_task_errors.append(str(exc))
    return run_task_errors


def test_ecs_worker_submits_with_exactly_the_push_pool_users_permissions(
    stack: MotoStack, task_keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's outputs → prefect.yaml's job variables → the ECS worker's calls, as the push pool's user."""
    import asyncio

    from tests.deploy.test_cloudformation import EXPECTED_OUTPUTS
    from tests.deploy.test_ecs_worker import s3_event_job_variables

    keys = user_with_policies(stack, "push-pool", [moto_view(d) for d in stack.policies("PushPoolUser")])
    env = {EXPECTED_OUTPUTS[k]: v for k, v in stack.outputs.items() if k in EXPECTED_OUTPUTS}
    env |= {"SLUICE_IMAGE_REPO": stack.outputs["EcrRepositoryUri"], "SLUICE_TOTESYS_SOURCE_SECRET_ARN": ""}
    variables = s3_event_job_variables(env, monkeypatch)
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AWS_ECS_WORKER_CREATE_TASK_RUN_MAX_ATTEMPTS", "1")
    # The worker's event observer uses the process's own identity (a hybrid worker's; Prefect Cloud's for a push
    # pool), not the pool's credentials: here, the test's administrator.
    ambient = {
        "AWS_ENDPOINT_URL": stack.endpoint,
        "AWS_DEFAULT_REGION": stack.outputs["Region"],
        "AWS_ACCESS_KEY_ID": stack.admin["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": stack.admin["aws_secret_access_key"],
    }
    for name, value in ambient.items():
        monkeypatch.setenv(name, value)

    run_task_errors = asyncio.run(submit_as_push_pool(stack, keys, variables))

    ecs = stack.client("ecs")
    (arn,) = ecs.list_task_definitions(familyPrefix=variables["family"])["taskDefinitionArns"]
    definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert definition["executionRoleArn"] == stack.outputs["ExecutionRoleArn"]
    tasks = ecs.list_tasks(cluster=stack.outputs["ClusterArn"])["taskArns"]
    assert len(tasks) == 1 or len(run_task_errors) == 1
    # enforcement is on for this principal: what the ECS worker never calls is denied
    with pytest.raises(ClientError) as denied:
        stack.client("secretsmanager", keys).get_secret_value(SecretId=stack.outputs["DatabaseSecretArn"])
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, denied.value.response
