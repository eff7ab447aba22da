"""Run notifications: SNS and email blocks, the message every run sends, and the flow state hooks.

Neither Prefect nor prefect-aws ships an SNS notification block, so ``SnsNotification`` is one (registered
with Prefect so it shows in the UI's block catalogue: ``prefect block register -m sluice.adapters.notify``).
``EmailNotification`` sends through prefect-email's ``EmailServerCredentials`` so both are used the same way:
``notify(body, subject)``. The hooks run client-side in the flow's process; a notification that cannot be
delivered is logged as a warning and never changes the run's outcome.
"""

from __future__ import annotations

import asyncio
import email.policy
import html
import json
import logging
import smtplib
import ssl
import uuid
from email.message import EmailMessage
from typing import Any, Literal, cast, get_args

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.utilities.urls import url_for
from prefect_email import EmailServerCredentials
from pydantic import Field

from sluice.errors import clipped, counted
from sluice.ledger import close_stopped, get_ledger, summarize
from sluice.report import (
    IngestionFailed,
    IngestReport,
    report_from_entries,
    report_from_ledger,
    stop_of,
    too_late,
)
from sluice.settings import Settings, get_settings

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "[sluice]"


def __getattr__(name: str) -> Any:
    # prefect_aws costs ~1 s of imports: the SNS block class (sluice.adapters.notify_sns) loads on first use only.
    if name == "SnsNotification":
        from sluice.adapters.notify_sns import SnsNotification  # see above: prefect_aws on first use

        return SnsNotification
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:  # so `prefect block register -m sluice.adapters.notify` finds the SNS block too
    return [*globals(), "SnsNotification"]


#: SMTP's line limit (998), not the 78 of the default policy: a 90-character subject is folded by it into an empty
#: first line, which mail readers show with a leading space.
_EMAIL_POLICY = email.policy.default.clone(max_line_length=998)


class EmailNotification(NotificationBlock):
    """Email a run's message through prefect-email's ``EmailServerCredentials`` (SSL, STARTTLS or plain)."""

    _block_type_name = "Email Notification"
    _block_type_slug = "email-notification"
    _description = "Email notifications through a prefect-email EmailServerCredentials block."

    to: str = Field(..., description="Recipient address(es), comma-separated.")
    email_from: str | None = Field(None, description="Sender address; default: the SMTP username.")
    credentials: EmailServerCredentials = Field(..., description="SMTP server and login.")

    async def notify(self, body: str, subject: str | None = None) -> None:
        # Built here, sent through prefect-email's server connection: prefect-email's ``email_send_message`` sends
        # an ASCII body as 7bit with its lines as they are, and SMTP refuses a line over 998 characters (a long
        # error in the JSON body); ``EmailMessage`` encodes such a body (quoted-printable) and non-ASCII headers.
        message = EmailMessage(policy=_EMAIL_POLICY)
        message["Subject"] = subject or f"{SUBJECT_PREFIX} notification"
        message["From"] = self.email_from or self.credentials.username or "sluice@localhost"
        message["To"] = self.to
        message.set_content(body)
        message.add_alternative(f"<pre>{_html_escape(body)}</pre>", subtype="html")
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        try:
            with smtp_server(self.credentials) as server:
                server.send_message(message)
        except (TimeoutError, smtplib.SMTPException) as exc:
            raise SmtpFailed(smtp_reason(self.credentials, exc)) from None


class SmtpFailed(Exception):
    """An email alert the SMTP server did not take, said in one line."""


