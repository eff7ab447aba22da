"""Totesys against an OLTP that behaves as real ones do: clocks, concurrent writers, schema drift, bad URLs.

Each test runs the real flow against the embedded PostgreSQL (source and warehouse) and edits the source with
SQL the way its applications would.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.totesys.conftest import Env
from tests.totesys.test_pipeline import count, cycle, marks, orphans


def seeded(env: Env, orders: int = 20, seed: int = 7) -> None:
    from sluice.fakes.totesys import generate
    from sluice.fakes.totesys import seed as seed_tables

    seed_tables(env.source, generate(orders, random.Random(seed)))
    first = cycle()
    assert first.status == "success", first.error


def units(env: Env, order: int) -> list[int]:
    with env.warehouse.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT units_sold FROM warehouse.fact_sales_order WHERE sales_order_id = :o "
                    "ORDER BY last_updated_date, last_updated_time"
                ),
                {"o": order},
            ).scalars()
        )


def test_a_row_stamped_ahead_of_the_source_clock_does_not_hide_later_changes(totesys_env: Env) -> None:
    """A fast application clock stamps one order a day ahead. Its version loads, but the watermark must not jump
    a day: a change stamped correctly an hour later is still extracted, and the cycle after that is idle."""
    seeded(totesys_env)
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE sales_order SET units_sold = 1, last_updated = now() + interval '1 day' "
                "WHERE sales_order_id = 3"
            )
        )
    ahead = cycle()
    assert ahead.status == "success", ahead.error
    assert ahead.extracted == {"sales_order": 1}
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text("UPDATE sales_order SET units_sold = 2, last_updated = now() WHERE sales_order_id = 4")
        )
    later = cycle()
    assert later.status == "success", later.error
    assert later.extracted == {"sales_order": 1}
    assert units(totesys_env, 4)[-1] == 2
    idle = cycle()
    assert idle.status == "skipped" and idle.rows_read == 0, idle.extracted
    assert units(totesys_env, 3)[-1] == 1 and len(units(totesys_env, 3)) == 2


def test_a_busy_oltp_never_breaks_a_cycle_and_every_row_arrives_once(
    totesys_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While cycles extract, the OLTP keeps committing a new staff member together with their first sales order.
    Every cycle must load (a batch never holds the order without its staff member: the foreign key holds), and
    once the writer stops, the warehouse has each order exactly once and every staff member."""
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_RETRIES", "0")
    reload_settings()
    seeded(totesys_env)
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        while not stop.is_set():
            with totesys_env.source.begin() as conn:
                staff = conn.execute(
                    sa.text(
                        "INSERT INTO staff (first_name, last_name, department_id, email_address) "
                        "VALUES ('New', 'Hire', 1, 'new.hire@terrifictotes.com') RETURNING staff_id"
                    )
                ).scalar_one()
                conn.execute(
                    sa.text(
                        "INSERT INTO sales_order (design_id, staff_id, counterparty_id, units_sold, unit_price, "
                        "currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
                        "VALUES (1, :s, 1, 10, 2.50, 1, '2024-01-02', '2024-01-03', 1)"
                    ),
                    {"s": staff},
                )
            written[0] += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        during = [cycle() for _ in range(3)]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert written[0] > 0
    assert [r.status for r in during if r.status == "failed"] == [], [r.error for r in during]
    final = cycle()
    assert final.status in ("success", "skipped"), final.error
    wh, src = totesys_env.warehouse, totesys_env.source
    assert count(wh, "warehouse.fact_sales_order") == count(src, "sales_order")
    assert count(wh, "warehouse.dim_staff") == count(src, "staff")
    with wh.connect() as conn:
        doubled = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT sales_order_id FROM warehouse.fact_sales_order "
                "GROUP BY sales_order_id HAVING count(*) > 1) d"
            )
        ).scalar_one()
    assert doubled == 0
    assert orphans(wh) == []
    assert cycle().status == "skipped"


def test_schema_drift_stops_the_cycle_with_one_error_naming_table_and_column(totesys_env: Env) -> None:
    """A renamed column and a renamed table: one readable error naming both, at extract, nothing loaded, no
    watermark moved, no retry; once the source is back, the change waiting in it loads."""
    seeded(totesys_env)
    wh = totesys_env.warehouse
    before = marks(wh)
    designs = count(wh, "warehouse.dim_design")
    with totesys_env.source.begin() as conn:
        conn.execute(sa.text("ALTER TABLE design RENAME COLUMN design_name TO name"))
        conn.execute(sa.text("UPDATE design SET name = 'Renamed', last_updated = now() WHERE design_id = 1"))
        conn.execute(sa.text("ALTER TABLE payment_type RENAME TO payment_types"))
    report = cycle()
    assert report.status == "failed" and report.state == "extract"
    assert "table design has no column design_name" in report.error, report.error
    assert "table payment_type does not exist" in report.error, report.error
    assert "\n" not in report.error and "Error:" not in report.error  # one line, the user's, not a type name
    assert marks(wh) == before and count(wh, "warehouse.dim_design") == designs
    with totesys_env.source.begin() as conn:
        conn.execute(sa.text("ALTER TABLE design RENAME COLUMN name TO design_name"))
        conn.execute(sa.text("ALTER TABLE payment_types RENAME TO payment_type"))
    fixed = cycle()
    assert fixed.status == "success", fixed.error
    assert fixed.extracted == {"design": 1}
    with wh.connect() as conn:
        name = conn.execute(
            sa.text("SELECT design_name FROM warehouse.dim_design WHERE design_id = 1")
        ).scalar_one()
    assert name == "Renamed"


