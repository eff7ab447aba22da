"""The reference tables belong to the user: read, never rewritten, unless asked; created (and said so) only when
absent or empty; the lists they are created from may be local files or S3 objects (moto's server over HTTP)."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_data2bots
from sluice.data2bots import read_holidays
from sluice.settings import Settings

pytestmark = pytest.mark.usefixtures("prefect_harness")
D = dt.date


def tiny_staging() -> None:
    """Fresh staging (product 3: two orders on Tuesday 2022-03-01, one early and one late shipment; product 4: one
    order on 2022-03-07) and no analytics or reference tables. Only the columns the analytics read."""
    with get_engine().begin() as conn:
        for schema in ("staging", "analytics", "if_common"):
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA staging"))
        conn.execute(
            sa.text("CREATE TABLE staging.orders (order_id bigint, order_date date, product_id bigint)")
        )
        conn.execute(sa.text("CREATE TABLE staging.reviews (review smallint, product_id bigint)"))
        conn.execute(
            sa.text(
                "CREATE TABLE staging.shipment_deliveries "
                "(shipment_id bigint, order_id bigint, shipment_date date, delivery_date date)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO staging.orders VALUES (1, '2022-03-01', 3), (2, '2022-03-01', 3), (3, '2022-03-07', 4);"
                "INSERT INTO staging.reviews VALUES (5, 3), (4, 4);"
                "INSERT INTO staging.shipment_deliveries VALUES (1, 1, '2022-03-02', NULL), (2, 2, '2022-03-08', NULL)"
            )
        )


def drop_tiny_staging() -> None:
    """Leave no hand-made staging behind: later tests (and the demo) ingest into real staging tables."""
    with get_engine().begin() as conn:
        for schema in ("staging", "analytics", "if_common"):
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


@pytest.fixture(autouse=True)
def _clean_after(sluice_env: Path) -> Iterator[None]:
    yield
    drop_tiny_staging()


def user_reference(days: tuple[dt.date, dt.date] = (D(2022, 1, 1), D(2022, 12, 31))) -> None:
    """The user's own reference tables: 2022-03-01 is their holiday, product 3 their "User Lamp"."""
    from sluice.data2bots import dim_dates, dim_products, ensure_tables
    from sluice.transforms.data2bots import dim_dates as build_dates

    ensure_tables(get_engine())
    frame = build_dates(*days, [D(2022, 3, 1)])
    with get_engine().begin() as conn:
        conn.execute(
            dim_dates.insert(), [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in
                                 frame.astype(object).to_dict("records")]
        )  # fmt: skip
        conn.execute(
            dim_products.insert(),
            [{"product_id": 3, "product_category": "Home", "product_name": "User Lamp"},
             {"product_id": 4, "product_category": "Home", "product_name": "User Rug"}],
        )  # fmt: skip


def snapshot() -> tuple[list[tuple], list[tuple]]:
    with get_engine().connect() as conn:
        return (
            [tuple(r) for r in conn.execute(sa.text("SELECT * FROM if_common.dim_dates ORDER BY 1"))],
            [tuple(r) for r in conn.execute(sa.text("SELECT * FROM if_common.dim_products ORDER BY 1"))],
        )


def best() -> dict[str, object]:
    with get_engine().connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM analytics.best_performing_product")).one()
    return dict(row._mapping)


