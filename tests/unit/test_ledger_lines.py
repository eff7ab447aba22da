"""A ledger state's log line (the run's logs in the Prefect UI, CloudWatch) says the counts that state has, by
name: it said ``validate success: 0 rows`` for a validation that quarantined none of 1,000 rows."""

from __future__ import annotations

import uuid

import pytest

from sluice.ledger import LedgerEntry, state_line


def entry(state: str, status: str = "success", **counts: int) -> LedgerEntry:
    made = LedgerEntry(ingestion_id=uuid.uuid4(), state=state, dataset="orders", source="s3://b/orders.csv",
                       status=status)  # fmt: skip
    for name, value in counts.items():
        setattr(made, name, value)
    return made


@pytest.mark.parametrize(
    ("made", "said"),
    [
        (entry("extract"), "extract success"),
        (entry("transform", rows_read=1000), "transform success: 1,000 rows read"),
        (entry("validate", rows_quarantined=6), "validate success: 6 rows quarantined"),
        (entry("validate", rows_quarantined=0), "validate success: 0 rows quarantined"),
        (entry("load", rows_loaded=994), "load success: 994 rows loaded"),
        (
            entry("load", rows_read=994, rows_loaded=125, rows_quarantined=0),
            "load success: 994 rows read, 125 loaded, 0 quarantined",
        ),
    ],
)
def test_a_state_line_names_each_count_it_has(made: LedgerEntry, said: str) -> None:
    assert state_line(made) == said


def test_a_failed_state_line_is_its_error() -> None:
    failed = entry("transform", status="fail", rows_read=10)
    failed.error = "orders.csv: missing required column(s) order_id"
    assert state_line(failed) == "transform fail: orders.csv: missing required column(s) order_id"