def test_a_source_without_any_totesys_table_says_how_to_fill_it_not_that_it_changed_shape(
    totesys_env: Env,
) -> None:
    """A new user's first cycle, on a source nobody seeded: not "changed shape" for 11 tables, but one line saying
    the source has no Totesys tables and how to fill one; the ledger says the same. A partial shape keeps its
    message (test above)."""
    report = cycle()
    assert report.status == "failed" and report.state == "extract"
    assert "changed shape" not in report.error and "\n" not in report.error, report.error
    assert "has no Totesys tables" in report.error and "sluice totesys seed-source" in report.error
    assert "SLUICE_TOTESYS_SOURCE_URL" in report.error
    with totesys_env.warehouse.connect() as conn:
        logged = conn.execute(
            sa.text(
                "SELECT error FROM sluice.run_ledger WHERE dataset = 'totesys' AND error IS NOT NULL "
                "ORDER BY started_at DESC LIMIT 1"
            )
        ).scalar_one()
    assert logged == report.error


def test_a_column_added_to_the_source_is_carried_and_ignored(totesys_env: Env) -> None:
    seeded(totesys_env)
    with totesys_env.source.begin() as conn:
        conn.execute(sa.text("ALTER TABLE design ADD COLUMN colour varchar DEFAULT 'red'"))
        conn.execute(sa.text("UPDATE design SET last_updated = now(), design_name = 'X' WHERE design_id = 2"))
    report = cycle()
    assert report.status == "success", report.error
    assert report.loaded == {"dim_design": 1}


def test_a_plain_postgresql_url_is_used_and_a_refused_connection_is_one_json_line(
    totesys_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients are given ``postgresql://user:pw@host/db``: the cycle reads it (not a missing-driver error). A
    database that does not exist is the user's to fix: one line naming the source, no password, no retry."""
    from sluice.cli import app

    socket_dir = totesys_env.source.url.query["host"]
    monkeypatch.setenv("SLUICE_TOTESYS_SOURCE_URL", "unset")  # restored after the test
    monkeypatch.setenv("SLUICE_RETRIES", "3")
    plain = f"postgresql://postgres:sentinel-pw@/totesys?host={socket_dir}"
    seeded_source = totesys_env.source
    from sluice.fakes.totesys import generate, seed

    seed(seeded_source, generate(10, random.Random(2)))
    result = CliRunner().invoke(app, ["totesys", "--source-url", plain, "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 0 and doc["status"] == "success", doc

    missing = f"postgresql://postgres:sentinel-pw@/no_such_db?host={socket_dir}"
    started = datetime.now()
    result = CliRunner().invoke(app, ["totesys", "--source-url", missing, "--json"])
    lines = result.stdout.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stdout
    doc = json.loads(lines[0])
    assert doc["status"] == "failed" and doc["state"] == "extract"
    assert 'database "no_such_db" does not exist' in doc["error"] and "\n" not in doc["error"]
    assert "sentinel-pw" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert (datetime.now() - started).total_seconds() < 10  # not retried: 2 + 4 + 8 s of back-off


def test_a_cycle_that_extracted_before_another_cycle_loaded_loads_nothing(totesys_env: Env) -> None:
    """Two cycles at once: A extracts a design's name, B extracts and loads its newer name, then A reaches its
    load. Applying A would put the older name back into dim_design: it must load nothing and say why."""
    from sluice import totesys
    from sluice.errors import SluiceError
    from sluice.settings import get_settings

    seeded(totesys_env)
    settings = get_settings()
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text("UPDATE design SET design_name = 'Older', last_updated = now() WHERE design_id = 1")
        )
    slow = totesys.extract(
        totesys_env.source, totesys_env.warehouse, settings, datetime(2024, 1, 1), uuid.uuid4()
    )
    slow_tables = totesys.build(slow, totesys.read_lookups(totesys_env.warehouse)).tables
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text("UPDATE design SET design_name = 'Newer', last_updated = now() WHERE design_id = 1")
        )
    fast = cycle()
    assert fast.status == "success", fast.error
    with pytest.raises(SluiceError, match="another totesys cycle loaded design"):
        totesys.load(totesys_env.warehouse, slow_tables, slow, settings)
    with totesys_env.warehouse.connect() as conn:
        name = conn.execute(
            sa.text("SELECT design_name FROM warehouse.dim_design WHERE design_id = 1")
        ).scalar_one()
    assert name == "Newer"
    assert cycle().status == "skipped"


def test_a_retried_load_of_a_committed_cycle_is_not_refused(totesys_env: Env) -> None:
    """The load committed but its acknowledgement was lost: the task's retry re-applies the same run, which is
    harmless (facts never twice) and must not be mistaken for another cycle."""
    from sluice import totesys
    from sluice.settings import get_settings

    seeded(totesys_env)
    settings = get_settings()
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text("UPDATE sales_order SET units_sold = 9, last_updated = now() WHERE sales_order_id = 2")
        )
    run = totesys.extract(
        totesys_env.source, totesys_env.warehouse, settings, datetime(2024, 1, 1), uuid.uuid4()
    )
    tables = totesys.build(run, totesys.read_lookups(totesys_env.warehouse)).tables
    assert totesys.load(totesys_env.warehouse, tables, run, settings)["fact_sales_order"] == 1
    assert totesys.load(totesys_env.warehouse, tables, run, settings)["fact_sales_order"] == 0
    assert units(totesys_env, 2)[-1] == 9 and len(units(totesys_env, 2)) == 2


