"""A Totesys cycle in bounded memory: ``transaction`` and the facts go through transform, checks and load chunk by
chunk (``SLUICE_CHUNK_ROWS``), and the result does not depend on the chunking."""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tests.conftest import TOTESYS_BOOKKEEPING
from tests.totesys.conftest import Env
from tests.totesys.test_pipeline import count, cycle

ORDERS = 40  # 40 sales orders, 20 purchase orders, 60 transactions and payments


def chunk_rows(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_CHUNK_ROWS", str(rows))
    reload_settings()


def warehouse(env: Env) -> dict[str, list[tuple]]:
    """Every star-schema table's rows (identity columns aside), sorted, plus the bookkeeping a cycle leaves."""
    from sluice.tables.totesys import WAREHOUSE_TABLES

    out: dict[str, list[tuple]] = {}
    with env.warehouse.connect() as conn:
        for name, table in WAREHOUSE_TABLES.items():
            columns = [c for c in table.columns if c.identity is None]
            out[name] = sorted(tuple(r) for r in conn.execute(sa.select(*columns)))
        for name in ("totesys_watermarks", "totesys_recent", "totesys_max_ids", "totesys_lookups"):
            rows = conn.execute(sa.text(f"SELECT * FROM sluice.{name}")).mappings().all()
            ignored = {"ingestion_id", "moved_at"}
            out[name] = sorted(tuple(str(v) for k, v in r.items() if k not in ignored) for r in rows)
    return out


def empty_warehouse(env: Env) -> None:
    with env.warehouse.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS warehouse CASCADE"))
        for table in TOTESYS_BOOKKEEPING:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS sluice.{table}"))


def spooled(settings_home: Path) -> list[Path]:
    return [p for p in (settings_home / "work").rglob("*") if p.is_file()]


def test_a_cycle_of_several_chunks_loads_the_warehouse_one_chunk_loads(
    totesys_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 7 rows (9 for the 60 payments) and one chunk give the same warehouse, bookkeeping included;
    the processed Parquet holds one row group per chunk, and no spool file is left behind."""
    from sluice.fakes.totesys import generate, seed
    from sluice.settings import get_settings
    from sluice.totesys import processed_zone

    seed(totesys_env.source, generate(ORDERS, random.Random(11)))
    chunk_rows(monkeypatch, 7)
    chunked = cycle()
    assert chunked.status == "success", chunked.error
    assert chunked.extracted["payment"] == 60
    in_chunks = warehouse(totesys_env)
    assert len(in_chunks["fact_payment"]) == 60 and len(in_chunks["dim_transaction"]) == 60
    payments = [p for p in Path(processed_zone(get_settings())).rglob("fact_payment-*.parquet")]
    assert [pq.ParquetFile(p).num_row_groups for p in payments] == [9]
    assert spooled(get_settings().home) == []

    empty_warehouse(totesys_env)
    chunk_rows(monkeypatch, 1_000_000)
    whole = cycle()
    assert whole.status == "success", whole.error
    assert whole.loaded == chunked.loaded and whole.extracted == chunked.extracted
    assert warehouse(totesys_env) == in_chunks


def test_a_bad_row_in_the_third_chunk_halts_the_cycle_with_nothing_loaded_and_names_it(
    totesys_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 5 sales orders: the 13th of the batch (third chunk) has a date in another format. Nothing loads
    (no dimension either), no watermark moves, and the quarantine names its table, batch row, column and check;
    the rows of the other chunks are not reported."""
    from sluice.fakes.totesys import generate, seed
    from sluice.settings import get_settings

    seed(totesys_env.source, generate(ORDERS, random.Random(12)))
    with totesys_env.source.begin() as conn:
        thirteenth = conn.execute(
            sa.text(
                "SELECT sales_order_id FROM sales_order ORDER BY last_updated, sales_order_id OFFSET 12 LIMIT 1"
            )
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE sales_order SET agreed_payment_date = '13/01/2024' WHERE sales_order_id = :id"),
            {"id": thirteenth},
        )
    chunk_rows(monkeypatch, 5)
    report = cycle()
    assert report.status == "failed" and report.state == "validate"
    assert report.rows_quarantined == 1
    failures = pd.read_csv(report.quarantine_uri, dtype=str)
    assert len(failures) == 1
    failure = failures.iloc[0]
    assert (failure["source_table"], failure["source_id"], failure["batch_row"]) == (
        "sales_order",
        str(thirteenth),
        "13",
    )
    assert failure["column"] == "agreed_payment_date" and "13/01/2024" in failure["source_row"]
    assert f"sales_order {thirteenth}" in report.error and "row 13 of" in report.error
    batch = pd.read_csv(failure["batch"], dtype=str, keep_default_na=False)
    assert batch.loc[12, "sales_order_id"] == str(thirteenth)
    for table in ("warehouse.dim_date", "warehouse.dim_location", "warehouse.fact_sales_order"):
        assert count(totesys_env.warehouse, table) == 0, table
    assert count(totesys_env.warehouse, "sluice.totesys_watermarks") == 0
    assert spooled(get_settings().home) == []


def test_a_load_that_dies_after_its_first_chunks_loads_nothing_and_the_next_cycle_loads_each_row_once(
    totesys_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load COPYs fact_sales_order's first chunk, then its second cannot be read (the task died there): the
    transaction rolls back, every table stays empty and no watermark moves. The next cycle loads every row once."""
    from sluice import totesys
    from sluice.fakes.totesys import generate, seed
    from sluice.settings import get_settings

    seed(totesys_env.source, generate(ORDERS, random.Random(13)))
    chunk_rows(monkeypatch, 5)
    settings = get_settings()
    totesys.ensure_warehouse(totesys_env.warehouse)
    run = totesys.extract(
        totesys_env.source, totesys_env.warehouse, settings, datetime(2024, 1, 1), uuid.uuid4()
    )
    built = totesys.build(run, totesys.read_lookups(totesys_env.warehouse))
    assert built.failures.empty
    orders = built.tables["fact_sales_order"]
    assert len(orders.chunks) == ORDERS // 5
    orders.chunks[1].unlink()
    with pytest.raises(FileNotFoundError):
        totesys.load(totesys_env.warehouse, built.tables, run, settings)
    for table in totesys.WAREHOUSE_TABLES:
        assert count(totesys_env.warehouse, f"warehouse.{table}") == 0, table
    assert count(totesys_env.warehouse, "sluice.totesys_watermarks") == 0
    totesys.discard(run)
    assert not run.work or not run.work.exists()

    report = cycle()
    assert report.status == "success", report.error
    with totesys_env.warehouse.connect() as conn:
        repeated = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT sales_order_id FROM warehouse.fact_sales_order "
                "GROUP BY sales_order_id, last_updated_date, last_updated_time HAVING count(*) > 1) AS r"
            )
        ).scalar_one()
    assert repeated == 0
    assert count(totesys_env.warehouse, "warehouse.fact_sales_order") == ORDERS
    assert count(totesys_env.warehouse, "warehouse.fact_payment") == ORDERS + ORDERS // 2
