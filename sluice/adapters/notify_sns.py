"""The SNS notification block, apart from ``sluice.adapters.notify`` so that prefect_aws (~1 s of imports) loads only
when an SNS block is used (``sluice.adapters.notify.SnsNotification`` still names it)."""

from __future__ import annotations

import unicodedata
from typing import Any

from botocore.config import Config
from botocore.exceptions import NoCredentialsError
from prefect.blocks.abstract import NotificationBlock
from prefect_aws import AwsCredentials
from pydantic import Field

#: boto3's defaults (60 s to connect, 60 s per read, up to 5 attempts) held a run for 311 s on an endpoint that
#: never answered; an alert waits at most about a minute.
SNS_CLIENT_CONFIG = Config(
    connect_timeout=10, read_timeout=20, retries={"mode": "standard", "total_max_attempts": 2}
)


class SnsNotification(NotificationBlock):
    """Publish a run's message to an SNS topic through an ``AwsCredentials`` block."""

    _block_type_name = "SNS Notification"
    _block_type_slug = "sns-notification"
    _description = "Publish notifications to an AWS SNS topic (subject and JSON body)."

    topic_arn: str = Field(..., description="ARN of the SNS topic to publish to.")
    aws_credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="Credentials and region used to reach SNS."
    )

    async def notify(self, body: str, subject: str | None = None) -> None:
        self.publish(body, subject)

    def publish(self, body: str, subject: str | None = None) -> str:
        """Publish synchronously; returns the SNS message id. boto3 honours ``AWS_ENDPOINT_URL`` itself."""
        # A topic is published to in its own region (the ARN's), whatever region the block's credentials name.
        parts = self.topic_arn.split(":")
        region = parts[3] if len(parts) > 5 and parts[3] else None
        client = self.aws_credentials.get_boto3_session().client(
            "sns", region_name=region, config=SNS_CLIENT_CONFIG
        )
        kwargs: dict[str, Any] = {"TopicArn": self.topic_arn, "Message": body}
        if subject:
            kwargs["Subject"] = sns_subject(subject)
        try:
            return client.publish(**kwargs)["MessageId"]
        except NoCredentialsError:
            raise SnsFailed(
                f"no AWS credentials to publish to {self.topic_arn} (the block's AwsCredentials, else AWS_PROFILE "
                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; on ECS, the task role)"
            ) from None


class SnsFailed(Exception):
    """An SNS alert that could not be sent, said in one line."""


def sns_subject(subject: str) -> str:
    """SNS subjects: ASCII printable, no newlines, at most 100 characters. Accented letters lose their accents
    (``été`` → ``ete``, not ``?t?``); what has no ASCII form becomes ``?``."""
    plain = unicodedata.normalize("NFKD", " ".join(subject.split()))
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in plain)[:100]
