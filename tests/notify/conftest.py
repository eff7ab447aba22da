"""Fixtures for notifications: an SNS topic read back through a subscribed SQS queue, and a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage as Message
from typing import Any

import boto3
import pytest
from aiosmtpd.controller import Controller

from tests.conftest import free_port


@dataclass
class Inbox:
    """Messages received by the local SMTP server."""

    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted"

    def drain(self) -> list[Message]:
        got, self.messages = self.messages, []
        return got


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


@dataclass
class Topic:
    """An SNS topic on moto with an SQS queue subscribed, so tests read back what was published."""

    arn: str
    queue_url: str

    def drain(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs")
        got = []
        while True:
            page = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = page.get("Messages", [])
            if not messages:
                return got
            for message in messages:
                got.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def sns_topic(moto_endpoint: str) -> Topic:
    name = f"sluice-alerts-{uuid.uuid4().hex[:8]}"
    sns = boto3.client("sns")
    sqs = boto3.client("sqs")
    arn = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    return Topic(arn=arn, queue_url=queue_url)


@pytest.fixture
def notify_blocks(
    sns_topic: Topic, smtp_server: tuple[int, Inbox], monkeypatch: pytest.MonkeyPatch
) -> tuple[Topic, Inbox]:
    """An SNS block and an email block saved in Prefect and listed in SLUICE_NOTIFY_BLOCKS."""
    from prefect_aws import AwsCredentials
    from prefect_email import EmailServerCredentials, SMTPType

    from sluice.adapters.notify import EmailNotification, SnsNotification
    from sluice.settings import reload_settings

    port, inbox = smtp_server
    inbox.drain()
    suffix = uuid.uuid4().hex[:8]
    SnsNotification(topic_arn=sns_topic.arn, aws_credentials=AwsCredentials(region_name="us-east-1")).save(
        f"ops-{suffix}"
    )
    EmailNotification(
        to="data-team@example.com",
        email_from="sluice@example.com",
        credentials=EmailServerCredentials(
            smtp_server="127.0.0.1", smtp_port=port, smtp_type=SMTPType.INSECURE
        ),
    ).save(f"team-{suffix}")
    monkeypatch.setenv(
        "SLUICE_NOTIFY_BLOCKS", f"sns-notification/ops-{suffix}, email-notification/team-{suffix}"
    )
    reload_settings()
    return sns_topic, inbox


@pytest.fixture(params=["postgres", "dynamodb"])
def ledger_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run under each ledger backend (DynamoDB on moto, a fresh table per test)."""
    if request.param == "dynamodb":
        request.getfixturevalue("moto_endpoint")
        monkeypatch.setenv("SLUICE_LEDGER", "dynamodb")
        monkeypatch.setenv("SLUICE_LEDGER_TABLE", f"ledger-{uuid.uuid4().hex[:8]}")
    else:
        monkeypatch.setenv("SLUICE_LEDGER", "postgres")
    from sluice.settings import reload_settings

    reload_settings()
    return request.param
