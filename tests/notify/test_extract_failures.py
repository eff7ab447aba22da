"""Extract failures on S3 (moto's server over HTTP) say what is wrong in the alert and the ledger, not botocore's
words, and are not retried when no retry can help."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from sluice.ledger import get_ledger
from tests.notify.conftest import Inbox, Topic
from tests.notify.test_run_notifications import GOOD, one_message

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_version_that_no_longer_exists_is_object_not_found(
    sluice_env: Path, landing: tuple[Any, str], notify_blocks: tuple[Topic, Inbox]
) -> None:
    from flows.ingest import ingest_file
    from sluice.report import report_of

    s3, bucket = landing
    key = "tm/dailycheckins/2024/03/01/dailycheckins.csv"
    version = s3.put_object(Bucket=bucket, Key=key, Body=GOOD.encode())["VersionId"]
    s3.delete_object(
        Bucket=bucket, Key=key, VersionId=version
    )  # the event's version is gone (expired, deleted)
    source = f"s3://{bucket}/{key}"

    state = ingest_file(source=source, dataset="dailycheckins", version_id=version, return_state=True)
    report = report_of(state, "dailycheckins", source)

    assert (report.status, report.state) == ("failed", "extract")
    assert report.error == f"{source}: object not found (version {version})"  # was botocore's NoSuchVersion
    subject, body, _ = one_message(*notify_blocks)
    assert subject.startswith("[sluice] FAILED dailycheckins at extract: object not found (version ")
    assert body["error"] == report.error
    history = get_ledger().history(uuid.UUID(report.run_id))
    assert [(e.state, e.status, e.error) for e in history] == [("extract", "fail", report.error)]