def test_a_date_in_another_format_fails_the_cycle_naming_row_column_value_and_batch(totesys_env: Env) -> None:
    seeded(totesys_env)
    wh = totesys_env.warehouse
    before, facts = marks(wh), count(wh, "warehouse.fact_sales_order")
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE sales_order SET agreed_payment_date = '03/11/2024', last_updated = now() "
                "WHERE sales_order_id = 5"
            )
        )
    report = cycle()
    assert report.status == "failed" and report.state == "validate"
    assert "sales_order 5: column agreed_payment_date: '03/11/2024' is not a YYYY-MM-DD date" in report.error
    assert "\n" not in report.error and "/sales_order-" in report.error  # the batch it came in
    assert marks(wh) == before and count(wh, "warehouse.fact_sales_order") == facts
    rejected = pd.read_csv(report.quarantine_uri, dtype=str).iloc[0]  # the source row, in quarantine
    assert (rejected["source_table"], rejected["source_id"], rejected["column"]) == (
        "sales_order",
        "5",
        "agreed_payment_date",
    )
    assert json.loads(rejected["source_row"])["agreed_payment_date"] == "03/11/2024"


def test_a_new_row_stamped_far_behind_the_watermark_is_still_extracted(totesys_env: Env) -> None:
    """An application whose clock is an hour slow (or a transaction open longer than the overlap) inserts an
    order stamped an hour before the watermark: it is new (its id was never loaded), so it is extracted."""
    seeded(totesys_env)
    wh = totesys_env.warehouse
    facts = count(wh, "warehouse.fact_sales_order")
    with totesys_env.source.begin() as conn:
        order = conn.execute(
            sa.text(
                "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, "
                "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                "agreed_delivery_location_id) VALUES (:t, :t, 1, 1, 1, 10, 2.50, 1, '2024-01-02', '2024-01-03', 1) "
                "RETURNING sales_order_id"
            ),
            {"t": marks(wh)["sales_order"] - timedelta(hours=1)},
        ).scalar_one()
    report = cycle()
    assert report.status == "success", report.error
    assert report.extracted == {"sales_order": 1}
    assert count(wh, "warehouse.fact_sales_order") == facts + 1 and units(totesys_env, order) == [10]
    assert cycle().status == "skipped"


def test_a_cycle_started_while_another_runs_extracts_nothing_and_says_so(totesys_env: Env) -> None:
    """At most one cycle at a time (a hand-started run beside the schedule's): the second one is skipped before
    it reads the source; once the first is gone (even killed: its session's lock goes with it), cycles run."""
    from sluice.settings import get_settings
    from sluice.totesys import CYCLE_LOCK, ingestion_zone

    seeded(totesys_env)
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text("UPDATE sales_order SET units_sold = 3, last_updated = now() WHERE sales_order_id = 2")
        )
    zone = ingestion_zone(get_settings())
    batches = len(list(Path(zone).rglob("*.csv")))
    other = totesys_env.warehouse.connect()  # the running cycle
    other.execute(sa.text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": CYCLE_LOCK})
    other.commit()
    try:
        busy = cycle()
    finally:
        other.invalidate()  # killed: its session ends, and the lock with it
        other.close()
    assert busy.status == "skipped", busy.error
    assert "another totesys cycle is running" in (busy.error or "")
    assert busy.extracted == {} and len(list(Path(zone).rglob("*.csv"))) == batches
    after = cycle()
    assert after.status == "success", after.error
    assert after.extracted == {"sales_order": 1} and units(totesys_env, 2)[-1] == 3
    with totesys_env.warehouse.connect() as conn:  # released, not left with a pooled connection
        held = conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar_one()
    assert held == 0


def test_timestamptz_stamps_load_and_an_idle_cycle_stays_idle(totesys_env: Env) -> None:
    """An OLTP whose stamps are ``timestamptz``: versions load with the session's wall time, and a cycle with
    nothing new extracts nothing (the offsets do not make every row look new)."""
    with totesys_env.source.begin() as conn:
        from sluice.fakes.totesys import create_schema

        create_schema(totesys_env.source)
        conn.execute(
            sa.text(
                "ALTER TABLE design ALTER COLUMN last_updated TYPE timestamptz, "
                "ALTER COLUMN created_at TYPE timestamptz"
            )
        )
    seeded(totesys_env)
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text("UPDATE design SET design_name = 'Tz', last_updated = now() WHERE design_id = 2")
        )
    changed = cycle()
    assert changed.status == "success", changed.error
    assert changed.extracted == {"design": 1}
    assert cycle().status == "skipped"


