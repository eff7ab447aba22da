"""``transactions`` (Sertis): pipe-delimited sales lines → ``sertis.transactions`` + bronze and silver zones."""

from __future__ import annotations

import datetime as dt
import io
import random

from schemas.sertis import SOURCE_COLUMNS, Transaction
from sluice.registry import AfterLoad, Dataset, register
from sluice.sertis import publish_file
from sluice.tables.sertis import transactions
from sluice.transforms.sertis import transform_transactions

_PRODUCTS = [
    "DETA100",
    "DETA200",
    "DETA800",
    "PURA100",
    "PURA200",
    "PURA250",
    "PURA500",
    "SUPA101",
    "SUPA102",
    "SUPA103",
]


def generate_transactions(rows: int, rng: random.Random) -> bytes:
    """Pipe-delimited lines for ~rows/8 customers over 60 days, with streaks, ties and a couple of bad rows."""
    out = io.StringIO()
    out.write("|".join(SOURCE_COLUMNS) + "\n")
    start = dt.date(2011, 1, 1)
    customers = [f"{rng.randrange(1, 99999):07d}" for _ in range(max(rows // 8, 1))]
    for i in range(rows):
        customer = rng.choice(customers)
        day = start + dt.timedelta(days=rng.randrange(60))
        units: object = rng.randrange(1, 300)
        if rows >= 50 and i % 173 == 5:
            units = "-3"  # a bad row: negative units
        out.write(f"{day:%Y%m%d}-{customer}|{customer}|{day:%Y-%m-%d}|{rng.choice(_PRODUCTS)}|{units}\n")
    return out.getvalue().encode()


def _publish(event: AfterLoad) -> None:
    publish_file(event)


TRANSACTIONS = register(
    Dataset(
        name="transactions",
        description="Sertis sales transactions (pipe-delimited): bronze, silver, then gold per customer.",
        # Not "transaction-…": that is a Totesys batch name.
        patterns=(
            "transaction_*.csv",
            "transactions*.csv",
            "transaction_*.csv.gz",
            "transactions*.csv.gz",
            "sertis/transactions/*",
        ),
        source_columns=SOURCE_COLUMNS,
        model=Transaction,
        transform=transform_transactions,
        table=transactions,
        column_sources={
            "transaction_id": "transactionId",
            "customer_id": "custId",
            "transaction_date": "transactionDate",
            "product_sold": "productSold",
            "units_sold": "unitsSold",
        },
        delimiter="|",
        generate=generate_transactions,
        demo_key="sertis/transactions/transactions-demo.csv",
        after_load=_publish,
    )
)
