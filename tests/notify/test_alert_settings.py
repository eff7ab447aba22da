"""Alert settings a user can get wrong: a bad value is one readable line naming it, before anything runs; a block
that does not exist is one warning line on the command's stderr, and the run's outcome is unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SLUICE = str(Path(sys.executable).parent / "sluice")


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "SLUICE_NOTIFY_ON",
            "sometimes",
            "SLUICE_NOTIFY_ON is 'sometimes': input should be 'failure', 'change'",
        ),
        (
            "SLUICE_NOTIFY_BLOCKS",
            "sns-notification/ops@sometimes, email-notification/team",
            "'sns-notification/ops@sometimes': the part after @ must be one of failure, change, always",
        ),
        ("SLUICE_CHUNK_ROWS", "lots", "SLUICE_CHUNK_ROWS is 'lots': input should be a valid integer"),
    ],
)
def test_a_bad_setting_is_one_readable_line_before_anything_runs(
    variable: str, value: str, said: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "PREFECT_"))}
    env.update({"SLUICE_HOME": str(tmp_path / "home"), "SLUICE_WARM": "0", variable: value})
    landed = tmp_path / "dailycheckins.csv"
    landed.write_text("user,timestamp,hours,project\nned,2019-09-26 00:00:00 UTC,4.0,bizdev\n")
    try:
        _ingest_twice_refused(env, landed, said)
        assert not (tmp_path / "home" / "prefect").exists()  # refused before a server or a run started
    finally:  # a regression would start the home's services: leave nothing behind
        from sluice import services

        services.stop(tmp_path / "home", tmp_path / "home" / "pg")


def _ingest_twice_refused(env: dict[str, str], landed: Path, said: str) -> None:
    for as_json in (False, True):
        done = subprocess.run(
            [SLUICE, "ingest", str(landed), "--dataset", "dailycheckins", *(["--json"] if as_json else [])],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip().removeprefix('error: ')}"]
        assert said in done.stderr
        if as_json:
            assert said in json.loads(done.stdout)["error"]


@pytest.mark.usefixtures("prefect_harness")
def test_an_alert_block_that_does_not_exist_is_a_warning_and_the_run_succeeds(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sluice.cli import app
    from sluice.ledger import get_ledger
    from sluice.settings import reload_settings

    missing = f"sns-notification/nobody-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("SLUICE_NOTIFY_BLOCKS", f"{missing}@always")  # the warning names the block alone
    reload_settings()
    landed = sluice_env / "landing" / "dailycheckins.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text("user,timestamp,hours,project\nned,2019-09-26 00:00:00 UTC,4.0,bizdev\n")

    result = CliRunner().invoke(app, ["ingest", str(landed), "--dataset", "dailycheckins"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("success dailycheckins")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.stderr
    assert f"notification via {missing} not delivered" in warnings[0] and "@" not in warnings[0], warnings
    assert "Traceback" not in result.stdout + result.stderr

    # ... and in the run's own logs on the Prefect server (the UI), where a deployment run's user looks.
    [run] = get_ledger().recent(1)
    flow_run_id = run[0].flow_run_id
    deadline = time.monotonic() + 20
    while not any("not delivered" in m for m in run_logs(flow_run_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert any(f"notification via {missing} not delivered" in m for m in run_logs(flow_run_id))


def run_logs(flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]))
            )
            return [log.message for log in logs]

    return run_coro_as_sync(read())


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word: a wrong port, a proxy that swallows packets."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.usefixtures("prefect_harness")
def test_an_email_alert_to_a_server_that_never_answers_is_a_warning_not_a_hang(
    sluice_env: Path, silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prefect-email opens its SMTP connection with no timeout: ``notify test`` and every alerting run (a
    deployment's run too, which then never ended) waited forever for the server's greeting."""
    from prefect_email import EmailServerCredentials, SMTPType
    from typer.testing import CliRunner

    from sluice.adapters import notify
    from sluice.cli import app
    from sluice.settings import reload_settings

    monkeypatch.setattr(notify, "SMTP_TIMEOUT_SECONDS", 1, raising=False)
    name = f"silent-{uuid.uuid4().hex[:6]}"
    notify.EmailNotification(
        to="team@example.com",
        email_from="sluice@example.com",
        credentials=EmailServerCredentials(
            smtp_server="127.0.0.1", smtp_port=silent_server, smtp_type=SMTPType.INSECURE
        ),
    ).save(name)
    monkeypatch.setenv("SLUICE_NOTIFY_BLOCKS", f"email-notification/{name}@always")
    reload_settings()

    started = time.monotonic()
    tried = CliRunner().invoke(app, ["notify", "test", name])
    said = f"the SMTP server 127.0.0.1:{silent_server} did not answer within 1 s (check the host, the port"
    assert tried.exit_code == 1 and said in " ".join(tried.stderr.split()), tried.output
    landed = sluice_env / "landing" / "dailycheckins.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text("user,timestamp,hours,project\nned,2019-09-26 00:00:00 UTC,4.0,bizdev\n")
    result = CliRunner().invoke(app, ["ingest", str(landed), "--dataset", "dailycheckins"])
    assert time.monotonic() - started < 60
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("success dailycheckins")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"email-notification/{name} not delivered: {said}" in warnings[0], warnings