def test_a_warehouse_loaded_before_max_ids_existed_does_not_reread_everything(totesys_env: Env) -> None:
    seeded(totesys_env, orders=30)
    with totesys_env.warehouse.begin() as conn:
        conn.execute(sa.text("DROP TABLE sluice.totesys_max_ids"))  # as an earlier Sluice left it
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text("UPDATE sales_order SET units_sold = 4, last_updated = now() WHERE sales_order_id = 1")
        )
    report = cycle()
    assert report.status == "success", report.error
    assert report.extracted == {"sales_order": 1}
    assert cycle().status == "skipped"


def test_a_latin1_source_database_gives_the_same_non_ascii_names(
    totesys_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OLTP created with ``ENCODING 'LATIN1'``: names with accents arrive as they are (the extract asks the
    server for UTF-8 rather than decoding the database's own bytes as UTF-8)."""
    from sluice.adapters.totesys_source import source_engine
    from sluice.fakes.totesys import generate, seed
    from sluice.settings import reload_settings

    server = totesys_env.source.url
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS totesys_latin1"))
        conn.execute(
            sa.text(
                "CREATE DATABASE totesys_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            )
        )
    admin.dispose()
    url = server.set(database="totesys_latin1").render_as_string(hide_password=False)
    latin1 = source_engine(url)
    try:
        seed(latin1, generate(10, random.Random(4)))
        with latin1.begin() as conn:
            conn.execute(sa.text("UPDATE design SET design_name = 'Café Crème' WHERE design_id = 1"))
            conn.execute(sa.text("UPDATE staff SET last_name = 'Müller-Øst' WHERE staff_id = 1"))
        monkeypatch.setenv("SLUICE_TOTESYS_SOURCE_URL", url)
        reload_settings()
        report = cycle()
        assert report.status == "success", report.error
        with totesys_env.warehouse.connect() as conn:
            design = conn.execute(
                sa.text("SELECT design_name FROM warehouse.dim_design WHERE design_id = 1")
            ).scalar_one()
            staff = conn.execute(
                sa.text("SELECT last_name FROM warehouse.dim_staff WHERE staff_id = 1")
            ).scalar_one()
        assert (design, staff) == ("Café Crème", "Müller-Øst")
    finally:
        latin1.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@db.example.com/totesys",
        "postgres://u:pw@db.example.com/totesys",
        "postgresql+psycopg://u:pw@db.example.com/totesys",
        "postgresql+asyncpg://u:pw@db.example.com/totesys",
    ],
)
def test_any_postgresql_url_reads_through_psycopg2(url: str) -> None:
    from sluice.adapters.totesys_source import source_engine

    engine = source_engine(url)
    assert engine.url.drivername == "postgresql+psycopg2" and engine.url.host == "db.example.com"
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "says"),
    [("mysql://u:pw@h/db", "must be PostgreSQL"), ("not a url", "not a valid database URL")],
)
def test_a_source_url_that_cannot_be_the_oltp_is_a_configuration_error(url: str, says: str) -> None:
    from sluice.adapters.totesys_source import source_engine
    from sluice.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=says):
        source_engine(url)


def test_an_order_without_an_agreed_delivery_location_loads_with_none(totesys_env: Env) -> None:
    """An OLTP where the agreed delivery location is optional: the sale is a fact with no location (analysts
    count it), not a cycle stuck on validation; a warehouse made when the column was required is relaxed."""
    from sluice.totesys import ensure_warehouse

    wh = totesys_env.warehouse
    ensure_warehouse(wh)
    with wh.begin() as conn:  # as an earlier Sluice made it
        conn.execute(
            sa.text(
                "ALTER TABLE warehouse.fact_sales_order ALTER COLUMN agreed_delivery_location_id SET NOT NULL"
            )
        )
    seeded(totesys_env)
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE sales_order ALTER COLUMN agreed_delivery_location_id DROP NOT NULL")
        )
        order = conn.execute(
            sa.text(
                "INSERT INTO sales_order (design_id, staff_id, counterparty_id, units_sold, unit_price, currency_id, "
                "agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
                "VALUES (1, 1, 1, 10, 2.50, 1, '2024-01-02', '2024-01-03', NULL) RETURNING sales_order_id"
            )
        ).scalar_one()
    report = cycle()
    assert report.status == "success", report.error
    with wh.connect() as conn:
        location = conn.execute(
            sa.text(
                "SELECT agreed_delivery_location_id FROM warehouse.fact_sales_order WHERE sales_order_id = :o"
            ),
            {"o": order},
        ).one()
    assert location == (None,)
    assert orphans(wh) == []


