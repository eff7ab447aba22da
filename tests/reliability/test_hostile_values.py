"""Values and files the warehouse cannot take as written, through the real ingest into the real PostgreSQL: the
bad rows are quarantined with their column and check, the rest loads exactly as written, and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_ingest

pytestmark = pytest.mark.usefixtures("prefect_harness")

STAMP = "2018-12-20 00:00:00 UTC"


def land(folder: Path, name: str, text: str) -> Path:
    path = folder / "landing" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rows(query: str) -> list[tuple[object, ...]]:
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]


def quarantined(uri: str | None) -> set[tuple[int, str, str]]:
    assert uri
    frame = pd.read_csv(uri, usecols=["row", "column", "check"])
    return {(int(r), str(c), str(k)) for r, c, k in frame.itertuples(index=False)}


@pytest.fixture
def empty_staging(sluice_env: Path) -> Path:
    with get_engine().begin() as conn:
        for table in ("staging.orders", "staging.reviews"):
            if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar():
                conn.execute(sa.text(f"TRUNCATE {table}"))
    return sluice_env


def test_values_past_the_columns_types_are_quarantined_not_a_failed_load(empty_staging: Path) -> None:
    header = "order_id,customer_id,order_date,product_id,unit_price,quantity,total_price\n"
    text = header + (
        "1,5,2022-07-13,24,1.005,2,2.01\n"  # numeric(14, 2) would store 1.01 (and 2.02 != 2.01)
        "2,5,2022-07-13,24,10000000000000,1,10000000000000\n"  # numeric(14, 2) overflows: the COPY failed
        "3,5,2022-07-13,24,1,3000000000,3000000000\n"  # past a PostgreSQL integer: the COPY failed
        "9007199254740993,5,2022-07-13,24,0.10,3,0.30\n"
    )
    report = run_ingest(str(land(empty_staging, "orders.csv", text)), dataset="orders", mode="soft")
    assert (report.status, report.rows_loaded, report.rows_quarantined) == ("success", 1, 3), report
    assert {(row, column) for row, column, _ in quarantined(report.quarantine_uri)} == {
        (1, "unit_price"),
        (2, "unit_price"),
        (3, "quantity"),
    }
    got = rows("SELECT order_id, unit_price::text, quantity, total_price::text FROM staging.orders")
    assert got == [(9007199254740993, "0.10", 3, "0.30")]


def test_nul_bytes_in_checkins_are_quarantined_and_hours_are_stored_to_two_decimals(sluice_env: Path) -> None:
    text = (
        f"user,timestamp,hours,project\nned\x00x,{STAMP},1.5,p\njaime,{STAMP},0.333,p\narya,{STAMP},0.25,p\n"
    )
    report = run_ingest(
        str(land(sluice_env, "dailycheckins.csv", text)), dataset="dailycheckins", mode="soft"
    )
    assert (report.status, report.rows_loaded) == ("success", 2), report
    assert quarantined(report.quarantine_uri) == {(1, "user", "no NUL character")}
    # numeric(5, 2), rounded as the Glue job Sluice replaces rounded hours
    got = rows("SELECT username, hours::text FROM tm.daily_checkins ORDER BY username")
    assert got == [("arya", "0.25"), ("jaime", "0.33")]


def test_a_padded_header_with_a_ragged_record_reads_by_name(sluice_env: Path) -> None:
    # the ragged record sends the pass to pandas' reader, which once looked the columns up unstripped
    text = f" user , timestamp ,hours,project\nned,{STAMP},1.5,p,extra\njaime,{STAMP},2,q\n"
    report = run_ingest(
        str(land(sluice_env, "dailycheckins.csv", text)), dataset="dailycheckins", mode="soft"
    )
    assert (report.status, report.rows_loaded, report.rows_quarantined) == ("success", 1, 1), report
    assert rows("SELECT username, project FROM tm.daily_checkins") == [("jaime", "q")]


def test_a_reviews_file_whose_every_row_fails_does_not_empty_the_table(empty_staging: Path) -> None:
    good = run_ingest(
        str(land(empty_staging, "reviews.csv", "review,product_id\n5,1\n4,2\n")), dataset="reviews"
    )
    assert good.rows_loaded == 2
    bad = land(empty_staging, "reviews-2.csv", "review,product_id\n6,1\n0,2\n")
    report = run_ingest(str(bad), dataset="reviews", mode="soft")
    assert report.status == "failed" and report.rows_quarantined == 2, report
    assert "nothing was loaded and the table keeps its rows" in report.error and "\n" not in report.error
    assert sorted(rows("SELECT review, product_id FROM staging.reviews")) == [(4, 2), (5, 1)]


@pytest.mark.parametrize("chunk_rows", [2, 10_000])
def test_a_key_repeated_in_one_file_fails_every_occurrence_wherever_the_chunks_fall(
    empty_staging: Path, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_CHUNK_ROWS", str(chunk_rows))
    reload_settings()
    header = "order_id,customer_id,order_date,product_id,unit_price,quantity,total_price\n"
    text = header + "11,5,2022-07-13,24,1,1,1\n12,5,2022-07-13,24,1,1,1\n11,6,2022-07-13,24,2,1,2\n"
    report = run_ingest(str(land(empty_staging, "orders.csv", text)), dataset="orders", mode="soft")
    assert (report.status, report.rows_loaded, report.rows_quarantined) == ("success", 1, 2), report
    assert quarantined(report.quarantine_uri) == {
        (1, "order_id", "unique: the key occurs more than once in the file"),
        (3, "order_id", "unique: the key occurs more than once in the file"),
    }
    assert rows("SELECT order_id, customer_id FROM staging.orders") == [(12, 5)]
