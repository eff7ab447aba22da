"""Every pipeline's deployment run as it runs on ECS, under exactly the stack's task-role policy (IAM enforced by
moto's server: see test_iam_enforced.py's docstring for what moto checks): Totesys (its OLTP URL from the stack's
secret, CSV batches and star-schema Parquet in the data bucket), Data2bots analytics (landed files and reference
lists read from S3, CSV exports written to it), Sertis customers (bronze/silver/gold in S3, Glue catalog) and a
backfill shard (ingest-files, soft mode: bad rows quarantined, an unreadable file quarantined whole). A zone the
role may not write fails in one line, not retried; and the deploy role the README describes runs `sluice aws setup`.

Each run gets the environment its ECS task gets: the ``env`` job variable of its deployment in prefect.yaml, rendered
from this stack's outputs as `prefect deploy` renders it, and nothing else of Sluice's (AWS credentials and the moto
endpoint stand in for the task role; SLUICE_HOME is the test's own folder instead of /tmp/sluice).
"""

from __future__ import annotations

import io
import os
import random
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml
from botocore.exceptions import ClientError

from tests.deploy.conftest import ACCOUNT, MotoStack, as_list, deploy_stack, drain

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROOT = Path(__file__).resolve().parents[2]
ALERTS_BLOCK = (
    "sluice-alerts"  # the block prefect.yaml's SLUICE_NOTIFY_BLOCKS names (`sluice aws setup` saves it)
)
KEEP = {"SLUICE_RETRY_DELAY_SECONDS"}  # the test session's own (short back-off), not a deployment's setting


@pytest.fixture(scope="module")
def totesys_source(pg_url: str) -> Iterator[str]:
    """An OLTP of its own (a new database on the session's PostgreSQL), seeded with a small generated snapshot."""
    from sluice.adapters.totesys_source import source_engine
    from sluice.fakes.totesys import generate, seed

    name = f"sluice_iam_oltp_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_url.replace("/postgres?", f"/{name}?", 1)
    engine = source_engine(url)
    seed(engine, generate(15, random.Random(5)))
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def stack(moto_server: str, fresh_warehouse: str, totesys_source: str) -> MotoStack:
    """The stack with a Totesys source configured (its secret, the task role's grant on it, the output)."""
    return deploy_stack(moto_server, warehouse_url=fresh_warehouse, totesys_source=totesys_source)


def deployment_env(stack: MotoStack, entrypoint: str, name: str) -> dict[str, str]:
    """The ``env`` job variable of prefect.yaml's deployment (entrypoint, name), rendered from the stack's outputs
    the way `sluice aws setup` + `prefect deploy` do."""
    from tests.deploy.test_cloudformation import EXPECTED_OUTPUTS
    from tests.deploy.test_prefect_yaml import rendered

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = [d for d in spec["deployments"] if (d["entrypoint"], d["name"]) == (entrypoint, name)]
    outputs = {EXPECTED_OUTPUTS[k]: v for k, v in stack.outputs.items() if k in EXPECTED_OUTPUTS}
    outputs |= {
        "SLUICE_IMAGE_REPO": stack.outputs["EcrRepositoryUri"],
        "SLUICE_PREFECT_API_KEY_SECRET_ARN": "",
    }
    with (
        pytest.MonkeyPatch.context() as scratch
    ):  # rendering sets the outputs as env vars: not the task's env
        variables = rendered(deployment, outputs, scratch)["work_pool"]["job_variables"]
    return {k: str(v) for k, v in variables["env"].items()}


@pytest.fixture(scope="module")
def alerts_block(stack: MotoStack, task_keys: dict[str, str]) -> str:
    """The alerts block as `sluice aws setup` saves it: the stack's topic, the ambient (task role) credentials."""
    from prefect_aws import AwsCredentials

    from sluice.adapters.notify import SnsNotification

    SnsNotification(
        topic_arn=stack.outputs["AlertsTopicArn"],
        aws_credentials=AwsCredentials(region_name=stack.outputs["Region"]),
    ).save(ALERTS_BLOCK, overwrite=True)
    return ALERTS_BLOCK


