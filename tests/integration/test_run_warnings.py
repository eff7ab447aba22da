"""Sluice's own warnings during a run reach the user: one ``warning: ...`` line on the command's stderr, and the
run's logs on the Prefect server (the UI, where a deployment run's user looks), with the load's own records.

Before, records of Sluice's loggers (``sluice.*``, ``tasks.*``) went only to the root logger, whose console handler
the CLI sets to CRITICAL once Prefect has configured logging: a column ignored by a dataset's drift policy, or a
Glue catalog that could not be written, was said nowhere.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.notify.test_alert_settings import run_logs

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _ingest(landed: Path, dataset: str) -> tuple[list[str], str]:
    """Warning lines of ``sluice ingest`` (in-process, as the CLI runs it) and the id of the run it made."""
    from typer.testing import CliRunner

    from sluice.cli import app
    from sluice.ledger import get_ledger

    result = CliRunner().invoke(app, ["ingest", str(landed), "--dataset", dataset])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"success {dataset}"), result.output
    assert "Traceback" not in result.stdout + result.stderr
    [run] = get_ledger().recent(1)
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")], str(
        run[0].flow_run_id
    )


def _logged(flow_run_id: str, wanted: Callable[[str], bool]) -> list[str]:
    """The run's log messages on the Prefect server once one is ``wanted`` (its logs are sent in batches)."""
    deadline = time.monotonic() + 20
    messages = run_logs(flow_run_id)
    while not any(wanted(m) for m in messages) and time.monotonic() < deadline:
        time.sleep(0.5)
        messages = run_logs(flow_run_id)
    return messages


def test_a_column_the_drift_policy_ignores_is_a_warning_on_the_console_and_in_the_runs_logs(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice import datasets, registry

    lenient = dataclasses.replace(
        datasets.get_dataset("dailycheckins"), name="checkins_lenient", patterns=(), extra_columns="ignore"
    )
    monkeypatch.setitem(registry._REGISTRY, lenient.name, lenient)
    landed = sluice_env / "landing" / "checkins.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text(
        f"user,timestamp,hours,project,mood\n{uuid.uuid4().hex},2019-09-26 00:00:00 UTC,4,x,:)\n"
    )

    warnings, flow_run_id = _ingest(landed, lenient.name)

    said = f"{landed}: ignoring unexpected column(s) mood (drift policy 'ignore')"
    assert warnings == [f"warning: {said}"]
    logs = _logged(flow_run_id, lambda m: "busy seconds" in m)
    assert logs.count(said) == 1, logs
    # the load's own records (INFO) are in the run's logs too: its timings
    assert any(m.startswith(f"{landed}: busy seconds read") for m in logs), logs


def test_a_glue_catalog_that_cannot_be_written_is_a_warning_on_the_console_and_in_the_runs_logs(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_GLUE_DATABASE", "sluice_sertis")  # while the staging zone is a local folder
    reload_settings()
    landed = sluice_env / "landing" / "transactions-2011-01.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text(
        f"transactionId|custId|transactionDate|productSold|unitsSold\n{uuid.uuid4().int % 10**9}|0000001|2011-01-01|A|3\n"
    )

    warnings, flow_run_id = _ingest(landed, "transactions")

    said = "Glue catalog skipped: the staging zone is not on S3"
    assert warnings == [f"warning: {said}"]
    assert _logged(flow_run_id, lambda m: m == said).count(said) == 1