def run_warnings(flow_run_id: str) -> list[str]:
    """The run's WARNING lines as the Prefect API (the UI's run log) has them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel

    deadline = time.monotonic() + 20
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]),
                    level=LogFilterLevel(ge_=logging.WARNING),
                )
            )
            if logs or time.monotonic() > deadline:
                return [log.message for log in sorted(logs, key=lambda log: log.timestamp)]
            time.sleep(0.5)


def artifact_markdown(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return "\n".join(str(a.data) for a in found)


def test_absent_reference_tables_are_created_from_the_shipped_examples_and_the_run_says_so(
    sluice_env: Path,
) -> None:
    tiny_staging()
    report = run_data2bots()
    assert report.status == "success", report.error
    assert len(report.notes) == 2
    assert report.notes[0].startswith(
        "if_common.dim_dates created (it was absent) from the example list shipped"
    )
    assert report.notes[1].startswith("if_common.dim_products created (it was absent) from the example list")
    assert "SLUICE_PRODUCTS_FILE" in report.notes[1]
    assert run_warnings(report.flow_run_id) == report.notes
    shown = artifact_markdown(report.flow_run_id)
    assert all(note in shown for note in report.notes)
    dates, products = snapshot()
    # the calendar covers the orders' year (2022) and every year of the shipped holiday list (2021-2023): it
    # covered 2022 only, and the first order of 2023 then failed the run for a day the list knows
    listed = sorted(read_holidays(Settings()))
    assert (
        (dates[0][0], dates[-1][0])
        == (D(listed[0].year, 1, 1), D(listed[-1].year, 12, 31))
        == (
            D(2021, 1, 1),
            D(2023, 12, 31),
        )
    )
    assert len(dates) == 1095 and len(products) == 25
    assert best()["product_name"] == "Headphones"  # the shipped example list's name for product 3
    assert report.loaded["dim_dates"] == 1095 and report.loaded["dim_products"] == 25

    # Now they exist: the next run reads them and says nothing, and so does the first run of a new year.
    again = run_data2bots(force=True)
    assert again.status == "success" and again.notes == []
    assert "dim_dates" not in again.loaded and "dim_products" not in again.loaded
    with get_engine().begin() as conn:
        conn.execute(sa.text("INSERT INTO staging.orders VALUES (4, '2023-01-10', 4)"))
    new_year = run_data2bots()
    assert new_year.status == "success", new_year.error
    assert not [
        n for n in new_year.notes if "dim_dates" in n
    ]  # (order 3 has no shipment row: a note of its own)
    assert snapshot()[0] == dates  # read, not rewritten


def test_existing_reference_tables_are_read_never_rewritten_unless_asked(sluice_env: Path) -> None:
    tiny_staging()
    user_reference()
    before = snapshot()
    report = run_data2bots()
    assert report.status == "success", report.error
    assert report.notes == []
    assert snapshot() == before  # not one row rewritten
    row = best()
    assert (row["product_name"], row["most_ordered_day"], row["is_public_holiday"]) == (
        "User Lamp",
        D(2022, 3, 1),
        True,  # the user's holiday, not in the shipped list
    )
    with get_engine().connect() as conn:
        march = conn.execute(
            sa.text("SELECT tt_order_hol_mar FROM analytics.agg_public_holiday")
        ).scalar_one()
    assert march == 2

    refreshed = run_data2bots(force=True, refresh_reference=True)
    assert refreshed.status == "success", refreshed.error
    assert [n.split(" from ")[0] for n in refreshed.notes] == [
        "if_common.dim_dates rewritten on request",
        "if_common.dim_products rewritten on request",
    ]
    assert best()["product_name"] == "Headphones" and best()["is_public_holiday"] is False
    assert len(snapshot()[1]) == 25


def test_refresh_reference_rebuilds_a_day_that_already_ran_without_force(sluice_env: Path) -> None:
    """Asking for the reference tables to be rewritten is asking for figures from them: not 'already ran'."""
    tiny_staging()
    user_reference()
    assert run_data2bots().status == "success"
    assert best()["product_name"] == "User Lamp"
    assert run_data2bots().status == "skipped"
    refreshed = run_data2bots(refresh_reference=True)
    assert refreshed.status == "success", refreshed.error
    assert best()["product_name"] == "Headphones"  # the day's row rebuilt from the rewritten dim_products
    assert run_data2bots().status == "skipped"


def test_user_dim_dates_without_the_days_needed_is_one_clear_failure(sluice_env: Path) -> None:
    tiny_staging()
    user_reference(days=(D(2022, 1, 1), D(2022, 1, 31)))
    before = snapshot()
    report = run_data2bots()
    assert (report.status, report.state) == ("failed", "transform")
    assert report.error.startswith(
        "if_common.dim_dates has no row for 2022-03-01 and 1 more, up to 2022-03-07"
    )
    assert "--refresh-reference" in report.error
    assert snapshot() == before


def test_reference_lists_from_s3_create_empty_tables(
    sluice_env: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.data2bots import ensure_tables
    from sluice.settings import reload_settings

    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="ref/holidays.csv", Body=b"date,name\n2022-03-01,Founders' Day\n")
    s3.put_object(
        Bucket=s3_bucket,
        Key="ref/products.csv",
        Body=b"product_id,product_category,product_name\n3,Home,S3 Lamp\n4,Home,S3 Rug\n",
    )
    monkeypatch.setenv("SLUICE_HOLIDAYS_FILE", f"s3://{s3_bucket}/ref/holidays.csv")
    monkeypatch.setenv("SLUICE_PRODUCTS_FILE", f"s3://{s3_bucket}/ref/products.csv")
    reload_settings()
    tiny_staging()
    ensure_tables(get_engine())  # present but empty: treated as absent
    report = run_data2bots()
    assert report.status == "success", report.error
    assert report.notes == [
        f"if_common.dim_dates created (it was empty) from s3://{s3_bucket}/ref/holidays.csv",
        f"if_common.dim_products created (it was empty) from s3://{s3_bucket}/ref/products.csv",
    ]
    assert snapshot()[1] == [(3, "Home", "S3 Lamp"), (4, "Home", "S3 Rug")]
    assert (best()["product_name"], best()["is_public_holiday"]) == ("S3 Lamp", True)


def test_exports_to_an_s3_staging_zone_equal_the_tables(
    sluice_env: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv
    import io

    from sluice.data2bots import ANALYTICS, read_table
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_STAGING_URI", f"s3://{s3_bucket}/processed")
    reload_settings()
    tiny_staging()
    report = run_data2bots()
    assert report.status == "success", report.error
    s3 = boto3.client("s3")
    for name in ANALYTICS:
        assert report.exports[name] == f"s3://{s3_bucket}/processed/analytics_export/{name}.csv"
        body = s3.get_object(Bucket=s3_bucket, Key=f"processed/analytics_export/{name}.csv")["Body"].read()
        exported = list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
        frame = read_table(get_engine(), name)
        assert len(exported) == len(frame) == 1 and list(exported[0]) == list(frame.columns)
        assert exported == [
            {
                k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in row.items()
            }
            for row in frame.to_dict("records")
        ]
    reload_settings()


def test_orders_without_a_shipment_row_are_counted_in_the_notes(sluice_env: Path) -> None:
    """Order 3 (2022-03-07) has no row in staging.shipment_deliveries. The rules read shipment rows, so it counts
    as no undelivered item, and nothing said so: a left join from orders counted it. Once it is 15 days old the
    run says how many such orders there are; a day earlier it does not."""
    tiny_staging()
    user_reference()
    early = run_data2bots(as_of=D(2022, 3, 21))
    assert (early.status, early.notes) == ("success", []), early.error
    due = run_data2bots(as_of=D(2022, 3, 22))
    assert due.status == "success", due.error
    assert due.notes == [
        "1 order placed on or before 2022-03-07 has no row in staging.shipment_deliveries: counted in no shipment "
        "figure (tt_undelivered_items counts shipment rows with neither date)"
    ]
    assert run_warnings(due.flow_run_id) == due.notes
    with get_engine().connect() as conn:
        undelivered = conn.execute(
            sa.text(
                "SELECT tt_undelivered_items FROM analytics.agg_shipments WHERE ingestion_date = '2022-03-22'"
            )
        ).scalar_one()
    assert undelivered == 0
