"""Every real S3 upload through the event path, the first time: the EventBridge body rendered by the webhook template,
the trigger's parameters rendered from that event, and the ``ingest-file`` run those parameters start, against a
versioned bucket on moto's server (the stack's landing bucket is versioned, so every real event has a version-id).

S3's event notifications carry the object key URL-encoded (``red flower.jpg`` arrives as ``red+flower.jpg``); AWS's
own Lambda Powertools decodes EventBridge's ``detail.object.key`` the same way (``unquote_plus``,
``S3EventBridgeNotificationObject.key``). So each awkward key is sent both raw and encoded, and both must load the
object and the version the event is about.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
import sqlalchemy as sa

from tests.deploy.test_prefect_yaml import deployments, render, sample_body, webhook_event
from tests.deploy.test_runs import flow_run
from tests.steps import steps

pytestmark = pytest.mark.usefixtures("prefect_harness")

HEADER = "user,timestamp,hours,project\n"


def rows(*users: str) -> bytes:
    return (HEADER + "".join(f"{u},2019-01-02 10:00:00 UTC,2,infra\n" for u in users)).encode()


def event_parameters(bucket: str, key_in_event: str, version_id: str | None, size: int) -> dict[str, str]:
    """The ``ingest-file/s3-event`` parameters for an EventBridge body: webhook template → event → trigger."""
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    body = sample_body()
    body["detail"]["bucket"]["name"] = bucket
    body["detail"]["object"].update(key=key_in_event, size=size)
    if version_id is None:
        body["detail"]["object"].pop("version-id", None)
    else:
        body["detail"]["object"]["version-id"] = version_id
    event = webhook_event(body)
    spec = deployments()[("ingest-file", "s3-event")]["triggers"]
    trigger = _initialize_deployment_triggers("s3-event", copy.deepcopy(spec))[0]
    return {name: render(template, {"event": event}) for name, template in trigger.parameters.items()}


def loaded_users(pg_url: str) -> set[str]:
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT username FROM tm.daily_checkins")).scalars())


def run(parameters: dict[str, str]) -> Any:
    from flows.ingest import ingest_file
    from sluice.report import report_of
    from sluice.runtime import in_process_run

    with in_process_run():
        state = ingest_file(**parameters, return_state=True)
    return report_of(state, None, parameters["source"])


KEYS = [
    "tm/dailycheckins/with space/daily checkins (1).csv",
    "tm/dailycheckins/a+b/plus+sign.csv",
    "tm/dailycheckins/dt=2024-03-01/part=1.csv",
    "tm/dailycheckins/100%/50% done.csv",
    "tm/dailycheckins/ünïcödé/チェックイン.csv",
    "tm/dailycheckins//double//slash.csv",
    'tm/dailycheckins/quotes/it\'s "quoted" & <tagged>.csv',
    "tm/dailycheckins/long/" + "ü" * 100 + ".csv",  # a 200-byte basename, 255 bytes with a suffix
]
ENCODINGS = {
    "raw": lambda key: key,
    "url-encoded": lambda key: quote_plus(key, safe="/"),  # as S3's notifications encode keys
    "every-character-encoded": lambda key: quote_plus(key, safe=""),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("key", KEYS)
def test_an_event_for_an_awkward_key_loads_the_object_and_the_version_it_is_about(
    sluice_env: Path, pg_url: str, landing: tuple[Any, str], key: str, encoding: str
) -> None:
    s3, bucket = landing
    user = f"u{uuid.uuid4().hex[:8]}"
    body = rows(user)
    version = s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]
    s3.put_object(Bucket=bucket, Key=key, Body=rows("overwritten"))  # overwritten before the run starts

    parameters = event_parameters(bucket, ENCODINGS[encoding](key), version, len(body))
    report = run(parameters)

    assert (report.status, report.rows_loaded) == ("success", 1), report.error
    assert report.dataset == "dailycheckins"
    assert loaded_users(pg_url) == {user}  # the event's version, not what the key holds now
    # The run records and reports the object's real key, whatever form the event carried it in.
    from sluice.ledger import get_ledger

    assert report.source == f"s3://{bucket}/{key}"
    assert {e.source for e in get_ledger().history(uuid.UUID(report.run_id))} == {f"s3://{bucket}/{key}"}


def test_a_long_key_loads_and_its_bad_rows_are_quarantined(
    sluice_env: Path, landing: tuple[Any, str]
) -> None:
    s3, bucket = landing
    key = "tm/dailycheckins/2024/03/01/" + "d" * 300 + "-dailycheckins.csv"  # S3 allows 1,024 bytes
    body = rows("jon") + b"bran,2019-01-01 00:00:00 UTC,25,infra\n"  # 25 hours: a bad row
    version = s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]

    report = run({**event_parameters(bucket, key, version, len(body)), "mode": "soft"})

    assert (report.status, report.rows_loaded, report.rows_quarantined) == ("success", 1, 1), report.error
    assert report.quarantine_uri and Path(report.quarantine_uri).is_file()


def test_a_folder_marker_is_skipped_and_recorded_not_failed(
    sluice_env: Path, landing: tuple[Any, str]
) -> None:
    """The console's "Create folder" (and some sync tools) put a 0-byte ``tm/dailycheckins/``: an Object Created."""
    from sluice.ledger import get_ledger

    s3, bucket = landing
    version = s3.put_object(Bucket=bucket, Key="tm/dailycheckins/", Body=b"")["VersionId"]

    report = run(event_parameters(bucket, "tm/dailycheckins/", version, 0))

    assert report.status == "skipped", report.error
    assert "folder" in (report.error or "")
    entries = [e for run in get_ledger().recent(10) for e in run if e.source.endswith("tm/dailycheckins/")]
    assert [(e.status, e.state) for e in entries] == [("skipped", "extract")]
    assert flow_run(entries[0].flow_run_id).name == f"folder marker · s3://{bucket}/tm/dailycheckins/"


