"""The demo's table of ingests: the built-in datasets' names and tables whole at 80 columns."""

from __future__ import annotations

import io

from rich.console import Console

from sluice import datasets
from sluice.demo import ingestions
from sluice.report import IngestReport


def report(dataset: str, table: str, status: str = "success") -> IngestReport:
    return IngestReport(
        run_id="r", dataset=dataset, source="s", status=status, state="load",
        rows_read=1_000, rows_loaded=989, rows_quarantined=11, table=table,
    )  # fmt: skip


def drawn(reports: list[IngestReport], width: int = 80) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=True, color_system=None).print(ingestions(reports))
    return out.getvalue().splitlines()


def test_every_built_in_dataset_fits_whole_in_80_columns() -> None:
    """Boxed, `tm.daily_checkins` was drawn `tm.daily_checkin` / `s`, `shipment_deliveries` cut in two."""
    reports = [report(d.name, f"{d.table.schema}.{d.table.name}") for d in datasets.all_datasets()]
    lines = drawn(reports)
    assert len(lines) == 3 + len(reports), lines  # title, header, rule, one line per ingest
    for r, line in zip(reports, lines[3:], strict=True):
        assert line.split() == [r.dataset, "1,000", "989", "11", r.table], line
    assert "status" not in lines[1]


def test_a_failed_run_shows_the_status_column() -> None:
    skipped = report("shipment_deliveries", "staging.shipment_deliveries", "skipped")
    assert "status" not in drawn([report("orders", "staging.orders"), skipped])[1]  # said under the table
    lines = drawn(
        [report("orders", "staging.orders"), report("reviews", "staging.reviews", "failed"), skipped]
    )
    assert lines[1].split() == ["dataset", "status", "read", "loaded", "quarantined", "table"]
    assert [line.split()[1] for line in lines[3:6]] == ["success", "failed", "skipped"]
