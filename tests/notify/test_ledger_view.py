"""`sluice ledger` reads on an 80-column terminal: one line of facts per run, its error in full below it (the
nine-column table folded every value, `dailycheck|ins`, and cut errors at 120 characters)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_ledger_lists_each_run_on_one_line_and_its_whole_error_below(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.cli import app

    monkeypatch.setenv("COLUMNS", "80")
    landed = sluice_env / "landing" / "dailycheckins.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text("user,timestamp,hours,project\nned,2019-09-26 00:00:00 UTC,4.0,bizdev\n")
    missing = sluice_env / "landing" / ("a-file-name-long-enough-to-need-more-than-one-line-" * 3 + ".csv")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(landed), "--dataset", "dailycheckins"]).exit_code == 0
    assert runner.invoke(app, ["ingest", str(missing), "--dataset", "dailycheckins"]).exit_code == 1

    result = runner.invoke(app, ["ledger", "--limit", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Recent runs (2)"
    assert "  dailycheckins  failed at extract  read 0, loaded 0, quarantined 0" in lines[1]
    assert lines[2] == f"    {missing}: file not found"  # whole, on one line (the terminal wraps it)
    assert "  dailycheckins  success at load  read 1, loaded 1, quarantined 0" in lines[3]
    assert len(lines) == 4