def smtp_reason(credentials: EmailServerCredentials, exc: BaseException) -> str:
    """Why the server did not take the message, readable: its reply as text (not ``(535, b'5.7.8 …')``), or that
    it did not answer in time, with what to check."""
    host, port = _address(credentials)
    where = f"{host}:{port}"
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return (
            f"the SMTP server {where} did not answer within {SMTP_TIMEOUT_SECONDS} s (check the host, the port "
            "and the TLS mode: --ssl, --starttls or --plain)"
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        return f"the SMTP server {where} answered {exc.smtp_code} {' '.join(str(text).split())}"
    return f"SMTP {where}: {exc}"


#: Seconds an SMTP connection waits for the server at each step (connect, greeting, TLS, each reply).
SMTP_TIMEOUT_SECONDS = 20


def smtp_server(credentials: EmailServerCredentials, timeout: float | None = None) -> smtplib.SMTP:
    """The logged-in SMTP connection ``credentials.get_server()`` opens, with a ``timeout``: prefect-email opens
    it with none, so a server that accepts the connection and never answers (a wrong port, a firewall that drops
    packets) held ``notify test``, the run's alert and the run itself forever."""
    timeout = timeout or SMTP_TIMEOUT_SECONDS
    host, port = _address(credentials)
    kind = credentials.smtp_type.name
    context = ssl.create_default_context()
    if not credentials.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    server: smtplib.SMTP
    if kind == "SSL":
        server = smtplib.SMTP_SSL(host, port, context=context, timeout=timeout)
    else:
        server = smtplib.SMTP(host, port, timeout=timeout)
    try:
        if kind == "STARTTLS":
            server.starttls(context=context)
        if credentials.username is not None:
            password = credentials.password.get_secret_value() if credentials.password else ""
            server.login(credentials.username, password)
    except BaseException:
        server.close()  # a refused STARTTLS or login: the socket is not left to the garbage collector
        raise
    return server


def _address(credentials: EmailServerCredentials) -> tuple[str, int]:
    """The server's host and port as prefect-email reads them (the port defaults to the TLS mode's)."""
    host = getattr(credentials.smtp_server, "value", credentials.smtp_server)
    return host, credentials.smtp_port or credentials.smtp_type.value


def _html_escape(text: str) -> str:
    return html.escape(text)


def register_blocks() -> None:
    """Register both block types (and their schemas) with the Prefect API, so the UI lists them.

    Works from sync and async callers alike: Prefect's sync-compatible ``register_type_and_schema`` returns an
    un-awaited coroutine inside a running event loop (``sluice aws setup`` is one), registering nothing.
    """
    from sluice.adapters.notify_sns import (
        SnsNotification,  # prefect_aws (~1 s) only when blocks are registered
    )

    for block in (SnsNotification, EmailNotification):
        run_coro_as_sync(block.aregister_type_and_schema())


# --- messages ------------------------------------------------------------------------------------------


def build_message(report: IngestReport, url: str | None = None) -> dict[str, Any]:
    """The machine-readable message, compatible with the systems Sluice replaces."""
    failed = report.status in ("failed", "cancelled")
    return {
        "status": "Ingestion Fail" if failed else "Ingestion Success",
        "latestState": report.state,
        "ingestedID": report.run_id or report.flow_run_id,
        "ingestedTable": report.table or report.dataset,
        "dataset": report.dataset,
        "source": report.source,
        "runStatus": report.status,
        "rowsRead": report.rows_read,
        "rowsLoaded": report.rows_loaded,
        "rowsQuarantined": report.rows_quarantined,
        "quarantineUri": report.quarantine_uri,
        "error": clipped(report.error) if report.error else report.error,  # SNS takes 256 KB at most
        "notes": report.notes,
        "url": url,
    }


def build_subject(report: IngestReport) -> str:
    """A short human subject line naming the dataset, the outcome and, on failure, the state and reason."""
    name = report.dataset or "ingest"
    if report.status == "failed":
        reason = report.error.splitlines()[0] if report.error else "unknown error"
        # Errors name the file first; the body carries it, the subject's 100 characters are for the reason.
        reason = reason.removeprefix(f"{report.source}: ")
        return _fit(f"{SUBJECT_PREFIX} FAILED {name} at {report.state or 'start'}: {reason}")
    if report.status == "cancelled":
        return _fit(
            f"{SUBJECT_PREFIX} CANCELLED {name} at {report.state or 'start'}: {report.error or 'cancelled'}"
        )
    if report.status == "skipped":
        return f"{SUBJECT_PREFIX} SKIPPED {name}: already loaded"
    subject = f"{SUBJECT_PREFIX} OK {name}: {counted(report.rows_loaded, 'row')} loaded"
    if report.rows_quarantined:
        subject += f", {counted(report.rows_quarantined, 'row')} quarantined"
    if report.notes:
        subject += f"; note: {report.notes[0]}"
    return _fit(subject)


def _fit(subject: str) -> str:
    """One line of at most 100 characters (SNS's limit), so every channel shows the same subject."""
    subject = " ".join(subject.split())
    return subject if len(subject) <= 100 else subject[:97] + "..."


def report_from_state(flow_run: Any, state: Any) -> IngestReport:
    """The run's report: the flow's result, the ``IngestionFailed`` it raised, or the ledger for crashes."""
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:
        result = exc
    if isinstance(result, IngestReport):
        return result
    if isinstance(result, IngestionFailed):
        return result.report
    parameters = getattr(flow_run, "parameters", None) or {}
    source = str(parameters.get("source", "?"))
    error = str(result) if isinstance(result, BaseException) else (state.message or state.name)
    try:
        rebuilt = report_from_ledger(uuid.UUID(str(flow_run.id)), source, error)
    except Exception:
        rebuilt = None
    return rebuilt or IngestReport(
        run_id=str(flow_run.id),
        dataset=parameters.get("dataset"),
        source=source,
        status="failed",
        state=None,
        error=error,
    )


def report_of_stopped(flow_run: Any, status: str, why: str) -> IngestReport:
    """The report of a run stopped from outside (cancelled, timed out): its ledger's open states closed with the
    reason only the hook knows (the run's own code was interrupted before it could say it), then rebuilt."""
    run_id = uuid.UUID(str(flow_run.id))
    try:
        ledger = get_ledger()
        closed = close_stopped(ledger, run_id, "cancelled" if status == "cancelled" else "fail", why)
        entries = ledger.history(run_id)
        report = report_from_entries(entries, "?", why) if entries else None
    except Exception as exc:
        logger.warning("the ledger of stopped run %s could not be closed: %s", run_id, exc)
        report = None
    else:
        done = summarize(entries)["status"] if entries and not closed else None
        if report is not None and done in ("success", "skipped"):
            # the stop came after the run's last step had committed (a command's run sees its cancellation only
            # between steps and chunks): what it did stands, and is what it says
            report.status, report.error = done, None
            report.notes.append(too_late(why))
            return report
    if report is None:
        parameters = getattr(flow_run, "parameters", None) or {}
        report = IngestReport(
            run_id=str(run_id),
            dataset=parameters.get("dataset") or getattr(flow_run, "name", None),
            source=str(parameters.get("source", "?")),
            status=status,
            state=None,
            error=why,
        )
    report.status, report.error = status, why
    return report


def alert_stopped(flow_run: Any, status: str, why: str) -> IngestReport:
    """What the hook does for a run stopped from outside, from the run itself (a command's run that stopped for its
    cancellation, which ends ``Cancelled``: Prefect runs no hook for that): its ledger's open states closed with
    ``why``, and its one alert. The report, rebuilt from the ledger."""
    report = report_of_stopped(flow_run, status, why)
    deliver(report, _run_url(flow_run), run_id=getattr(flow_run, "id", None))
    return report


def _run_url(flow_run: Any) -> str | None:
    try:
        return url_for(flow_run)
    except Exception:
        return None


# --- delivery and hooks --------------------------------------------------------------------------------


def configured_blocks(settings: Settings | None = None) -> list[str]:
    """``SLUICE_NOTIFY_BLOCKS`` as a list of ``block-type-slug/name`` (each may end in ``@<policy>``)."""
    raw = (settings or get_settings()).notify_blocks
    return [part.strip() for part in raw.split(",") if part.strip()]


# --- alert policy ---------------------------------------------------------------------------------------

NotifyOn = Literal["failure", "change", "always"]
POLICIES: tuple[str, ...] = get_args(NotifyOn)


def split_ref(ref: str) -> tuple[str, NotifyOn | None]:
    """``slug/name@policy`` → (``slug/name``, policy); no suffix → (ref, None). Block names cannot hold ``@``."""
    name, at, policy = ref.partition("@")
    if not at:
        return ref, None
    if policy not in POLICIES:
        raise ValueError(f"{ref}: the part after @ must be one of {', '.join(POLICIES)}, not {policy!r}")
    return name, cast(NotifyOn, policy)


def changed(report: IngestReport) -> bool:
    """The run changed something: it succeeded and loaded or quarantined rows, or has notes (e.g. tables created)."""
    return report.status == "success" and bool(
        report.rows_loaded or report.rows_quarantined or getattr(report, "notes", None)
    )


def wanted(report: IngestReport, policy: NotifyOn) -> bool:
    """Failures always alert; ``change``: runs that changed something too; ``always``: every run."""
    if report.status in ("failed", "cancelled") or policy == "always":
        return True
    return policy == "change" and changed(report)


def load_block(ref: str) -> NotificationBlock:
    """Load a saved notification block by ``slug/name`` (or a bare name, tried as SNS then email).

    No registration here (it was an API write per run): the block types are registered at deploy time
    (``sluice.deploycheck.register_block_types``, ``sluice aws setup``) and by ``sluice notify add-*``.
    """
    ref = split_ref(ref)[0]
    if "/" not in ref or ref.startswith("sns-notification/"):
        # Block.load finds a block's class by its slug among the classes imported: the SNS one loads lazily
        # (prefect_aws, ~1 s), so a fresh process (a user's shell, an ECS task) must import it first.
        import sluice.adapters.notify_sns  # noqa: F401  (see above)
    if "/" in ref:
        block = Block.load(ref)
    else:
        block = None
        for slug in ("sns-notification", "email-notification"):
            try:
                block = Block.load(f"{slug}/{ref}")
                break
            except ValueError:
                continue
        if block is None:
            raise ValueError(f"no notification block named {ref!r}")
    if not isinstance(block, NotificationBlock):
        raise ValueError(f"{ref} is not a notification block")
    return block


def send(block: NotificationBlock, body: str, subject: str) -> None:
    """Deliver synchronously (hooks of sync flows run without an event loop)."""
    if block.get_block_type_slug() == "sns-notification":
        block.publish(body, subject)  # type: ignore[attr-defined]
        return
    run_coro_as_sync(block.notify(body, subject))


def deliver(
    report: IngestReport,
    url: str | None = None,
    blocks: list[str] | None = None,
    notify_on: NotifyOn | None = None,
    run_id: uuid.UUID | None = None,
) -> int:
    """Send one message to every configured block whose policy wants this run; how many were delivered; never raises.

    A block's policy is its ``@<policy>`` suffix, else ``notify_on``, else ``SLUICE_NOTIFY_ON``. An undelivered
    message is a warning of this module: a command's stderr, and the logs of run ``run_id`` (the UI;
    ``sluice.logs.RunLogs``).
    """
    refs = configured_blocks() if blocks is None else blocks
    if not refs:
        return 0
    default = notify_on or get_settings().notify_on
    body = json.dumps(build_message(report, url), indent=2, default=str)
    subject = build_subject(report)
    delivered = 0
    for ref in refs:
        try:
            name, policy = split_ref(ref)
            if not wanted(report, policy or default):
                logger.debug("%s: %s run not sent (policy %s)", name, report.status, policy or default)
                continue
            send(load_block(name), body, subject)
            delivered += 1
        except Exception as exc:
            # the block's name, as `prefect block ls` shows it (not the @policy suffix of SLUICE_NOTIFY_BLOCKS)
            block = ref.partition("@")[0]
            logger.warning("notification via %s not delivered: %s", block, exc, extra={"flow_run_id": run_id})
    return delivered


def _hook(flow: Any, flow_run: Any, state: Any) -> None:
    # A hook may run outside the run's context (a cancelled deployment run's, in the runner): its records name it.
    run_id = getattr(flow_run, "id", None)
    try:
        stop = stop_of(state)
        if stop is not None:
            deliver(report_of_stopped(flow_run, *stop), _run_url(flow_run), run_id=run_id)
            return
        report = report_from_state(flow_run, state)
        if state.is_crashed() and report.status != "failed":
            report.status = "failed"
        deliver(report, _run_url(flow_run), run_id=run_id)
    except Exception as exc:
        logger.warning("run notification skipped: %s", exc, extra={"flow_run_id": run_id})


def notify_hooks() -> dict[str, list[Any]]:
    """``on_completion``, ``on_failure``, ``on_crashed`` and ``on_cancellation`` hooks for a flow: one message per run.

    A cancellation's hook runs where the run was cancelled from: the worker (runner) that stopped the run's
    process, or the run's own process."""
    return {
        "on_completion": [_hook],
        "on_failure": [_hook],
        "on_crashed": [_hook],
        "on_cancellation": [_hook],
    }