@pytest.fixture
def on_ecs(
    stack: MotoStack,
    task_keys: dict[str, str],
    alerts_block: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[str, str], dict[str, str]]]:
    """``on_ecs(entrypoint, deployment)``: this process gets that deployment's ECS task environment (only it),
    with the task role's credentials; returns the env."""
    from sluice.adapters.storage import reset_clients
    from sluice.adapters.warehouse import dispose_engines, secret_value
    from sluice.settings import reload_settings

    def enter(entrypoint: str, name: str) -> dict[str, str]:
        env = deployment_env(stack, entrypoint, name)
        for variable in [v for v in os.environ if v.startswith("SLUICE_") and v not in KEEP]:
            monkeypatch.delenv(variable)
        for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(variable, raising=False)
        ambient = {
            "AWS_ENDPOINT_URL": stack.endpoint,
            "AWS_ACCESS_KEY_ID": task_keys["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": task_keys["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": stack.outputs["Region"],
        }
        for variable, value in {**env, **ambient, "SLUICE_HOME": str(tmp_path / "home")}.items():
            monkeypatch.setenv(variable, value)
        # boto3.client() reuses one default session, which keeps the credentials it resolved first: start afresh.
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        secret_value.cache_clear()
        dispose_engines()
        reset_clients()
        reload_settings()
        return env

    yield enter
    secret_value.cache_clear()
    dispose_engines()
    monkeypatch.undo()
    reset_clients()
    reload_settings()


def bucket_of(uri: str) -> str:
    return uri.removeprefix("s3://").split("/", 1)[0]


def keys_under(stack: MotoStack, uri: str) -> list[str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    pages = stack.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def read_object(stack: MotoStack, bucket: str, key: str) -> bytes:
    return stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def ledger_items(stack: MotoStack, dataset: str) -> list[dict[str, Any]]:
    items = stack.client("dynamodb").scan(TableName=stack.outputs["LedgerTableName"])["Items"]
    return [item for item in items if item["ingestedTable"]["S"] == dataset]


def subjects(stack: MotoStack, queue: str) -> list[str]:
    return [message["Subject"] for message in drain(stack, queue)]


# --- Totesys: every-20-minutes ------------------------------------------------------------------------------


def test_a_zone_the_task_role_may_not_write_fails_the_cycle_once_with_what_to_grant(
    on_ecs: Callable[[str, str], dict[str, str]],
    stack: MotoStack,
    outside_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Totesys zone set outside the stack's data bucket (SLUICE_TOTESYS_INGESTION_URI): the extract fails once
    with the location and the grant, nothing loads, no watermark moves (the next test's cycle loads everything).
    Was boto3's "S3UploadFailedError: Failed to upload /tmp/.../address.csv to ...: An error occurred
    (AccessDenied)", retried three times."""
    from sluice.cli.runner import run_totesys
    from sluice.settings import reload_settings
    from tests.steps import steps

    on_ecs("flows/totesys.py:totesys", "every-20-minutes")
    monkeypatch.setenv("SLUICE_TOTESYS_INGESTION_URI", f"s3://{outside_bucket}/totesys/ingestion")
    reload_settings()

    report = run_totesys()

    assert (report.status, report.state, report.rows_loaded) == ("failed", "extract", 0)
    assert report.error and report.error.startswith(f"s3://{outside_bucket}/totesys/ingestion/address/"), (
        report.error
    )
    assert "access denied writing it (AccessDenied): this principal needs s3:PutObject on" in report.error
    assert "stack's data bucket only" in report.error
    assert "S3UploadFailedError" not in report.error and "/tmp/" not in report.error
    extract = [s for s in steps(report.flow_run_id, last="extract") if s.name == "extract"]
    assert [s.run_count for s in extract] == [1]  # a permission to grant, not a fault to retry
    assert not keys_under(stack, f"s3://{outside_bucket}/totesys/")


def test_writing_where_the_task_role_may_not_or_to_no_bucket_is_one_readable_error(
    on_ecs: Callable[[str, str], dict[str, str]],
    stack: MotoStack,
    outside_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both S3 writes (put_bytes: exports, gold, error.json; put_file: batches, Parquet, quarantined rows)."""
    from sluice.adapters import storage
    from sluice.errors import DestinationUnwritable

    on_ecs("flows/data2bots.py:data2bots", "daily")
    local = tmp_path / "export.csv"
    local.write_text("a\n1\n")
    for write in (lambda uri: storage.put_bytes(b"a\n1\n", uri), lambda uri: storage.put_file(local, uri)):
        with pytest.raises(
            DestinationUnwritable, match=r"^s3://someone-elses-bucket/exports/x\.csv: access denied "
        ):
            write(f"s3://{outside_bucket}/exports/x.csv")
    # a mistyped bucket, for a principal that may write anywhere (the task role is denied before S3 looks)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", stack.admin["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stack.admin["aws_secret_access_key"])
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    storage.reset_clients()
    for write in (lambda uri: storage.put_bytes(b"a\n1\n", uri), lambda uri: storage.put_file(local, uri)):
        with pytest.raises(DestinationUnwritable, match=r"no such bucket 'sluice-data-typo'"):
            write("s3://sluice-data-typo/staging/x.csv")


def test_totesys_cycle_reads_its_source_secret_and_writes_batches_and_parquet_under_the_task_role(
    on_ecs: Callable[[str, str], dict[str, str]], stack: MotoStack, alerts_queue: str
) -> None:
    """The OLTP URL comes from the stack's TotesysSourceSecret (SLUICE_TOTESYS_SOURCE_SECRET_ARN, given to this
    deployment only); the cycle's CSV batches and star-schema Parquet go to the data bucket's staging zone."""
    from sluice.adapters.warehouse import get_engine, secret_value
    from sluice.cli.runner import run_totesys

    env = on_ecs("flows/totesys.py:totesys", "every-20-minutes")
    assert env["SLUICE_TOTESYS_SOURCE_SECRET_ARN"] == stack.outputs["TotesysSourceSecretArn"]
    drain(stack, alerts_queue)

    first = run_totesys()
    idle = run_totesys()

    assert (first.status, first.error) == ("success", None)
    assert first.rows_loaded > 0 and first.extracted["sales_order"] == 15
    assert idle.status == "skipped", idle.error  # the watermarks moved: nothing new
    assert (
        secret_value.cache_info().currsize == 2
    )  # the warehouse's and the OLTP's URLs, from Secrets Manager
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM warehouse.fact_sales_order")).scalar_one() == 15
    staging = env["SLUICE_STAGING_URI"]
    batches = keys_under(stack, f"{staging}/totesys/ingestion/")
    processed = keys_under(stack, f"{staging}/totesys/processed/")
    assert any("sales_order" in k and k.endswith(".csv") for k in batches), batches
    facts = [k for k in processed if "fact_sales_order" in k and k.endswith(".parquet")]
    assert facts, processed
    table = pq.read_table(io.BytesIO(read_object(stack, bucket_of(staging), facts[0])))
    assert table.num_rows == 15
    statuses = {item["ingestedID"]["S"]: item["status"]["S"] for item in ledger_items(stack, "totesys")}
    assert (statuses[first.run_id], statuses[idle.run_id]) == ("success", "skipped"), statuses
    assert [s for s in subjects(stack, alerts_queue) if s.startswith("[sluice] OK totesys")], "no alert"


# --- Data2bots: ingest the day's files, then analytics/daily --------------------------------------------------

ORDERS = (
    "order_id,customer_id,order_date,product_id,unit_price,quantity,total_price\n"
    "1,5,2022-07-13,24,139,10,1390\n2,14,2022-07-04,2,273,4,1092\n3,9,2022-06-20,24,139,1,139\n"
    "4,5,2022-07-15,2,273,2,546\n"
)
REVIEWS = "review,product_id\n5,24\n3,2\n4,24\n"
SHIPMENTS = (
    "shipment_id,order_id,shipment_date,delivery_date\n"
    "1,1,2022-07-14,\n2,2,,\n3,3,2022-06-27,\n4,4,2022-07-16,2022-07-18\n"
)
HOLIDAYS = "date\n2022-07-04\n2022-12-25\n"
PRODUCTS = "product_id,product_category,product_name\n2,toys,kite\n24,books,atlas\n"


def test_analytics_reads_landed_and_reference_files_and_writes_its_exports_under_the_task_role(
    on_ecs: Callable[[str, str], dict[str, str]],
    stack: MotoStack,
    alerts_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The three files land and load (s3-event), then analytics/daily builds the day from reference lists kept in
    the data bucket (SLUICE_HOLIDAYS_FILE / SLUICE_PRODUCTS_FILE as s3://) and writes its CSV exports there."""
    from sluice.cli.runner import run_data2bots, run_ingest
    from sluice.settings import reload_settings

    env = on_ecs("flows/ingest.py:ingest_file", "s3-event")
    landing = bucket_of(env["SLUICE_LANDING_URI"])
    data = bucket_of(env["SLUICE_STAGING_URI"])
    s3 = stack.client("s3")
    loaded = {}
    for key, body in {
        "data2bots/orders/orders-2022-07-15.csv": ORDERS,
        "data2bots/reviews/reviews-2022-07-15.csv": REVIEWS,
        "data2bots/shipment_deliveries/shipment_deliveries-2022-07-15.csv": SHIPMENTS,
    }.items():
        s3.put_object(Bucket=landing, Key=key, Body=body.encode())
        report = run_ingest(f"s3://{landing}/{key}")
        loaded[report.dataset] = (report.status, report.rows_loaded, report.error)
    assert loaded == {
        "orders": ("success", 4, None),
        "reviews": ("success", 3, None),
        "shipment_deliveries": ("success", 4, None),
    }
    s3.put_object(Bucket=data, Key="reference/public_holidays.csv", Body=HOLIDAYS.encode())
    s3.put_object(Bucket=data, Key="reference/products.csv", Body=PRODUCTS.encode())

    env = on_ecs("flows/data2bots.py:data2bots", "daily")
    monkeypatch.setenv("SLUICE_HOLIDAYS_FILE", f"s3://{data}/reference/public_holidays.csv")
    monkeypatch.setenv("SLUICE_PRODUCTS_FILE", f"s3://{data}/reference/products.csv")
    reload_settings()
    drain(stack, alerts_queue)

    report = run_data2bots(refresh_reference=True)

    assert (report.status, report.error) == ("success", None)
    assert str(report.as_of) == "2022-07-15"
    exports = report.exports
    assert set(exports) == {"agg_public_holiday", "agg_shipments", "best_performing_product"}, exports
    for uri in exports.values():
        assert uri.startswith(f"{env['SLUICE_STAGING_URI']}/analytics_export/"), uri
    best = read_object(stack, data, exports["best_performing_product"].removeprefix(f"s3://{data}/")).decode()
    assert "atlas" in best, best  # the product's name came from the products list in S3
    holidays = read_object(stack, data, exports["agg_public_holiday"].removeprefix(f"s3://{data}/")).decode()
    assert holidays.splitlines()[1].split(",")[7] == "1", holidays  # tt_order_hol_jul: 2022-07-04, from S3
    assert [i["status"]["S"] for i in ledger_items(stack, "analytics")] == ["success"]
    assert [s for s in subjects(stack, alerts_queue) if s.startswith("[sluice] OK analytics")], "no alert"


# --- Sertis: ingest (bronze, silver) then customers/daily (gold) ----------------------------------------------

SERTIS = (
    "transactionId|custId|transactionDate|productSold|unitsSold\n"
    "1|0000001|2011-01-01|A|3\n1|0000001|2011-01-02|B|2\n2|0000002|2011-01-05|B|9\n"
    "3|0000001|2011-01-03|B|5\n"
)


def test_customers_end_to_end_writes_bronze_silver_and_gold_under_the_task_role(
    on_ecs: Callable[[str, str], dict[str, str]], stack: MotoStack, alerts_queue: str
) -> None:
    from sluice.cli.runner import run_ingest, run_sertis

    env = on_ecs("flows/ingest.py:ingest_file", "s3-event")
    landing = bucket_of(env["SLUICE_LANDING_URI"])
    key = f"sertis/transactions/transactions-{uuid.uuid4().hex[:6]}.csv"
    stack.client("s3").put_object(Bucket=landing, Key=key, Body=SERTIS.encode())
    ingest = run_ingest(f"s3://{landing}/{key}")
    assert (ingest.status, ingest.rows_loaded) == ("success", 4), ingest.error

    env = on_ecs("flows/sertis.py:sertis", "daily")
    drain(stack, alerts_queue)
    gold = run_sertis()

    assert (gold.status, gold.error) == ("success", None)
    staging = env["SLUICE_STAGING_URI"]
    data = bucket_of(staging)
    name = key.rsplit("/", 1)[-1]
    bronze = keys_under(stack, f"{staging}/sertis/bronze/")
    assert [k for k in bronze if k.endswith(f"/{name}")], bronze
    assert read_object(stack, data, next(k for k in bronze if k.endswith(f"/{name}"))) == SERTIS.encode()
    silver = [k for k in keys_under(stack, f"{staging}/sertis/silver/") if f"/{name}." in k]
    assert len(silver) == 1 and pq.read_table(io.BytesIO(read_object(stack, data, silver[0]))).num_rows == 4
    (gold_key,) = keys_under(stack, f"{staging}/sertis/gold/")
    assert gold_key.endswith("/sertis/gold/customers.parquet")
    gold_table = pq.read_table(io.BytesIO(read_object(stack, data, gold_key)))
    customers = {r["customer_id"]: r for r in gold_table.to_pylist()}
    assert customers["0000001"]["favourite_product"] == "B" and customers["0000001"]["longest_streak"] == 3
    glue = stack.client("glue")
    tables = {t["Name"] for t in glue.get_tables(DatabaseName=env["SLUICE_GLUE_DATABASE"])["TableList"]}
    assert {"silver_transactions", "gold_customers"} <= tables
    assert [i["status"]["S"] for i in ledger_items(stack, "customers")] == ["success"]
    assert [s for s in subjects(stack, alerts_queue) if s.startswith("[sluice] OK customers")], "no alert"


def test_a_staging_zone_the_task_role_may_not_use_fails_the_publish_once_and_says_force_writes_it_later(
    on_ecs: Callable[[str, str], dict[str, str]],
    stack: MotoStack,
    outside_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SLUICE_STAGING_URI outside the data bucket: the transactions load, then bronze cannot be looked at (HEAD,
    403). Was botocore's "An error occurred (403) when calling the HeadObject operation: Forbidden", retried; and a
    plain re-run is "already loaded", so the error says how the zones get written once it is fixed."""
    from sluice.cli.runner import run_ingest
    from sluice.settings import reload_settings
    from tests.steps import steps

    env = on_ecs("flows/ingest.py:ingest_file", "s3-event")
    landing = bucket_of(env["SLUICE_LANDING_URI"])
    key = f"sertis/transactions/transactions-{uuid.uuid4().hex[:6]}.csv"
    body = SERTIS.replace("|0000002|", "|0000042|")  # content of its own: not skipped as already loaded
    stack.client("s3").put_object(Bucket=landing, Key=key, Body=body.encode())
    monkeypatch.setenv("SLUICE_STAGING_URI", f"s3://{outside_bucket}/staging")
    reload_settings()

    denied = run_ingest(f"s3://{landing}/{key}")

    assert (denied.status, denied.state) == ("failed", "publish")
    assert denied.error and denied.error.startswith(f"s3://{outside_bucket}/staging/sertis/bronze/"), (
        denied.error
    )
    assert "access denied looking at it before writing it (403)" in denied.error
    assert "HeadObject" not in denied.error
    assert denied.error.endswith(
        "ingest it again with --force (force=true for a deployment run) to write its zones"
    )
    publish = [s for s in steps(denied.flow_run_id, last="publish") if s.name == "publish"]
    assert [s.run_count for s in publish] == [1]

    monkeypatch.setenv("SLUICE_STAGING_URI", env["SLUICE_STAGING_URI"])
    reload_settings()
    forced = run_ingest(f"s3://{landing}/{key}", force=True)

    assert forced.status == "success", forced.error
    name = key.rsplit("/", 1)[-1]
    written = keys_under(stack, f"{env['SLUICE_STAGING_URI']}/sertis/")
    assert [k for k in written if "/bronze/" in k and k.endswith(f"/{name}")], written
    assert [k for k in written if "/silver/" in k and f"/{name}." in k], written


# --- backfill: one ingest-files/backfill shard, soft mode ------------------------------------------------------

CHECKINS = (
    "user,timestamp,hours,project\n"
    "ned,2019-09-26 00:00:00 UTC,4.0,bizdev\n"
    "jaime,2018-12-20 00:00:00 UTC,1.5,project-00\n"
)


def test_a_backfill_shard_ingests_its_files_and_quarantines_bad_rows_and_files_under_the_task_role(
    on_ecs: Callable[[str, str], dict[str, str]], stack: MotoStack
) -> None:
    """The shard's sources (what `sluice backfill --deployment ingest-files/backfill` sends) read from the landing
    bucket; a bad row (soft mode) and a file that cannot be read as CSV go to the quarantine zone."""
    from flows.ingest_files import ingest_files
    from sluice.runtime import in_process_run

    env = on_ecs("flows/ingest_files.py:ingest_files", "backfill")
    landing = bucket_of(env["SLUICE_LANDING_URI"])
    tag = uuid.uuid4().hex[:6]
    files = {
        f"tm/dailycheckins/2024/04/01/good-{tag}.csv": CHECKINS,
        f"tm/dailycheckins/2024/04/02/bad-row-{tag}.csv": CHECKINS.replace("ned,", "arya,")
        + "bran,2019-01-01 00:00:00 UTC,25,infra\n",
        f"tm/dailycheckins/2024/04/03/not-csv-{tag}.csv": "\x00\x01\x02 not a checkins file\n",
    }
    s3 = stack.client("s3")
    for key, body in files.items():
        s3.put_object(Bucket=landing, Key=key, Body=body.encode())
    sources = [f"s3://{landing}/{key}" for key in files]

    with in_process_run():
        state = ingest_files(sources=sources, dataset="dailycheckins", mode="soft", return_state=True)

    quarantine = env["SLUICE_QUARANTINE_URI"]
    quarantined = keys_under(stack, f"{quarantine}/dailycheckins/")
    assert [k for k in quarantined if f"bad-row-{tag}.csv." in k and k.endswith(".rows.csv")], quarantined
    assert [k for k in quarantined if f"not-csv-{tag}.csv." in k and k.endswith(".error.json")], quarantined
    statuses = {
        item["source"]["S"].rsplit("/", 1)[-1]: item["status"]["S"]
        for item in ledger_items(stack, "dailycheckins")
    }
    assert statuses == {
        f"good-{tag}.csv": "success",
        f"bad-row-{tag}.csv": "success",
        f"not-csv-{tag}.csv": "fail",
    }, statuses
    assert state.is_failed()  # one file of the shard failed (and says so in its own run)


def test_a_quarantine_the_task_role_may_not_write_loads_nothing_and_the_file_loads_once_it_is_fixed(
    on_ecs: Callable[[str, str], dict[str, str]],
    stack: MotoStack,
    outside_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Soft mode with SLUICE_QUARANTINE_URI outside the data bucket: the bad row cannot be kept, so none of the file
    loads (no good rows without their bad ones); with the stack's quarantine, the same file loads."""
    from sluice.adapters.warehouse import get_engine
    from sluice.cli.runner import run_ingest
    from sluice.settings import reload_settings

    env = on_ecs("flows/ingest.py:ingest_file", "s3-event")
    landing = bucket_of(env["SLUICE_LANDING_URI"])
    key = f"tm/dailycheckins/2024/04/09/quarantine-{uuid.uuid4().hex[:6]}.csv"
    body = CHECKINS.replace("ned,", "sansa,") + "rickon,2019-01-01 00:00:00 UTC,99,infra\n"
    stack.client("s3").put_object(Bucket=landing, Key=key, Body=body.encode())
    monkeypatch.setenv("SLUICE_QUARANTINE_URI", f"s3://{outside_bucket}/quarantine")
    reload_settings()

    denied = run_ingest(f"s3://{landing}/{key}", mode="soft")

    assert (denied.status, denied.rows_loaded) == ("failed", 0), denied.error
    assert denied.error and denied.error.startswith(f"s3://{outside_bucket}/quarantine/dailycheckins/")
    assert "access denied writing it" in denied.error and "S3UploadFailedError" not in denied.error
    with get_engine().connect() as conn:
        found = "SELECT count(*) FROM tm.daily_checkins WHERE username = 'sansa'"
        assert conn.execute(sa.text(found)).scalar_one() == 0

    monkeypatch.setenv("SLUICE_QUARANTINE_URI", env["SLUICE_QUARANTINE_URI"])
    reload_settings()
    fixed = run_ingest(f"s3://{landing}/{key}", mode="soft")

    assert (fixed.status, fixed.rows_loaded, fixed.rows_quarantined) == ("success", 2, 1), fixed.error
    with get_engine().connect() as conn:
        assert conn.execute(sa.text(found)).scalar_one() == 1


def test_the_deploy_role_the_readme_describes_is_all_that_sluice_aws_setup_and_the_registry_login_call(
    stack: MotoStack, task_keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """README 'Deploy to AWS' (CI/CD): AWS_DEPLOY_ROLE_ARN "may call cloudformation:DescribeStacks on the stack,
    secretsmanager:GetSecretValue on PushPoolCredentialsSecretArn, ecr:GetAuthorizationToken and push images to the
    stack's repository". That policy, and nothing else, runs `sluice aws setup` and prefect.yaml's ECR login."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    from sluice.cli.aws import configure_prefect, stack_environment
    from sluice.settings import reload_settings
    from tests.deploy.conftest import REGION, moto_view, user_with_policies
    from tests.deploy.test_cli_aws import full_environment

    full = full_environment(
        stack
    )  # the push pool's secret, which moto's CloudFormation skips (as administrator)
    name = stack.resolve.refs["AWS::StackName"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "cloudformation:DescribeStacks",
                "Resource": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{name}/*",
            },
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": full["SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN"],
            },
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:InitiateLayerUpload",
                    "ecr:UploadLayerPart",
                    "ecr:CompleteLayerUpload",
                    "ecr:PutImage",
                    "ecr:BatchGetImage",
                ],
                "Resource": stack.resolve.atts[("Repository", "Arn")],
            },
        ],
    }
    # the README names exactly these actions (its paragraph on CI/CD), so a user who copies it gets this policy
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("`AWS_DEPLOY_ROLE_ARN` (a role") :].split("\n\n", 1)[0]
    granted = {
        a
        for st in policy["Statement"]
        for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
    }
    assert set(re.findall(r"`((?:cloudformation|secretsmanager|ecr):[A-Za-z]+)`", paragraph)) == granted
    keys = user_with_policies(stack, "sluice-deploy", [moto_view(policy)])
    for variable in [v for v in os.environ if v.startswith("SLUICE_") and v not in KEEP]:
        monkeypatch.delenv(variable)
    ambient = {
        "AWS_ENDPOINT_URL": stack.endpoint,
        "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": REGION,
    }
    for variable, value in ambient.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    reload_settings()

    env = stack_environment(name, REGION)
    env["SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN"] = full["SLUICE_PUSH_POOL_CREDENTIALS_SECRET_ARN"]
    made = run_coro_as_sync(configure_prefect(env, f"sluice-ecs-{uuid.uuid4().hex[:6]}", "ecs", REGION))
    token = boto3.client("ecr").get_authorization_token()["authorizationData"]

    assert env["SLUICE_TASK_ROLE_ARN"] == stack.outputs["TaskRoleArn"]
    assert made and "work pool" in made and token
    with pytest.raises(ClientError) as denied:  # enforcement is on for this principal
        boto3.client("s3").list_objects_v2(Bucket=bucket_of(stack.outputs["LandingUri"]))
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    reload_settings()


def test_the_task_roles_totesys_grant_names_exactly_the_source_secret(stack: MotoStack) -> None:
    """moto checks Secrets Manager actions only: the statement's resource is pinned here to the stack's secret."""
    (policy,) = stack.policies("TaskRole")
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["TotesysSourceUrl"]["Action"] == "secretsmanager:GetSecretValue"
    assert as_list(by_sid["TotesysSourceUrl"]["Resource"]) == [stack.outputs["TotesysSourceSecretArn"]]