def test_an_empty_string_in_a_required_column_loads_as_itself(totesys_env: Env) -> None:
    """``design.file_name`` is NOT NULL in the OLTP and holds ''. That is a value, not a NULL: it loads as ''
    (was: the cycle stuck on 'not_nullable (value nan)'); an optional column left NULL stays NULL."""
    seeded(totesys_env)
    with totesys_env.source.begin() as conn:
        conn.execute(sa.text("UPDATE design SET file_name = '', last_updated = now() WHERE design_id = 3"))
        conn.execute(
            sa.text("UPDATE address SET address_line_2 = NULL, last_updated = now() WHERE address_id = 4")
        )
    report = cycle()
    assert report.status == "success", report.error
    with totesys_env.warehouse.connect() as conn:
        name = conn.execute(
            sa.text("SELECT file_name FROM warehouse.dim_design WHERE design_id = 3")
        ).scalar_one()
        line2 = conn.execute(
            sa.text("SELECT address_line_2 FROM warehouse.dim_location WHERE location_id = 4")
        ).scalar_one()
    assert name == "" and line2 is None


def test_a_version_stamped_before_its_creation_loads_as_stamped(totesys_env: Env) -> None:
    """The OLTP's clock went back two minutes between an order's insert and its update: ``last_updated`` is before
    ``created_at``. The version is a fact as stamped (was: every cycle failed validation until the source was
    edited)."""
    seeded(totesys_env)
    with totesys_env.source.begin() as conn:
        order = conn.execute(
            sa.text(
                "INSERT INTO sales_order (design_id, staff_id, counterparty_id, units_sold, unit_price, currency_id, "
                "agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
                "VALUES (1, 1, 1, 10, 2.50, 1, '2024-01-02', '2024-01-03', 1) RETURNING sales_order_id"
            )
        ).scalar_one()
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE sales_order SET units_sold = 11, last_updated = created_at - interval '2 minutes' "
                "WHERE sales_order_id = :o"
            ),
            {"o": order},
        )
    report = cycle()
    assert report.status == "success", report.error
    assert units(totesys_env, order) == [11]
    assert cycle().status == "skipped"


