"""No secret reaches logs, artifacts, the ledger, quarantine files, reports or errors."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sluice.cli.runner import run_ingest

pytestmark = pytest.mark.usefixtures("prefect_harness")
ROOT = Path(__file__).resolve().parents[2]

DB_PASSWORD = "SENTINEL-db-pw-7f3a"
API_KEY = "SENTINEL-api-key-91c2"
AWS_SECRET = "SENTINEL-aws-secret-44d0"


def test_sentinel_secrets_never_leak(
    sluice_env: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect.client.orchestration import get_client

    from sluice.adapters.warehouse import get_engine
    from sluice.settings import reload_settings

    # The embedded server trusts local connections, so any password works and is a pure marker.
    url = sa.make_url(pg_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    monkeypatch.setenv("SLUICE_DATABASE_URL", url)
    monkeypatch.setenv("SLUICE_API_KEY", API_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    settings = reload_settings()
    assert DB_PASSWORD not in repr(settings) and API_KEY not in str(settings.model_dump())

    caplog.set_level(logging.DEBUG)
    landing = sluice_env / "landing"
    landing.mkdir(parents=True)
    good = landing / "dailycheckins.csv"
    good.write_text(
        "user,timestamp,hours,project\nned,2018-12-20 00:00:00 UTC,1,p\nx,bad,99,p\n", encoding="utf-8"
    )
    reports = [
        run_ingest(str(good), dataset="dailycheckins", mode="soft"),
        run_ingest(str(good), dataset="dailycheckins", mode="hard", force=True),
        run_ingest(str(landing / "missing.csv"), dataset="dailycheckins"),
    ]
    assert [r.status for r in reports] == ["success", "failed", "failed"]

    haystack = [caplog.text, *capsys.readouterr()]
    haystack += [r.model_dump_json() for r in reports]
    with get_engine(settings).connect() as conn:
        haystack.append(
            json.dumps(
                [list(r) for r in conn.execute(sa.text("SELECT * FROM sluice.run_ledger"))], default=str
            )
        )
    haystack += [p.read_text(errors="replace") for p in (sluice_env / "quarantine").rglob("*") if p.is_file()]
    with get_client(sync_client=True) as client:
        haystack += [str(a.data) for a in client.read_artifacts()]
        haystack += [log.message for log in client.read_logs()]
    text = "\n".join(haystack)
    assert "dailycheckins" in text  # the scan looked at real output
    for secret in (DB_PASSWORD, API_KEY, AWS_SECRET):
        assert secret not in text


# --- a real password, checked by a real PostgreSQL, through every way a command can fail ------------------------

CANARY = "Sluice-S3cr3t-Canary"
FRAGMENT = "S3cr3t-Canary"  # what of a password with a raw '@' would become the host


@pytest.fixture(scope="module")
def password_postgres() -> Iterator[Path]:
    """A PostgreSQL of this module that checks passwords (scram-sha-256) for role ``canary`` (password ``CANARY``,
    owner of database ``canarydb``); yields its socket folder. The session's server trusts every connection."""
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="sluice-pw-"))  # short: the unix socket lives here
    pgdata = folder / "data"
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    (pgdata / "pg_hba.conf").write_text("local all postgres trust\nlocal all all scram-sha-256\n")
    server.psql("SELECT pg_reload_conf();")
    server.psql(f"CREATE ROLE canary LOGIN PASSWORD '{CANARY}'; CREATE DATABASE canarydb OWNER canary;")
    yield pgdata
    with contextlib.suppress(Exception):  # already down: nothing to stop
        pgserver.pg_ctl(["-w", "stop", "-m", "immediate"], pgdata=pgdata, user=server.system_user)
    shutil.rmtree(folder, ignore_errors=True)


SMTP_PASSWORD = "Sluice-S3cr3t-Canary-smtp"


@dataclass
class _Mailbox:
    """A local SMTP server's handler and authenticator: it takes only the login ``alerts`` / ``SMTP_PASSWORD``."""

    messages: list[str] = field(default_factory=list)
    logins: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # decoded (quoted-printable would split a password across soft line breaks): headers and text parts
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = [part.get_content() for part in message.walk() if part.get_content_maintype() == "text"]
        self.messages.append("\n".join([str(message["Subject"]), *parts]))
        return "250 Message accepted"

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"alerts",
            SMTP_PASSWORD.encode(),
        )
        self.logins += ok
        return AuthResult(success=ok)