def test_an_object_named_as_a_folder_that_holds_bytes_fails_as_in_a_backfill(
    sluice_env: Path, landing: tuple[Any, str]
) -> None:
    """``tm/dailycheckins/dir.csv/`` holding a CSV: its event was skipped as a folder marker (no alert under the
    default policy), where a backfill of the same prefix reports it failed: data landed and nobody was told."""
    from sluice.ledger import get_ledger

    s3, bucket = landing
    key = "tm/dailycheckins/dir.csv/"
    body = rows("arya")
    version = s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]

    report = run(event_parameters(bucket, key, version, len(body)))

    assert report.status == "failed", report.error
    assert report.error == (
        f"s3://{bucket}/{key}: an object of {len(body)} bytes whose key ends in '/' (a folder's name): copy it "
        "to a key with a file name to load it"
    )
    entries = [e for run in get_ledger().recent(10) for e in run if e.source.endswith(key)]
    assert [(e.status, e.state) for e in entries] == [("fail", "extract")]


@pytest.mark.usefixtures("landing")
def test_an_event_for_a_bucket_that_is_gone_says_so_as_a_backfill_does(sluice_env: Path) -> None:
    """It said "object not found", where a backfill of the same bucket says "no such bucket"."""
    bucket = f"gone-{uuid.uuid4().hex[:8]}"
    report = run(event_parameters(bucket, "tm/dailycheckins/x.csv", None, 10))
    assert report.status == "failed"
    assert report.error == f"s3://{bucket}/tm/dailycheckins/x.csv: no such bucket '{bucket}'"


def test_an_object_no_dataset_claims_is_skipped_naming_its_key(
    sluice_env: Path, landing: tuple[Any, str]
) -> None:
    """An event for a key under another prefix is not a failure; the message speaks of the key (a local file's
    speaks of its name)."""
    s3, bucket = landing
    version = s3.put_object(Bucket=bucket, Key="notes/readme.txt", Body=b"x\n")["VersionId"]

    report = run(event_parameters(bucket, "notes/readme.txt", version, 2))

    assert report.status == "skipped", report.error
    assert report.error == (
        f"s3://{bucket}/notes/readme.txt: no registered dataset claims this key; skipped "
        "(--dataset NAME loads it as NAME)"
    )


def test_the_run_of_an_encoded_key_is_named_after_the_dataset_that_loads_it(
    sluice_env: Path, pg_url: str, landing: tuple[Any, str]
) -> None:
    s3, bucket = landing
    key = "data2bots/reviews/all reviews.csv"  # claimed by its folder only: data2bots/reviews/*
    body = b"review,product_id\n4,10\n"
    version = s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]

    report = run(event_parameters(bucket, quote_plus(key, safe=""), version, len(body)))

    assert (report.status, report.dataset) == ("success", "reviews"), report.error
    assert flow_run(report.flow_run_id).name.startswith("reviews · ")
    with sa.create_engine(pg_url, poolclass=sa.pool.NullPool).begin() as conn:  # hermetic: Data2bots reads it
        conn.execute(sa.text("TRUNCATE staging.reviews"))