def test_seed_source_takes_float_ids_and_names_a_refused_value_in_one_line(
    totesys_env: Env, tmp_path: Path
) -> None:
    """An export that wrote integer ids as floats (``2.0``, pandas' way with nullable ids) seeds; a value the
    OLTP refuses is one line naming table, column and value, exit 1, no traceback."""
    import shutil

    from sluice.cli import app
    from tests.conftest import shared_file

    folder = tmp_path / "export"
    shutil.copytree(shared_file("totesys", "sales_order.csv").parent, folder)
    orders = (folder / "sales_order.csv").read_text().splitlines()
    first = orders[1].split(",")
    first[0], first[-1] = first[0] + ".0", first[-1] + ".0"
    orders[1] = ",".join(first)
    (folder / "sales_order.csv").write_text("\n".join(orders) + "\n")
    result = CliRunner().invoke(app, ["totesys", "seed-source", "--from", str(folder)])
    assert result.exit_code == 0, result.output
    assert count(totesys_env.source, "sales_order") == 9845

    orders[2] = "x" + orders[2]
    (folder / "sales_order.csv").write_text("\n".join(orders) + "\n")
    result = CliRunner().invoke(app, ["totesys", "seed-source", "--from", str(folder)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert "sales_order" in message and "sales_order_id" in message and '"x' in message, message
    assert len(message.splitlines()) == 1, message
    assert count(totesys_env.source, "sales_order") == 9845  # the refused seed changed nothing


def test_seed_source_names_the_file_row_and_column_of_a_refused_value_and_extra_columns_up_front(
    totesys_env: Env, tmp_path: Path
) -> None:
    """A real export with one bad value was ``payment: invalid input syntax … (COPY payment, line 2, column
    created_at: "garbage")``: the table, not the file. A CSV with a column the OLTP lacks was ``staff: column
    "phone" of relation "staff" does not exist ()``. Now each is one line naming the file (and row, column)."""
    import shutil

    from sluice.cli import app
    from tests.conftest import shared_file

    folder = tmp_path / "export"
    shutil.copytree(shared_file("totesys", "payment.csv").parent, folder)
    assert CliRunner().invoke(app, ["totesys", "seed-source", "--from", str(folder)]).exit_code == 0

    payments = (folder / "payment.csv").read_text().splitlines()
    fields = payments[2].split(",")  # the file's second row
    fields[1] = "garbage"  # created_at
    payments[2] = ",".join(fields)
    (folder / "payment.csv").write_text("\n".join(payments) + "\n")
    result = CliRunner().invoke(app, ["totesys", "seed-source", "--from", str(folder)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert message == (
        f"error: {folder / 'payment.csv'} row 2, column created_at: invalid input syntax for type timestamp: "
        '"garbage"'
    ), message
    shutil.copy(shared_file("totesys", "payment.csv"), folder / "payment.csv")

    staff = [
        line + ",phone" if i == 0 else line + ",0113"
        for i, line in enumerate((folder / "staff.csv").read_text().splitlines())
    ]
    (folder / "staff.csv").write_text("\n".join(staff) + "\n")
    result = CliRunner().invoke(app, ["totesys", "seed-source", "--from", str(folder)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert message.startswith(
        f"error: {folder / 'staff.csv'}: column(s) phone not in the Totesys table staff ("
    ), message
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert count(totesys_env.source, "staff") == 20  # refused before anything was replaced


def test_reseeding_a_source_the_warehouse_has_loaded_says_why_the_next_cycle_finds_nothing(
    totesys_env: Env,
) -> None:
    """The same ``seed-source`` twice (same seed, same stamps): the second cycle said "no new data" with no word
    why. Now the seed says it, naming the tables; a seed before any cycle says nothing more."""
    from sluice.cli import app

    first = CliRunner().invoke(app, ["totesys", "seed-source", "--orders", "20", "--seed", "7"])
    assert first.exit_code == 0 and "note:" not in first.stderr, first.output
    assert cycle().status == "success"

    again = CliRunner().invoke(app, ["totesys", "seed-source", "--orders", "20", "--seed", "7"])
    assert again.exit_code == 0, again.output
    note = " ".join(again.stderr.split())
    assert note.startswith("note: the warehouse has already loaded Totesys up to its watermarks"), note
    assert "sales_order" in note and "will not extract those rows again" in note, note
    assert "use a new SLUICE_HOME (a warehouse of its own) or point SLUICE_DATABASE_URL" in note
    idle = cycle()
    assert idle.status == "skipped" and "no new data" in (idle.error or ""), idle


def test_a_reseed_note_does_not_say_a_table_with_new_ids_will_not_be_extracted(
    totesys_env: Env, tmp_path: Path
) -> None:
    """The real export seeded and loaded, then seeded again with one more sales order: a new id stamped behind the
    watermark (the next cycle reads it by its id). The note said sales_order "will not extract those rows again"
    and the next cycle extracted it; a user following "Using it" (the demo, then `seed-source`) saw 495."""
    import shutil

    from sluice.cli import app
    from tests.conftest import shared_file

    folder = tmp_path / "export"
    shutil.copytree(shared_file("totesys", "sales_order.csv").parent, folder)
    first = CliRunner().invoke(app, ["totesys", "seed-source", "--from", str(folder)])
    assert first.exit_code == 0, first.output
    assert cycle().status == "success"

    orders = (folder / "sales_order.csv").read_text().splitlines()
    ids = [int(float(line.split(",", 1)[0])) for line in orders[1:]]
    copy = orders[1].split(",", 1)
    orders.append(f"{max(ids) + 1},{copy[1]}")  # row 1's stamps: behind the watermark
    (folder / "sales_order.csv").write_text("\n".join(orders) + "\n")
    again = CliRunner().invoke(app, ["totesys", "seed-source", "--from", str(folder)])
    assert again.exit_code == 0, again.output
    note = " ".join(again.stderr.split())
    assert note.startswith("note: the warehouse has already loaded Totesys up to its watermarks"), note
    named = note.split(" hold nothing changed after them")[0]
    assert "address" in named and "sales_order" not in named, note
    assert "new id" in note, note
    report = cycle()
    assert report.status == "success" and report.extracted.get("sales_order") == 1, report


def test_a_reference_row_updated_with_a_stamp_behind_the_loaded_one_shows_in_its_dimensions(
    totesys_env: Env,
) -> None:
    """A staff member and an address updated twice, the second time stamped a minute behind the first (a long
    transaction's ``now()``, an application server with a slower clock). The second update is the source's row:
    ``dim_staff`` and the counterparties at that address kept the first (the newest stamp won over the row the
    cycle had just read), while ``dim_location`` showed the second; a later department move rebuilt the staff
    member from the kept first row again."""
    seeded(totesys_env)
    wh, src = totesys_env.warehouse, totesys_env.source
    with src.connect() as conn:
        address = conn.execute(
            sa.text("SELECT legal_address_id FROM counterparty ORDER BY counterparty_id LIMIT 1")
        ).scalar_one()
        department = conn.execute(sa.text("SELECT department_id FROM staff WHERE staff_id = 1")).scalar_one()

    def update(name: str, city: str, behind: int) -> None:
        with src.begin() as conn:
            stamp = {"b": timedelta(seconds=behind)}
            conn.execute(
                sa.text("UPDATE staff SET last_name = :n, last_updated = now() - :b WHERE staff_id = 1"),
                {"n": name, **stamp},
            )
            conn.execute(
                sa.text("UPDATE address SET city = :c, last_updated = now() - :b WHERE address_id = :a"),
                {"c": city, "a": address, **stamp},
            )
        report = cycle()
        assert report.status == "success", report.error

    def shown() -> tuple[object, set[object], object]:
        with wh.connect() as conn:
            staff = conn.execute(
                sa.text("SELECT last_name FROM warehouse.dim_staff WHERE staff_id = 1")
            ).scalar()
            cities = conn.execute(
                sa.text(
                    "SELECT DISTINCT d.counterparty_legal_city FROM warehouse.dim_counterparty d "
                    "JOIN sluice.totesys_lookups l ON l.table_name = 'counterparty' AND l.row_id = d.counterparty_id "
                    "WHERE (l.row ->> 'legal_address_id')::int = :a"
                ),
                {"a": address},
            ).scalars()
            location = conn.execute(
                sa.text("SELECT city FROM warehouse.dim_location WHERE location_id = :a"), {"a": address}
            ).scalar()
            return staff, set(cities), location

    update("First", "FirstCity", 0)
    assert shown() == ("First", {"FirstCity"}, "FirstCity")
    update("Second", "SecondCity", 60)
    assert shown() == ("Second", {"SecondCity"}, "SecondCity")
    with src.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE department SET location = 'Moved', last_updated = now() WHERE department_id = :d"
            ),
            {"d": department},
        )
    moved = cycle()
    assert moved.status == "success", moved.error
    assert shown()[0] == "Second"


@pytest.mark.parametrize("amount", ["1e26", "1e30"])
def test_an_amount_too_big_for_any_money_column_is_quarantined_with_its_source_row(
    totesys_env: Env, amount: str
) -> None:
    """``payment_amount`` is a plain ``numeric`` in the OLTP: 1e26 failed the cycle at transform with a bare
    ``InvalidOperation: [<class 'decimal.InvalidOperation'>]``, no row named and no quarantine file, where 1e25
    was quarantined naming the payment."""
    seeded(totesys_env)
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE payment SET payment_amount = {amount}, last_updated = now() WHERE payment_id = 2"
            )
        )
    report = cycle()
    assert report.status == "failed" and report.state == "validate", report.error
    assert "InvalidOperation" not in report.error and "payment_amount" in report.error, report.error
    rejected = pd.read_csv(report.quarantine_uri, dtype=str).iloc[0]
    assert (rejected["source_table"], rejected["source_id"], rejected["column"]) == (
        "payment",
        "2",
        "payment_amount",
    )
    assert rejected["check"] == "is money (numeric(12,2))", rejected.to_dict()


def test_an_open_ended_date_loads_with_its_calendar_row(totesys_env: Env) -> None:
    """``9999-12-31`` is a valid ``YYYY-MM-DD`` date and an OLTP's usual "no end": every cycle failed on a
    ``dim_date`` row (year at most 2200) whose quarantine row named no source row."""
    seeded(totesys_env)
    with totesys_env.source.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE sales_order SET agreed_delivery_date = '9999-12-31', last_updated = now() "
                "WHERE sales_order_id = 3"
            )
        )
    report = cycle()
    assert report.status == "success", report.error
    with totesys_env.warehouse.connect() as conn:
        day = conn.execute(
            sa.text("SELECT year, day_of_week, day_name FROM warehouse.dim_date WHERE date_id = '9999-12-31'")
        ).one()
    assert tuple(day) == (9999, 5, "Friday")
    assert orphans(totesys_env.warehouse) == []


