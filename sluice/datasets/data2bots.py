"""Data2bots: ``orders``, ``reviews`` and ``shipment_deliveries`` CSVs → schema ``staging``.

Orders and shipments upsert on their ids (a day's file may repeat earlier rows); a reviews file is the whole set
of reviews (there is no key to merge on), so each one replaces the table. Every file still loads exactly once.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random

from schemas.data2bots import (
    ORDERS_COLUMNS,
    REVIEWS_COLUMNS,
    SHIPMENTS_COLUMNS,
    Order,
    Review,
    ShipmentDelivery,
)
from sluice.registry import Dataset, register
from sluice.tables.data2bots import orders, reviews, shipment_deliveries
from sluice.transforms.data2bots import transform_orders, transform_reviews, transform_shipments

_START = dt.date(2021, 1, 1)
_DAYS = 600
_PRODUCTS = 25


def order_date(order_id: int) -> dt.date:
    """The generated order's date (a function of its id, so the three files agree without sharing state)."""
    return _START + dt.timedelta(days=(order_id * 7919) % _DAYS)


def _csv(header: tuple[str, ...], rows: list[list[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def generate_orders(rows: int, rng: random.Random) -> bytes:
    data: list[list[object]] = []
    for i in range(1, rows + 1):
        price, quantity = rng.randrange(10, 300), rng.randrange(1, 11)
        total: object = price * quantity
        if rows >= 50 and i % 211 == 17:  # a few bad rows: a total that does not add up
            total = price * quantity + 1
        data.append(
            [
                i,
                rng.randrange(1, 26),
                order_date(i).isoformat(),
                rng.randrange(1, _PRODUCTS + 1),
                price,
                quantity,
                total,
            ]
        )
    return _csv(ORDERS_COLUMNS, data)


def generate_reviews(rows: int, rng: random.Random) -> bytes:
    data: list[list[object]] = [
        [rng.choice([1, 2, 3, 4, 4, 5, 5, 5]), rng.randrange(1, _PRODUCTS + 1)] for _ in range(rows)
    ]
    if rows >= 50:
        data[7][0] = 6  # one bad row: six stars
    return _csv(REVIEWS_COLUMNS, data)


def generate_shipments(rows: int, rng: random.Random) -> bytes:
    data: list[list[object]] = []
    for i in range(1, rows + 1):
        ordered = order_date(i)
        fate = rng.random()
        shipped = ordered + dt.timedelta(days=rng.randrange(0, 12)) if fate > 0.3 else None
        delivered = shipped + dt.timedelta(days=rng.randrange(1, 6)) if shipped and fate > 0.6 else None
        data.append(
            [i, i, shipped.isoformat() if shipped else "", delivered.isoformat() if delivered else ""]
        )
    return _csv(SHIPMENTS_COLUMNS, data)


ORDERS = register(
    Dataset(
        name="orders",
        description="Data2bots orders: one row per order line, total = unit price × quantity.",
        patterns=("orders*.csv", "orders*.csv.gz", "data2bots/orders/*"),
        source_columns=ORDERS_COLUMNS,
        model=Order,
        transform=transform_orders,
        table=orders,
        load_mode="upsert",
        keys=("order_id",),
        generate=generate_orders,
        demo_key="data2bots/orders/orders-demo.csv",
    )
)
REVIEWS = register(
    Dataset(
        name="reviews",
        description="Data2bots product reviews (1..5 stars); each file is the whole set.",
        patterns=("reviews*.csv", "reviews*.csv.gz", "data2bots/reviews/*"),
        source_columns=REVIEWS_COLUMNS,
        model=Review,
        transform=transform_reviews,
        table=reviews,
        load_mode="replace",
        generate=generate_reviews,
        demo_key="data2bots/reviews/reviews-demo.csv",
    )
)
SHIPMENT_DELIVERIES = register(
    Dataset(
        name="shipment_deliveries",
        description="Data2bots shipments and deliveries of orders (dates empty until they happen).",
        patterns=(
            "shipment_deliveries*.csv",
            "shipment_deliveries*.csv.gz",
            "data2bots/shipment_deliveries/*",
        ),
        source_columns=SHIPMENTS_COLUMNS,
        model=ShipmentDelivery,
        transform=transform_shipments,
        table=shipment_deliveries,
        load_mode="upsert",
        keys=("shipment_id",),
        generate=generate_shipments,
        demo_key="data2bots/shipment_deliveries/shipment_deliveries-demo.csv",
    )
)