def test_a_version_deleted_before_the_run_is_one_readable_failure_not_retried(
    sluice_env: Path, landing: tuple[Any, str]
) -> None:
    s3, bucket = landing
    key = "tm/dailycheckins/2024/03/01/deleted checkins.csv"
    version = s3.put_object(Bucket=bucket, Key=key, Body=rows("gone"))["VersionId"]
    s3.delete_object(Bucket=bucket, Key=key, VersionId=version)  # the version itself, permanently

    report = run(event_parameters(bucket, quote_plus(key, safe="/"), version, 10))

    assert (report.status, report.state) == ("failed", "extract")
    assert report.error and "not found" in report.error and version in report.error, report.error
    assert "ClientError" not in report.error and "NoSuchVersion" not in report.error
    extract = [s for s in steps(report.flow_run_id, last="extract") if s.name == "extract"]
    assert [s.run_count for s in extract] == [1]  # a missing object is not retried


def test_a_key_deleted_before_the_run_still_loads_the_version_the_event_is_about(
    sluice_env: Path, pg_url: str, landing: tuple[Any, str]
) -> None:
    s3, bucket = landing
    key = "tm/dailycheckins/2024/03/01/soon deleted.csv"
    version = s3.put_object(Bucket=bucket, Key=key, Body=rows("kept"))["VersionId"]
    s3.delete_object(Bucket=bucket, Key=key)  # a delete marker: the version is still there

    report = run(event_parameters(bucket, quote_plus(key, safe="/"), version, 10))

    assert (report.status, report.rows_loaded) == ("success", 1), report.error
    assert loaded_users(pg_url) == {"kept"}


def test_the_same_event_delivered_twice_loads_once_and_the_second_is_a_recorded_skip(
    sluice_env: Path, pg_url: str, landing: tuple[Any, str]
) -> None:
    """EventBridge delivers at least once: a duplicate is normal, not an error."""
    from sluice.ledger import get_ledger

    s3, bucket = landing
    key = "tm/dailycheckins/2024/03/01/twice checkins.csv"
    body = rows("once")
    version = s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]
    parameters = event_parameters(bucket, quote_plus(key, safe="/"), version, len(body))

    first, second = run(parameters), run(parameters)

    assert (first.status, first.rows_loaded) == ("success", 1), first.error
    assert (second.status, second.rows_loaded) == ("skipped", 0), second.error
    assert second.run_id and second.run_id != first.run_id
    skips = [e for e in get_ledger().history(uuid.UUID(second.run_id)) if e.status == "skipped"]
    assert len(skips) == 1 and "already loaded" in (skips[0].error or "")
    assert loaded_users(pg_url) == {"once"}


@pytest.mark.parametrize(
    ("key", "content_encoding"),
    [
        ("tm/dailycheckins/2024/03/01/dailycheckins.csv.gz", None),
        ("tm/dailycheckins/2024/03/01/dailycheckins.csv", "gzip"),  # `aws s3 cp --content-encoding gzip`
    ],
)
def test_a_gzip_object_loads_whatever_its_name_and_content_encoding(
    sluice_env: Path, pg_url: str, landing: tuple[Any, str], key: str, content_encoding: str | None
) -> None:
    import gzip

    s3, bucket = landing
    body = gzip.compress(rows("zipped"))
    extra = {"ContentEncoding": content_encoding} if content_encoding else {}
    version = s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)["VersionId"]

    report = run(event_parameters(bucket, key, version, len(body)))

    assert (report.status, report.rows_loaded) == ("success", 1), report.error
    assert loaded_users(pg_url) == {"zipped"}