def test_a_first_cycle_of_an_empty_source_says_it_is_empty_not_that_nothing_is_new(
    totesys_env: Env,
) -> None:
    """Seeded with header-only CSVs, the first cycle said "no new data since the watermarks": there were none."""
    from sluice.fakes.totesys import create_schema

    create_schema(totesys_env.source)
    first = cycle()
    assert first.status == "skipped", first.error
    assert first.error == "the source's Totesys tables hold no rows yet: nothing to extract"
    seeded(totesys_env)
    assert cycle().error == "no new data since the watermarks"


def test_rows_of_a_transaction_open_across_a_cycle_load_whatever_their_ids_and_stamps(
    totesys_env: Env,
) -> None:
    """A long transaction inserts an order and updates another, stamped with its start an hour back (``now()``
    is the transaction's start), while a short one inserts an order and commits; a cycle loads the short one's.
    When the long one commits, its new order's id is below the greatest id loaded and its stamps are far behind
    the overlap: it was lost for good ("no new data since the watermarks" at every later cycle)."""
    seeded(totesys_env)
    wh, src = totesys_env.warehouse, totesys_env.source
    insert = (
        "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold, "
        "unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
        "VALUES ({t}, {t}, 1, 1, 1, :u, 2.50, 1, '2024-01-02', '2024-01-03', 1) RETURNING sales_order_id"
    )
    long_running = src.connect()
    try:
        slow = long_running.begin()
        late = long_running.execute(
            sa.text(insert.format(t="now() - interval '1 hour'")), {"u": 71}
        ).scalar_one()
        long_running.execute(
            sa.text(
                "UPDATE sales_order SET units_sold = 72, last_updated = now() - interval '1 hour' "
                "WHERE sales_order_id = 2"
            )
        )
        with src.begin() as conn:
            quick = conn.execute(sa.text(insert.format(t="now()")), {"u": 73}).scalar_one()
        assert quick > late
        meanwhile = cycle()
        assert meanwhile.status == "success" and meanwhile.extracted == {"sales_order": 1}, (
            meanwhile.extracted
        )
        slow.commit()
    finally:
        long_running.close()
    after = cycle()
    assert after.status == "success", after.error
    assert after.extracted == {"sales_order": 2}, after.extracted
    assert units(totesys_env, late) == [71] and units(totesys_env, quick) == [73]
    assert units(totesys_env, 2)[-1] == 72
    assert count(wh, "warehouse.fact_sales_order") == count(src, "sales_order") + 1  # order 2: two versions
    assert cycle().status == "skipped"


