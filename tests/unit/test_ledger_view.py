"""``sluice ledger`` on a terminal: a table where it fits, whole values on lines of their own where it does not."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from sluice.cli import print_runs

ROWS = [
    ("2026-11-26 03:54:37", "ade0a79e-1111-2222-3333-444455556666", "customers", "success", "load",
     "994", "125", "0", "", "sertis.transactions"),
    ("2026-11-26 03:54:36", "637fba5c-1111-2222-3333-444455556666", "totesys", "skipped", "extract",
     "0", "0", "0", "no new data since the watermarks", "totesys@localhost/totesys"),
    ("2026-11-26 03:54:34", "ea61fc05-1111-2222-3333-444455556666", "shipment_deliveries", "failed", "validate",
     "1000000", "0", "0", "row 3, column shipped_on: a date YYYY-MM-DD (value '2021-13-01') " * 3,
     "s3://sluice-landing-123456789012-eu-west-2/data2bots/shipment_deliveries/2026/11/26/shipment_deliveries.csv"),
]  # fmt: skip


def shown(width: int) -> list[str]:
    out = io.StringIO()
    print_runs(Console(file=out, width=width, force_terminal=True, color_system=None, emoji=False), ROWS)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [60, 80, 100])
def test_a_narrow_terminal_gets_every_value_whole(width: int) -> None:
    """At 80 columns the table cut every value into pieces ('2026-1' / '1-26', 'succes' / 's', 'shipme' / 'nt_del')."""
    lines = shown(width)
    assert lines and all(len(line) <= width for line in lines), lines
    text = " ".join(" ".join(lines).split())  # a value cut in two would read "succes s"
    for started, run, dataset, status, state, *_, source in ROWS:
        assert f"{started} {run[:8]} {dataset}: {status} ({state})" in text, text
        assert source in text.replace(" ", ""), text  # whole, if folded over lines
    assert "994 read, 125 loaded, 0 quarantined" in text
    assert "1,000,000 read, 0 loaded, 0 quarantined" in text
    assert "no new data since the watermarks" in text
    assert "┃" not in text


def test_a_wide_terminal_gets_the_table() -> None:
    lines = shown(180)
    header = next(line for line in lines if "started" in line)
    assert header.split("┃")[1:-1] and [c.strip() for c in header.split("┃")[1:-1]] == [
        "started", "run", "dataset", "source", "status", "state", "read", "loaded", "quarantined", "error",
    ]  # fmt: skip
    text = "\n".join(lines)
    for started, run, dataset, *_ in ROWS:
        assert started in text and f" {run[:8]} " in text and f" {dataset} " in text
    assert "1,000,000" in text  # read, as the other commands print counts
    # which file a run was (the views had no source): a long one keeps its end, the file's name; a long error
    # says where it was cut (it stopped mid-word)
    assert "…6/11/26/shipment_deliveries.csv " in text and " sertis.transactions " in text
    assert sum(line.count("…") for line in lines) == 2, text  # that source, and that error
