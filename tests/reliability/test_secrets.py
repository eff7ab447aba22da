"""No secret reaches logs, artifacts, the ledger, quarantine files, reports or errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from sluice.cli.runner import run_ingest

pytestmark = pytest.mark.usefixtures("prefect_harness")

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