def test_changes_stamped_after_the_source_clock_is_set_back_an_hour_are_extracted(
    totesys_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OLTP with ``timestamp DEFAULT now()`` stamps in a zone with summer time: at the fall-back its clock
    repeats an hour. A change made in that hour more than the overlap before the next cycle is stamped behind the
    watermark, and the cycles after it said "no new data since the watermarks": the change never loaded (up to
    15 minutes of changes a year, on a 20-minute schedule). Here the source's zone goes from UTC+1 to UTC, as a
    fall-back does, and the overlap is one second, the change two before the cycle."""
    import time

    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_TOTESYS_OVERLAP_SECONDS", "1")
    reload_settings()
    src = totesys_env.source
    database = src.url.database

    def zone(name: str) -> None:
        with src.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text(f"ALTER DATABASE {database} SET timezone = '{name}'")
            )
        src.dispose()

    zone("Etc/GMT-1")  # UTC+1: summer time
    try:
        seeded(totesys_env)
        with src.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE sales_order SET units_sold = 81, last_updated = now() WHERE sales_order_id = 5"
                )
            )
        assert cycle().extracted == {"sales_order": 1}
        zone("UTC")  # the clock goes back an hour
        with src.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE sales_order SET units_sold = 82, last_updated = now() WHERE sales_order_id = 6"
                )
            )
        time.sleep(2)
        back = cycle()
        assert back.status == "success", back.error
        assert back.extracted == {"sales_order": 1}, back.extracted
        assert units(totesys_env, 6)[-1] == 82
        assert cycle().status == "skipped"
    finally:
        zone("UTC")
        with src.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text(f"ALTER DATABASE {database} RESET timezone")
            )
        src.dispose()


def test_values_the_oltp_and_the_warehouse_hold_load_though_the_samples_never_show_them(
    totesys_env: Env,
) -> None:
    """A return (negative units and quantity), an empty e-mail address, a lower-case or unheard-of transaction
    type and an ISO currency code Sluice has no name for are all legal in the OLTP and fit the warehouse. Checks
    taken from the samples (``SALE``/``PURCHASE``, an ``@``, ``>= 0``) failed the cycle at
    validate, and, the pipeline being hard, every cycle after it until someone edited the source."""
    seeded(totesys_env)
    wh = totesys_env.warehouse
    with totesys_env.source.begin() as conn:
        for statement in (
            "UPDATE sales_order SET units_sold = -3, last_updated = now() WHERE sales_order_id = 4",
            "UPDATE purchase_order SET item_quantity = -2, last_updated = now() WHERE purchase_order_id = 1",
            "UPDATE staff SET email_address = '', last_updated = now() WHERE staff_id = 2",
            "UPDATE transaction SET transaction_type = 'refund', last_updated = now() WHERE transaction_id = 5",
            "UPDATE currency SET currency_code = 'xaf', last_updated = now() WHERE currency_id = 1",
        ):
            conn.execute(sa.text(statement))
    result = cycle()
    assert result.status == "success", result.error
    with wh.connect() as conn:
        read = lambda sql: conn.execute(sa.text(sql)).scalar_one()  # noqa: E731
        assert units(totesys_env, 4)[-1] == -3
        assert (
            read(
                "SELECT item_quantity FROM warehouse.fact_purchase_order WHERE purchase_order_id = 1 "
                "ORDER BY last_updated_date DESC, last_updated_time DESC LIMIT 1"
            )
            == -2
        )
        assert read("SELECT email_address FROM warehouse.dim_staff WHERE staff_id = 2") == ""
        assert (
            read("SELECT transaction_type FROM warehouse.dim_transaction WHERE transaction_id = 5")
            == "refund"
        )
        assert (
            read(
                "SELECT currency_code || '|' || currency_name FROM warehouse.dim_currency WHERE currency_id = 1"
            )
            == "XAF|XAF"
        )
    assert orphans(wh) == []