@pytest.mark.parametrize("event_version", ["null", None], ids=["version-null", "no-version-id"])
def test_an_object_of_a_bucket_with_versioning_suspended_loads(
    sluice_env: Path, pg_url: str, landing: tuple[Any, str], event_version: str | None
) -> None:
    s3, bucket = landing
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    key = "tm/dailycheckins/2024/03/01/suspended checkins.csv"
    body = rows("suspended")
    s3.put_object(Bucket=bucket, Key=key, Body=body)

    parameters = event_parameters(bucket, quote_plus(key, safe="/"), event_version, len(body))
    assert parameters["version_id"] == (event_version or "")
    report = run(parameters)

    assert (report.status, report.rows_loaded) == ("success", 1), report.error
    assert loaded_users(pg_url) == {"suspended"}


def test_an_older_version_handled_after_a_newer_one_does_not_put_stale_rows_back(
    sluice_env: Path, pg_url: str, landing: tuple[Any, str]
) -> None:
    """Two uploads of one key, their events handled out of order (runs in parallel, a redelivery, a replay from the
    dead-letter queue): for a dataset that replaces (or upserts), the older version must not win."""
    s3, bucket = landing
    key = "data2bots/reviews/reviews.csv"
    old, new = b"review,product_id\n1,10\n1,11\n", b"review,product_id\n5,10\n5,11\n5,12\n"
    v1 = s3.put_object(Bucket=bucket, Key=key, Body=old)["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key=key, Body=new)["VersionId"]

    newer = run(event_parameters(bucket, key, v2, len(new)))
    older = run(event_parameters(bucket, key, v1, len(old)))

    assert (newer.status, newer.rows_loaded) == ("success", 3), newer.error
    assert older.status == "skipped" and older.error and v2 in older.error, older.error
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        reviews = sorted(conn.execute(sa.text("SELECT review, product_id FROM staging.reviews")).all())
    assert reviews == [(5, 10), (5, 11), (5, 12)]  # the newer version's rows, not the older's
    forced = run({**event_parameters(bucket, key, v1, len(old)), "force": True})
    assert (forced.status, forced.rows_loaded) == ("success", 2), forced.error  # on purpose, it still can
    with engine.begin() as conn:  # hermetic: the Data2bots tests read this table
        conn.execute(sa.text("TRUNCATE staging.reviews"))


@pytest.mark.parametrize("prefix", ["", "landing/"], ids=["whole-bucket", "LandingPrefix"])
def test_the_rule_forwards_every_object_created_the_registry_claims_and_nothing_else(
    moto_endpoint: str, prefix: str
) -> None:
    """The stack's EventBridge rule, resolved from the template, on moto's EventBridge with a queue as its target:
    every key a dataset claims (and awkward or folder keys, which the run itself records) is forwarded; other
    buckets, other S3 events and other sources are not."""
    import json

    from sluice import datasets
    from tests.deploy.conftest import Resolver, template

    bucket = f"sluice-landing-{uuid.uuid4().hex[:8]}"
    rule = template()["Resources"]["ObjectCreatedRule"]["Properties"]
    conditions = {"HasPrefix": bool(prefix)}
    pattern = Resolver({"LandingBucket": bucket, "LandingPrefix": prefix}, {}, conditions)(
        rule["EventPattern"]
    )
    region = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    events, sqs = boto3.client("events", **region), boto3.client("sqs", **region)
    queue = sqs.create_queue(QueueName=f"forwarded-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    name = f"object-created-{uuid.uuid4().hex[:8]}"
    events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}])

    def send(
        key: str, *, to: str = bucket, detail_type: str = "Object Created", source: str = "aws.s3"
    ) -> None:
        detail = sample_body()["detail"]
        detail["bucket"]["name"], detail["object"]["key"] = to, key
        entry = {"Source": source, "DetailType": detail_type, "Detail": json.dumps(detail), "Resources": []}
        assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0

    claimed = [d.demo_key for d in datasets.all_datasets() if d.demo_key]
    assert len(claimed) >= 5
    wanted = [
        prefix + form
        for key in [*claimed, *KEYS, "tm/dailycheckins/"]
        for form in (key, quote_plus(key, safe="/"))
    ]
    for key in wanted:
        send(key)
    send(prefix + claimed[0], detail_type="Object Deleted")
    send(prefix + claimed[0], source="aws.s3.other")
    send(prefix + claimed[0], to="someone-elses-bucket")
    if prefix:
        send(claimed[0])  # outside the prefix

    forwarded: list[str] = []
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            forwarded.append(json.loads(message["Body"])["detail"]["object"]["key"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    assert sorted(forwarded) == sorted(wanted)  # each wanted event once; none of the four others
