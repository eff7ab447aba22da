"""Totesys end to end on the real PostgreSQL: seed the OLTP, run the real flow, check the warehouse."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.conftest import shared_file
from tests.totesys.conftest import Env


def cycle() -> object:
    from sluice.cli.runner import run_totesys

    return run_totesys()


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def marks(engine: sa.Engine) -> dict[str, object]:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.text("SELECT table_name, last_updated FROM sluice.totesys_watermarks")).all()
        )


def orphans(engine: sa.Engine) -> list[str]:
    """Every declared foreign key of schema warehouse, checked by a query: the referencing values that are missing."""
    query = sa.text(
        """
        SELECT c.conrelid::regclass::text AS child, a.attname AS col,
               c.confrelid::regclass::text AS parent, af.attname AS pcol
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1]
        WHERE c.contype = 'f' AND c.connamespace = 'warehouse'::regnamespace
        """
    )
    problems = []
    with engine.connect() as conn:
        fks = conn.execute(query).all()
        assert len(fks) >= 20, fks  # every fact column that points at a dimension has its constraint
        for child, col, parent, pcol in fks:
            missing = conn.execute(
                sa.text(
                    f'SELECT count(*) FROM {child} x WHERE x."{col}" IS NOT NULL AND NOT EXISTS '
                    f'(SELECT 1 FROM {parent} p WHERE p."{pcol}" = x."{col}")'
                )
            ).scalar_one()
            if missing:
                problems.append(f"{child}.{col} → {parent}: {missing}")
    return problems


@pytest.mark.acceptance
def test_shared_snapshot_first_run_idle_run_and_one_update(totesys_env: Env) -> None:
    from sluice.fakes.totesys import seed_from_folder

    folder = shared_file("totesys", "sales_order.csv").parent
    seed_from_folder(totesys_env.source, folder)

    first = cycle()
    assert first.status == "success", first.error
    wh = totesys_env.warehouse
    assert count(wh, "warehouse.fact_sales_order") == 9845
    expected = {
        "dim_location": "address",
        "dim_counterparty": "counterparty",
        "dim_staff": "staff",
        "dim_currency": "currency",
        "dim_design": "design",
        "dim_payment_type": "payment_type",
        "dim_transaction": "transaction",
    }
    for dim, source in expected.items():
        assert count(wh, f"warehouse.{dim}") == len(pd.read_csv(folder / f"{source}.csv")), dim
    assert count(wh, "warehouse.fact_purchase_order") == 4114
    assert count(wh, "warehouse.fact_payment") == 13959
    with wh.connect() as conn:
        line1 = conn.execute(
            sa.text(
                "SELECT counterparty_legal_address_line_1 FROM warehouse.dim_counterparty WHERE counterparty_id = 1"
            )
        ).scalar_one()
        leds = conn.execute(
            sa.text("SELECT count(*) FROM warehouse.dim_staff WHERE location = 'Leds'")
        ).scalar_one()
        order2 = conn.execute(
            sa.text(
                "SELECT created_date, created_time, unit_price, agreed_delivery_date FROM warehouse.fact_sales_order "
                "WHERE sales_order_id = 2"
            )
        ).one()
        dates_ok = conn.execute(
            sa.text("SELECT bool_and(extract(isodow FROM date_id) = day_of_week) FROM warehouse.dim_date")
        ).scalar_one()
    assert line1 == "605 Haskell Trafficway"
    assert leds > 0  # department 4's misspelt location is data, kept as it is
    assert str(order2.created_date) == "2022-11-03" and str(order2.created_time) == "14:20:52.186000"
    assert str(order2.unit_price) == "3.94" and str(order2.agreed_delivery_date) == "2022-11-07"
    assert dates_ok
    assert orphans(wh) == []
    # The extracted batch is in the ingestion zone under the agreed layout, the star schema as Parquet.
    staging = totesys_env.warehouse  # noqa: F841 (the zone is local: sluice_env)
    from sluice.settings import get_settings
    from sluice.totesys import ingestion_zone, processed_zone

    csvs = sorted(
        p.relative_to(ingestion_zone(get_settings())) for p in _files(ingestion_zone(get_settings()))
    )
    assert len(csvs) == 11
    parts = str(next(p for p in csvs if p.parts[0] == "sales_order")).split("/")
    assert (
        len(parts) == 6
        and parts[0] == "sales_order"
        and parts[5].startswith("sales_order-")
        and parts[5].endswith(".csv")
    )
    assert len(_files(processed_zone(get_settings()))) == 11

    idle = cycle()
    assert idle.status == "skipped" and idle.rows_read == 0
    assert "no new data" in idle.error
    assert count(wh, "warehouse.fact_sales_order") == 9845

    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE sales_order SET units_sold = units_sold + 7, last_updated = now() WHERE sales_order_id = 2"
            )
        )
    third = cycle()
    assert third.status == "success", third.error
    assert third.extracted == {"sales_order": 1}
    assert third.loaded["fact_sales_order"] == 1
    assert count(wh, "warehouse.fact_sales_order") == 9846
    with wh.connect() as conn:
        versions = (
            conn.execute(
                sa.text(
                    "SELECT units_sold FROM warehouse.fact_sales_order WHERE sales_order_id = 2 ORDER BY sales_record_id"
                )
            )
            .scalars()
            .all()
        )
    assert versions == [42972, 42979]
    assert cycle().status == "skipped"
    assert count(wh, "warehouse.fact_sales_order") == 9846


def _files(root: str) -> list:
    from pathlib import Path

    return [p for p in Path(root).rglob("*") if p.is_file()]


def test_late_commit_inside_the_overlap_is_extracted_and_dimension_changes_propagate(
    totesys_env: Env,
) -> None:
    from sluice.fakes.totesys import generate, seed

    seed(totesys_env.source, generate(60, random.Random(7)))
    assert cycle().status == "success"
    wh = totesys_env.warehouse
    before = count(wh, "warehouse.fact_sales_order")
    mark = marks(wh)["sales_order"]
    with totesys_env.source.begin() as conn:
        # A row whose transaction committed after the last run, stamped a minute *before* its watermark.
        conn.execute(
            sa.text(
                "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold, "
                "unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
                "VALUES (:t, :t, 1, 1, 1, 10, 2.50, 1, '2024-01-02', '2024-01-03', 1)"
            ),
            {"t": mark - timedelta(minutes=1)},
        )
        # Department 4 moves: every staff member in it must show the new location.
        conn.execute(
            sa.text("UPDATE department SET location = 'Leeds', last_updated = now() WHERE department_id = 4")
        )
        in_dept4 = conn.execute(sa.text("SELECT count(*) FROM staff WHERE department_id = 4")).scalar_one()
    report = cycle()
    assert report.status == "success", report.error
    assert report.extracted == {"department": 1, "sales_order": 1}
    assert count(wh, "warehouse.fact_sales_order") == before + 1
    with wh.connect() as conn:
        leds = conn.execute(
            sa.text("SELECT count(*) FROM warehouse.dim_staff WHERE location = 'Leds'")
        ).scalar_one()
        dept4 = conn.execute(
            sa.text(
                "SELECT count(*) FROM warehouse.dim_staff WHERE department_name = 'Dispatch' AND location = 'Leeds'"
            )
        ).scalar_one()
    assert leds == 0 and dept4 == in_dept4
    assert orphans(wh) == []


def test_a_cycle_with_nothing_new_ends_completed_named_skipped(totesys_env: Env) -> None:
    """In the Prefect UI an idle cycle (most of the 20-minute ones) is told from a load, as a skipped ingest is: it
    ended plain ``Completed``, while the ledger said skipped."""
    from sluice.fakes.totesys import generate, seed
    from tests.steps import final_state

    seed(totesys_env.source, generate(10, random.Random(5)))
    loaded = cycle()
    idle = cycle()
    assert (loaded.status, idle.status) == ("success", "skipped"), (loaded.error, idle.error)
    rows = f"{loaded.rows_read:,} read, {loaded.rows_loaded:,} loaded into warehouse, 0 quarantined"
    assert final_state(loaded.flow_run_id) == ("COMPLETED", "Completed", rows)
    assert final_state(idle.flow_run_id) == ("COMPLETED", "Skipped", "no new data since the watermarks")


def test_bad_batch_halts_loads_nothing_and_keeps_the_watermarks(totesys_env: Env) -> None:
    from sluice.fakes.totesys import generate, seed

    seed(totesys_env.source, generate(30, random.Random(3)))
    assert cycle().status == "success"
    wh = totesys_env.warehouse
    before_marks = marks(wh)
    before_facts = count(wh, "warehouse.fact_sales_order")
    with totesys_env.source.begin() as conn:
        conn.execute(sa.text("INSERT INTO currency (currency_code) VALUES ('g1p')"))
        conn.execute(
            sa.text("UPDATE sales_order SET units_sold = 5, last_updated = now() WHERE sales_order_id = 1")
        )
    report = cycle()
    assert report.status == "failed" and report.state == "validate"
    assert "dim_currency" in report.error and "currency_code" in report.error and "G1P" in report.error
    assert report.quarantine_uri and report.quarantine_uri.endswith(".failures.csv")
    failures = pd.read_csv(report.quarantine_uri)
    assert failures.loc[0, "table"] == "dim_currency" and failures.loc[0, "column"] == "currency_code"
    assert marks(wh) == before_marks
    assert count(wh, "warehouse.fact_sales_order") == before_facts
    assert count(wh, "warehouse.dim_currency") == 3
    with wh.connect() as conn:
        states = conn.execute(
            sa.text(
                "SELECT state, status FROM sluice.run_ledger WHERE dataset = 'totesys' AND ingestion_id = :id ORDER BY seq"
            ),
            {"id": report.run_id},
        ).all()
    assert [tuple(s) for s in states] == [
        ("extract", "success"),
        ("transform", "success"),
        ("validate", "fail"),
    ]
    # Fix the source: the next cycle loads both changes.
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE currency SET currency_code = 'JPY', last_updated = now() WHERE currency_code = 'g1p'"
            )
        )
    fixed = cycle()
    assert fixed.status == "success", fixed.error
    assert count(wh, "warehouse.dim_currency") == 4
    assert count(wh, "warehouse.fact_sales_order") == before_facts + 1


def test_every_rejected_source_row_lands_in_quarantine_with_its_reason_and_blocks_loudly(
    totesys_env: Env,
) -> None:
    """Rows that cannot be typed (two sales orders, a payment) and a row whose built dimension breaks its model
    (a currency code): one cycle names them all, each with its source row and why, in the quarantine file the
    error and the ledger name; nothing loads and no watermark moves. The next cycle meets them again and fails
    again, loudly (a new quarantine file); once the source is fixed, everything loads."""
    from sluice.fakes.totesys import generate, seed

    seed(totesys_env.source, generate(30, random.Random(3)))
    assert cycle().status == "success"
    wh = totesys_env.warehouse
    before_marks, before_facts = marks(wh), count(wh, "warehouse.fact_sales_order")
    with totesys_env.source.begin() as conn:
        payment = conn.execute(sa.text("SELECT min(payment_id) FROM payment")).scalar_one()
        conn.execute(sa.text("INSERT INTO currency (currency_code) VALUES ('g1p')"))
        conn.execute(
            sa.text(
                "UPDATE sales_order SET agreed_payment_date = 'soon', last_updated = now() "
                "WHERE sales_order_id IN (3, 4)"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE payment SET payment_date = '2024/01/02', last_updated = now() WHERE payment_id = :p"
            ),
            {"p": payment},
        )
    report = cycle()
    assert report.status == "failed" and report.state == "validate"
    assert report.quarantine_uri and report.quarantine_uri in report.error
    assert report.rows_quarantined == 4
    quarantined = pd.read_csv(report.quarantine_uri, dtype=str, keep_default_na=False)
    found = sorted(
        zip(quarantined["source_table"], quarantined["source_id"], quarantined["column"], strict=True)
    )
    currency = quarantined.loc[quarantined["source_table"] == "currency", "source_id"].iloc[0]
    assert found == sorted(
        [
            ("currency", currency, "currency_code"),
            ("payment", str(payment), "payment_date"),
            ("sales_order", "3", "agreed_payment_date"),
            ("sales_order", "4", "agreed_payment_date"),
        ]
    )
    for row in quarantined.to_dict(
        "records"
    ):  # each: why, in one line, and the whole source row as extracted
        source = json.loads(row["source_row"])
        assert source[f"{row['source_table']}_id"] == row["source_id"]
        assert row["reason"] and "\n" not in row["reason"] and row["batch"].endswith(".csv")
        assert row["source_table"] in row["reason"] and row["column"] in row["reason"]
    orders = quarantined[quarantined["source_table"] == "sales_order"]
    assert {json.loads(r)["agreed_payment_date"] for r in orders["source_row"]} == {"soon"}
    assert "'soon' is not a YYYY-MM-DD date" in orders["reason"].iloc[0]
    with wh.connect() as conn:
        ledger = conn.execute(
            sa.text(
                "SELECT rows_quarantined, quarantine_uri FROM sluice.run_ledger "
                "WHERE ingestion_id = :id AND state = 'validate'"
            ),
            {"id": report.run_id},
        ).one()
    assert tuple(ledger) == (4, report.quarantine_uri)
    assert marks(wh) == before_marks and count(wh, "warehouse.fact_sales_order") == before_facts

    again = cycle()  # nothing fixed: the same rows, the same refusal, a quarantine file of its own
    assert again.status == "failed" and again.rows_quarantined == 4
    assert again.quarantine_uri != report.quarantine_uri
    assert len(pd.read_csv(again.quarantine_uri)) == 4 and marks(wh) == before_marks

    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE currency SET currency_code = 'JPY', last_updated = now() WHERE currency_code = 'g1p'"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE sales_order SET agreed_payment_date = '2024-01-05', last_updated = now() "
                "WHERE sales_order_id IN (3, 4)"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE payment SET payment_date = '2024-01-02', last_updated = now() WHERE payment_id = :p"
            ),
            {"p": payment},
        )
    fixed = cycle()
    assert fixed.status == "success", fixed.error
    assert count(wh, "warehouse.fact_sales_order") == before_facts + 2
    assert count(wh, "warehouse.dim_currency") == 4 and orphans(wh) == []


def test_source_unreachable_fails_cleanly_and_moves_no_watermark(
    totesys_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.fakes.totesys import generate, seed
    from sluice.settings import reload_settings
    from tests.conftest import free_port

    seed(totesys_env.source, generate(20, random.Random(5)))
    assert cycle().status == "success"
    before = marks(totesys_env.warehouse)
    monkeypatch.setenv(
        "SLUICE_TOTESYS_SOURCE_URL", f"postgresql+psycopg2://u:sentinel-pw@127.0.0.1:{free_port()}/totesys"
    )
    monkeypatch.setenv("SLUICE_RETRIES", "1")
    reload_settings()
    report = cycle()
    assert report.status == "failed" and report.state == "extract"
    assert "sentinel-pw" not in json.dumps(report.model_dump())
    # Worded as the warehouse's is: what could not be reached (its URL as written, password hidden), then why,
    # then what to check; not the exception's class name.
    assert report.error.startswith("cannot connect to the Totesys source postgresql://u:***@127.0.0.1:"), (
        report.error
    )
    assert "SourceUnreachable" not in report.error and "SLUICE_TOTESYS_SOURCE_URL" in report.error
    with totesys_env.warehouse.connect() as conn:
        logged = conn.execute(
            sa.text(
                "SELECT error FROM sluice.run_ledger WHERE dataset = 'totesys' AND error IS NOT NULL "
                "ORDER BY started_at DESC LIMIT 1"
            )
        ).scalar_one()
    assert logged.startswith("cannot connect to the Totesys source postgresql://u:***@"), logged
    assert marks(totesys_env.warehouse) == before
    with totesys_env.warehouse.connect() as conn:
        sources = (
            conn.execute(sa.text("SELECT DISTINCT source FROM sluice.run_ledger WHERE dataset = 'totesys'"))
            .scalars()
            .all()
        )
    assert all("sentinel-pw" not in s for s in sources)


def test_existing_warehouse_with_the_old_column_name_is_renamed_in_place_with_its_data(
    totesys_env: Env,
) -> None:
    from sluice.fakes.totesys import generate, seed
    from sluice.totesys import ensure_warehouse

    wh = totesys_env.warehouse
    # A warehouse made by an earlier Sluice: dim_counterparty.counterparty_legal_address_line_2, with a row.
    ensure_warehouse(wh)
    with wh.begin() as conn:
        conn.execute(
            sa.text(
                "ALTER TABLE warehouse.dim_counterparty "
                "RENAME COLUMN counterparty_legal_address_line2 TO counterparty_legal_address_line_2"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO warehouse.dim_counterparty VALUES "
                "(9999, 'Old Ltd', '1 Old Road', 'Unit 2', NULL, 'Leeds', 'LS1', 'UK', '0113')"
            )
        )
    seed(totesys_env.source, generate(20, random.Random(11)))
    report = cycle()
    assert report.status == "success", report.error
    ensure_warehouse(wh)  # idempotent: nothing left to rename
    with wh.connect() as conn:
        columns = (
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'warehouse' "
                    "AND table_name = 'dim_counterparty' AND column_name LIKE 'counterparty_legal_address%' "
                    "ORDER BY ordinal_position"
                )
            )
            .scalars()
            .all()
        )
        old_row = conn.execute(
            sa.text(
                "SELECT counterparty_legal_address_line_1, counterparty_legal_address_line2 "
                "FROM warehouse.dim_counterparty WHERE counterparty_id = 9999"
            )
        ).one()
        loaded = conn.execute(
            sa.text(
                "SELECT count(counterparty_legal_address_line2), count(*) FROM warehouse.dim_counterparty"
            )
        ).one()
    assert columns == ["counterparty_legal_address_line_1", "counterparty_legal_address_line2"]
    assert tuple(old_row) == ("1 Old Road", "Unit 2")
    assert loaded[1] > 1 and report.loaded.get("dim_counterparty", 0) == loaded[1] - 1


def test_every_star_schema_table_of_a_cycle_goes_as_binary_copy(totesys_env: Env) -> None:
    """Issue 17: Totesys' times and Decimals have binary encoders, so no table of a cycle falls back to CSV."""
    from sluice import pgbinary, totesys
    from sluice.adapters.warehouse import qualified, raw_connection
    from sluice.fakes.totesys import generate, seed
    from sluice.settings import get_settings

    seed(totesys_env.source, generate(40, random.Random(5)))
    settings = get_settings()
    totesys.ensure_warehouse(totesys_env.warehouse)
    extracted = totesys.extract(
        totesys_env.source, totesys_env.warehouse, settings, datetime(2024, 1, 1), uuid.uuid4()
    )
    star = totesys.build(extracted, totesys.read_lookups(totesys_env.warehouse)).tables
    assert set(star) == set(totesys.WAREHOUSE_TABLES)
    with totesys_env.warehouse.begin() as conn, raw_connection(conn) as cursor:
        for name, spooled in star.items():
            frame = pd.concat(list(spooled.frames()), ignore_index=True)
            table = totesys.WAREHOUSE_TABLES[name]
            columns = [c.name for c in table.columns if c.identity is None]
            types = pgbinary.column_types(
                cursor, qualified(f"{table.schema}.{name}").as_string(cursor), columns
            )
            assert pgbinary.encode(frame[columns], types) is not None, name
