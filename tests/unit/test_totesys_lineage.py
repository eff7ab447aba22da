"""A Totesys cycle's table puts each warehouse table beside the source tables it is built from.

It used to zip two sorted lists side by side, so its rows read ``address 30 │ dim_counterparty 20``: a pairing
that is no lineage (``dim_location`` is the one built from ``address``)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from sluice.cli.output import console
from sluice.cli.totesys import print_cycle
from sluice.transforms.totesys import BUILT_FROM, DIMENSIONS, FACTS, TABLES, lineage


def _printed(extracted: dict[str, int], loaded: dict[str, int]) -> list[str]:
    report = SimpleNamespace(
        status="success", error=None, seconds=0.5, extracted=extracted, loaded=loaded, quarantine_uri=None
    )
    width = console.width
    console.width = 100
    try:
        with console.capture() as captured:
            print_cycle(report)
    finally:
        console.width = width
    return [
        re.sub(r"\s+", " ", line.strip("│┃ ")).replace(" │ ", " | ").replace(" ┃ ", " | ")
        for line in captured.get().splitlines()
    ]


def test_every_warehouse_table_names_its_sources_and_every_source_feeds_one() -> None:
    assert list(BUILT_FROM) == [*DIMENSIONS, *FACTS]
    fed = {source for sources in BUILT_FROM.values() for source in sources}
    assert fed == set(TABLES)


def test_a_first_cycle_shows_each_table_beside_what_it_is_built_from() -> None:
    extracted = {"address": 30, "counterparty": 20, "department": 8, "staff": 20, "sales_order": 1_500}
    loaded = {
        "dim_location": 30,
        "dim_counterparty": 20,
        "dim_staff": 20,
        "fact_sales_order": 1_500,
        "dim_date": 605,
    }
    lines = _printed(extracted, loaded)
    assert "warehouse table | rows loaded | built from (rows extracted)" in lines
    assert "dim_location | 30 | address 30" in lines
    assert "dim_counterparty | 20 | counterparty 20, address 30" in lines
    assert "dim_staff | 20 | staff 20, department 8" in lines
    assert "fact_sales_order | 1,500 | sales_order 1,500" in lines
    assert "dim_date | 605 | the facts' dates" in lines
    # load order: dimensions, then facts
    names = [line.split(" | ")[0] for line in lines if " | " in line][1:]
    assert names == ["dim_date", "dim_location", "dim_counterparty", "dim_staff", "fact_sales_order"]


def test_an_incremental_cycle_shows_why_a_table_was_rebuilt() -> None:
    """An address change rebuilds the counterparties whose legal address it is: their row says ``address 2``."""
    rows = lineage({"address": 2}, {"dim_location": 2, "dim_counterparty": 1})
    assert rows == [
        ("dim_location", 2, "address 2"),
        ("dim_counterparty", 1, "address 2"),
    ]


@pytest.mark.parametrize(
    ("extracted", "loaded", "expected"),
    [
        # a department moved that no staff is in: extracted, nothing to rebuild
        ({"department": 1}, {}, [("dim_staff", 0, "department 1")]),
        # a table the mapping does not know still shows what it loaded
        ({}, {"dim_other": 3}, [("dim_other", 3, "")]),
        ({}, {}, []),
    ],
)
def test_lineage_keeps_every_table_that_extracted_or_loaded_rows(
    extracted: dict[str, int], loaded: dict[str, int], expected: list[tuple[str, int, str]]
) -> None:
    assert lineage(extracted, loaded) == expected
