"""The analytics read staging compacted in PostgreSQL (one row per combination the rules read, with its count), so
the extract's memory follows days × products, not rows; the figures are those of the rules over every row."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice import data2bots
from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_ingest
from sluice.datasets.data2bots import generate_orders, generate_reviews, generate_shipments
from sluice.settings import reload_settings
from sluice.transforms import data2bots as rules

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROWS = 40_000


def drop_data2bots() -> None:
    with get_engine().begin() as conn:
        for schema in ("staging", "analytics", "if_common"):
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


@pytest.fixture
def staged(sluice_env: Path) -> Iterator[sa.Engine]:
    """Generated orders, reviews and shipments (a few bad rows quarantined), ingested as a user would, plus a
    shipment whose order is not in staging; no Data2bots tables before the test, none left after it."""
    drop_data2bots()
    reload_settings()
    rng = random.Random(8)
    shipments = generate_shipments(ROWS, rng) + f"{ROWS + 1},{ROWS + 99},2021-03-01,\n".encode()
    for name, data in (
        ("orders", generate_orders(ROWS, rng)),
        ("reviews", generate_reviews(ROWS, rng)),
        ("shipment_deliveries", shipments),
    ):
        path = sluice_env / "landing" / "data2bots" / name / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        assert run_ingest(str(path)).status == "success"
    yield get_engine()
    drop_data2bots()


def every_row(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    """Staging row by row, as the analytics read it before compaction."""
    with engine.connect() as conn:

        def read(query: str) -> pd.DataFrame:
            result = conn.execute(sa.text(query))
            return pd.DataFrame(result.all(), columns=list(result.keys()))

        orders = read("SELECT order_id, order_date, product_id FROM staging.orders")
        reviews = read("SELECT review, product_id FROM staging.reviews")
        shipments = read(
            "SELECT shipment_id, order_id, shipment_date, delivery_date FROM staging.shipment_deliveries"
        )
    for column in ("shipment_date", "delivery_date"):
        shipments[column] = shipments[column].astype(object).where(shipments[column].notna(), None)
    return {"orders": orders, "reviews": reviews, "shipments": shipments}


def test_staging_is_read_compacted_with_the_same_figures(staged: sa.Engine) -> None:
    compact = data2bots.read_staging(staged)
    rows = every_row(staged)
    with staged.connect() as conn:
        counted = {
            name: conn.execute(sa.text(f"SELECT count(*) FROM staging.{table}")).scalar_one()
            for name, table in (
                ("orders", "orders"),
                ("reviews", "reviews"),
                ("shipments", "shipment_deliveries"),
            )
        }
    # 40,000 orders on 600 days x 25 products; reviews: 25 products x 5 stars. Shipments compact to day x product x
    # shipping day x delivered: little at this size (bounded by the calendar, not by rows, at millions).
    assert len(compact["orders"]) < counted["orders"] // 2
    assert len(compact["reviews"]) <= 25 * 6
    assert len(compact["shipments"]) < counted["shipments"]
    for name, frame in compact.items():
        assert rules.rows(frame) == counted[name] == len(rows[name]), name

    dates = rules.dim_dates(
        dt.date(2020, 1, 1), dt.date(2023, 12, 31), [dt.date(2021, 12, 27), dt.date(2022, 1, 3)]
    )
    products = pd.DataFrame(
        {"product_id": pd.array([3, 7], dtype="Int64"), "product_name": ["three", "seven"]}
    )
    latest = data2bots.latest_order_date(compact)
    assert latest == data2bots.latest_order_date(rows)
    for as_of in (latest, latest - dt.timedelta(days=200), dt.date(2021, 1, 20)):
        for compact_row, every in (
            (
                rules.agg_public_holiday(compact["orders"], dates, as_of),
                rules.agg_public_holiday(rows["orders"], dates, as_of),
            ),
            (
                rules.agg_shipments(compact["orders"], compact["shipments"], as_of),
                rules.agg_shipments(rows["orders"], rows["shipments"], as_of),
            ),
            (
                rules.best_performing_product(
                    compact["orders"], compact["reviews"], compact["shipments"], products, dates, as_of
                ),
                rules.best_performing_product(
                    rows["orders"], rows["reviews"], rows["shipments"], products, dates, as_of
                ),
            ),
        ):
            pd.testing.assert_frame_equal(compact_row, every)
        assert rules.date_span(compact["orders"], as_of) == rules.date_span(rows["orders"], as_of)
    figures = rules.agg_shipments(compact["orders"], compact["shipments"], latest)
    assert figures["tt_late_shipments"].iat[0] > 0 and figures["tt_undelivered_items"].iat[0] > 0
