"""``sluice notify``: save SNS and email notification blocks, and send a test message through one."""

from __future__ import annotations

import json
import os
import re
from typing import Annotated

import typer

from sluice.cli.output import console, fail
from sluice.runtime import prepare

notify_app = typer.Typer(help="Notification blocks: where run alerts go (SLUICE_NOTIFY_BLOCKS lists them).")


def register(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")


def _check_name(name: str) -> None:
    """Prefect's rule for a block's name, said before anything starts (was pydantic's ValidationError traceback)."""
    if not re.fullmatch(r"[a-z0-9-]+", name):
        raise fail(
            f"block name {name!r}: only lowercase letters, numbers and dashes (e.g. ops-alerts)", code=2
        )


def _start() -> None:
    prepare(False)


@notify_app.command("add-sns")
def add_sns(
    name: Annotated[str, typer.Argument(help="Block name, e.g. ops-alerts.")],
    topic_arn: Annotated[str, typer.Option("--topic-arn", help="The SNS topic's ARN.")],
    region: Annotated[str | None, typer.Option("--region", help="AWS region (default: the topic's).")] = None,
) -> None:
    """Save an SNS notification block (credentials from the usual AWS chain)."""
    _check_name(name)
    if not topic_arn.startswith("arn:") or topic_arn.count(":") < 5:
        raise fail(f"--topic-arn {topic_arn!r} is not an SNS topic ARN", code=2)
    _start()
    # after prepare (_start): Prefect reads its environment once, at import
    from prefect_aws import AwsCredentials

    from sluice.adapters.notify import SnsNotification, register_blocks

    register_blocks()
    block = SnsNotification(
        topic_arn=topic_arn, aws_credentials=AwsCredentials(region_name=region or topic_arn.split(":")[3])
    )
    block.save(name, overwrite=True)
    console.print(f"saved [bold]sns-notification/{name}[/] → {topic_arn}", soft_wrap=True)
    _hint(f"sns-notification/{name}")


@notify_app.command("add-email")
def add_email(
    name: Annotated[str, typer.Argument(help="Block name, e.g. data-team.")],
    to: Annotated[str, typer.Option("--to", help="Recipient address(es), comma-separated.")],
    smtp_host: Annotated[str, typer.Option("--smtp-host", help="SMTP server host.")],
    smtp_port: Annotated[
        int | None, typer.Option("--smtp-port", min=1, max=65535, help="Default: by security mode.")
    ] = None,
    username: Annotated[str | None, typer.Option("--username", help="SMTP login.")] = None,
    password_env: Annotated[
        str | None, typer.Option("--password-env", help="Environment variable holding the password.")
    ] = None,
    email_from: Annotated[str | None, typer.Option("--from", help="Sender (default: username).")] = None,
    ssl: Annotated[bool, typer.Option("--ssl", help="Implicit TLS (default, port 465).")] = False,
    starttls: Annotated[bool, typer.Option("--starttls", help="STARTTLS (port 587).")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="No TLS (port 25; local relays only).")] = False,
) -> None:
    """Save an email notification block backed by prefect-email's EmailServerCredentials."""
    _check_name(name)
    not_addresses = [a.strip() for a in to.split(",") if "@" not in a.strip()]
    if not_addresses:  # was saved, and every alert then failed to send
        raise fail(
            f"--to {not_addresses[0]!r} is not an email address (name@domain; comma-separate several)", code=2
        )

    if sum((ssl, starttls, plain)) > 1:
        raise fail("choose one of --ssl, --starttls, --plain", code=2)
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise fail(f"--password-env {password_env}: that variable is not set", code=2)
    if password and not username:
        raise fail("--password-env needs --username", code=2)
    _start()
    # after prepare (_start): Prefect reads its environment once, at import
    from prefect_email import EmailServerCredentials, SMTPType

    from sluice.adapters.notify import EmailNotification, register_blocks

    smtp_type = SMTPType.STARTTLS if starttls else SMTPType.INSECURE if plain else SMTPType.SSL
    credentials = EmailServerCredentials(
        smtp_server=smtp_host,
        smtp_type=smtp_type,
        smtp_port=smtp_port,
        username=username,
        password=password or "",
    )
    register_blocks()
    EmailNotification(to=to, email_from=email_from, credentials=credentials).save(name, overwrite=True)
    console.print(
        f"saved [bold]email-notification/{name}[/] → {to} via {smtp_host} ({smtp_type.name})", soft_wrap=True
    )
    _hint(f"email-notification/{name}")


@notify_app.command("test")
def test(name: Annotated[str, typer.Argument(help="Block name or slug/name.")]) -> None:
    """Send a test message through a saved block; exit 1 if it cannot be delivered."""

    _start()
    # after prepare (_start): Prefect reads its environment once, at import
    from sluice.adapters.notify import SUBJECT_PREFIX, load_block, send

    try:
        block = load_block(name)
    except ValueError as exc:
        raise fail(str(exc)) from None
    body = json.dumps({"status": "Test", "message": "sluice notification test"})
    try:
        send(block, body, f"{SUBJECT_PREFIX} test notification")
    except Exception as exc:
        raise fail(f"{name}: not delivered: {exc}") from None
    console.print(f"sent a test message through {name}", soft_wrap=True)


def _hint(ref: str) -> None:
    # one line whatever the width (a pipe is 80 columns): the export is copied as it is
    console.print(
        f"add it to runs: [bold]export SLUICE_NOTIFY_BLOCKS={ref}[/] (comma-separate several)", soft_wrap=True
    )