@pytest.fixture
def email_alerts() -> Iterator[tuple[str, _Mailbox]]:
    """A saved email block on a local SMTP server that requires a password; yields its reference."""
    from aiosmtpd.controller import Controller
    from prefect_email import EmailServerCredentials, SMTPType

    from sluice.adapters.notify import EmailNotification, register_blocks
    from tests.conftest import free_port

    mailbox = _Mailbox()
    port = free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=mailbox, auth_require_tls=False
    )
    controller.start()
    register_blocks()
    credentials = EmailServerCredentials(
        smtp_server="127.0.0.1",
        smtp_port=port,
        smtp_type=SMTPType.INSECURE,
        username="alerts",
        password=SMTP_PASSWORD,
    )
    name = f"canary-{uuid.uuid4().hex[:8]}"
    EmailNotification(to="ops@example.com", credentials=credentials).save(name)
    yield f"email-notification/{name}", mailbox
    controller.stop()


def _sluice(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process (its exit path, its stderr, its logs to the Prefect API)."""
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_a_real_password_appears_nowhere_whatever_fails(
    sluice_env: Path,
    password_postgres: Path,
    email_alerts: tuple[str, _Mailbox],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Warehouse and Totesys URLs with a password PostgreSQL checks: a good run with a quarantined row, the ledger,
    ``db url``, then a wrong password, a missing database, a refused port and a password with a raw ``@``, plain,
    ``--json``, ``--verbose`` (tracebacks) and JSON logs. The password is in none of stdout, stderr, the ledger,
    the quarantine, the email alerts (sent with an SMTP password, which is in none of them either), the logs sent
    to Prefect or its artifacts; every failure still says what is wrong."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    socket = password_postgres
    good = f"postgresql://canary:{CANARY}@/canarydb?host={socket}"
    wrong = f"postgresql://canary:{CANARY}-wrong@/canarydb?host={socket}"
    no_db = f"postgresql://canary:{CANARY}@/no_such_db?host={socket}"
    refused = f"postgresql://canary:{CANARY}@127.0.0.1:1/canarydb"
    raw_at = f"postgresql://canary:Sluice@{FRAGMENT}@127.0.0.1:1/canarydb"
    landed = sluice_env / "landing" / "dailycheckins.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text(
        "user,timestamp,hours,project\nned,2018-12-20 00:00:00 UTC,1,p\nx,bad,99,p\n", encoding="utf-8"
    )
    base = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "SLUICE_WARM": "0",
        "SLUICE_RETRIES": "0",
        "SLUICE_TOTESYS_SOURCE_URL": "",
        "SLUICE_NOTIFY_BLOCKS": f"{email_alerts[0]}@always",
    }
    ingest = ["ingest", str(landed), "--dataset", "dailycheckins", "--mode", "soft"]
    totesys = ["totesys", "--json", "--source-url"]
    # (warehouse URL, arguments, extra environment, exit code, what the output must say)
    cases: list[tuple[str, list[str], dict[str, str], int, str]] = [
        (good, [*ingest, "--json"], {}, 0, '"status": "success"'),
        (good, ["ledger", "--json"], {}, 0, "dailycheckins"),
        (good, ["db", "url"], {}, 0, "canary:***@"),
        (wrong, [*ingest, "--json"], {}, 1, "password authentication failed"),
        (wrong, [*ingest, "--verbose"], {"SLUICE_JSON_LOGS": "true"}, 1, "password authentication failed"),
        (no_db, [*ingest, "--json"], {}, 1, "does not exist"),
        (refused, [*ingest, "--json"], {}, 1, "Connection refused"),
        (raw_at, [*ingest, "--json"], {}, 1, "%40"),
        (raw_at, ["db", "url"], {}, 1, "%40"),
        (good, [*totesys, wrong], {}, 1, "password authentication failed"),
        (good, [*totesys, raw_at], {}, 1, "%40"),
    ]
    haystack: list[str] = []
    for url, args, extra, code, says in cases:
        result = _sluice(args, {**base, "SLUICE_DATABASE_URL": url, **extra})
        output = result.stdout + result.stderr
        assert result.returncode == code and says in output, (args, url.split("@")[-1], output[-3000:])
        haystack.append(output)

    engine = sa.create_engine(
        good.replace("postgresql://", "postgresql+psycopg2://"), poolclass=sa.pool.NullPool
    )
    with engine.connect() as conn:
        ledger = [list(r) for r in conn.execute(sa.text("SELECT * FROM sluice.run_ledger"))]
    engine.dispose()
    assert {r[0] for r in ledger} and any("password authentication failed" in str(r) for r in ledger)
    haystack.append(json.dumps(ledger, default=str))
    haystack += [p.read_text(errors="replace") for p in (sluice_env / "quarantine").rglob("*") if p.is_file()]
    with get_client(sync_client=True) as client:
        haystack += [str(a.data) for a in client.read_artifacts()]
        haystack += [log.message for log in client.read_logs()]
    haystack.append(caplog.text)
    mailbox = email_alerts[1]
    # every ingest and totesys run alerted, with the password's login (db url and ledger run no flow)
    assert len(mailbox.messages) == mailbox.logins >= 8, (len(mailbox.messages), mailbox.logins)
    assert any("password authentication failed" in m for m in mailbox.messages)
    haystack += mailbox.messages
    # Prefect's own database (runs, task runs, parameters, events, logs; block documents are encrypted at rest)
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    database = Path(str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).split(":///", 1)[1])
    stored = b"".join(f.read_bytes() for f in database.parent.glob(database.name + "*"))
    assert b"dailycheckins" in stored  # the runs are in it
    haystack.append(stored.decode("latin-1"))
    text = "\n".join(haystack)
    assert "Traceback" in text  # --verbose printed one: its frames were scanned too
    assert FRAGMENT not in text and SMTP_PASSWORD not in text


def test_a_password_on_the_command_line_is_warned_of_and_pgpass_or_pgpassword_serve_instead(
    sluice_env: Path, password_postgres: Path, tmp_path: Path
) -> None:
    """`sluice totesys --source-url` with a password in the URL puts it in `ps` and the shell's history: one
    warning says so and where the password goes instead (the cycle still runs). Without a password in the URL,
    libpq takes it from ~/.pgpass (PGPASSFILE) or PGPASSWORD, as psql does: no warning, and the login works
    (the cycle then stops at the empty source, not at the login)."""
    from prefect.settings import PREFECT_API_URL

    from sluice.cli.totesys import ON_COMMAND_LINE_WARNING

    socket = password_postgres
    base = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "SLUICE_WARM": "0",
        "SLUICE_RETRIES": "0",
        "SLUICE_TOTESYS_SOURCE_URL": "",
    }
    for key in ("PGPASSWORD", "PGPASSFILE"):
        base.pop(key, None)
    with_password = f"postgresql://canary:{CANARY}@/canarydb?host={socket}"
    shape = "the Totesys source has no Totesys tables"  # what a cycle on the empty source says
    without = f"postgresql://canary@/canarydb?host={socket}"
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:canarydb:canary:{CANARY}\n", encoding="utf-8")
    pgpass.chmod(0o600)  # libpq ignores a password file others can read

    warned = _sluice(["totesys", "--json", "--source-url", with_password], base)
    assert (
        warned.stderr.count(f"warning: {ON_COMMAND_LINE_WARNING}") == 1
        and CANARY not in warned.stderr + warned.stdout
    )
    assert shape in json.loads(warned.stdout)["error"]  # logged in: the empty source lacks the tables

    no_password = _sluice(["totesys", "--json", "--source-url", without], base)
    assert "no password supplied" in json.loads(no_password.stdout)["error"]  # nothing else supplies one
    for extra in ({"PGPASSFILE": str(pgpass)}, {"PGPASSWORD": CANARY}):
        quiet = _sluice(["totesys", "--json", "--source-url", without], {**base, **extra})
        error = json.loads(quiet.stdout)["error"]
        assert "warning" not in quiet.stderr and shape in error, (extra, error)
