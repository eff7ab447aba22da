"""The failed checks ``sluice ingest`` and the demo print under a load that quarantined rows."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.errors import failed_check
from sluice.report import IngestReport, failure_lines


def report(failures: list[dict[str, Any]], quarantined: int) -> IngestReport:
    return IngestReport(
        run_id="r",
        dataset="dailycheckins",
        source="x.csv",
        status="success",
        state="load",
        rows_quarantined=quarantined,
        failures=failures,
    )


def check(row: int, column: str, value: object, check: str = "required") -> dict[str, Any]:
    return {"row": row, "column": column, "check": check, "value": value}


def test_the_rest_is_counted_in_rows_not_in_checks() -> None:
    """Row 3 failed two checks: three lines name two rows, so 5 quarantined rows leave 3 more, not 2."""
    failures = [
        check(3, "hours", "25"),
        check(3, "timestamp", "x"),
        check(4, "user", ""),
        check(9, "user", ""),
    ]
    lines = failure_lines(report(failures, 5))
    assert lines == [
        "row 3, column hours: required (value '25')",
        "row 3, column timestamp: required (value 'x')",
        "row 4, column user: required (value '')",
        "and 3 more rows: all of them, with the reason for each, in the quarantine file",
    ]
    assert failure_lines(report(failures, 3), limit=4)[-1] == "row 9, column user: required (value '')"


def test_nothing_more_when_every_row_is_shown_and_nothing_at_all_without_failures() -> None:
    assert failure_lines(report([check(2, "views", "-3")], 1)) == [
        "row 2, column views: required (value '-3')"
    ]
    assert failure_lines(report([], 0)) == []


def test_a_long_value_is_cut_on_screen_and_less_in_the_quarantine_files_reason() -> None:
    value = "x" * 500
    assert failed_check(check(1, "*", value)).endswith("… (500 characters))")
    assert len(failed_check(check(1, "*", value))) < 200
    assert failed_check(check(1, "*", value), 1_000).endswith(f"'{value}')")
    assert failed_check(check(1, "*", value * 3), 1_000).endswith("… (1,500 characters))")


def test_a_failed_pipeline_run_counts_its_checks_and_names_its_quarantine_file_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Totesys cycle that failed at validate said "1 checks failed", and named the quarantine file in its error
    and again on a ``failures:`` line below it."""
    import pandas as pd

    from sluice.checks import validation_failed
    from sluice.cli.totesys import print_cycle

    failures = pd.DataFrame(
        [
            {
                "table": "dim_currency",
                "row": 2,
                "column": "currency_code",
                "check": "str_length(3)",
                "value": "G1",
            }
        ]
    )
    error = validation_failed("totesys", failures, "/q/totesys/run.failures.csv")
    assert str(error).startswith("totesys: 1 check failed, nothing loaded; first: dim_currency row 2")
    assert "2 checks failed" in str(validation_failed("totesys", pd.concat([failures, failures]), "/q/f.csv"))
    failed = IngestReport(
        run_id="r",
        dataset="totesys",
        source="totesys",
        status="failed",
        state="validate",
        error=str(error),
        quarantine_uri="/q/totesys/run.failures.csv",
    )
    print_cycle(failed)
    said = capsys.readouterr().err
    assert said.count("/q/totesys/run.failures.csv") == 1, said
