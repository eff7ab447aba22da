"""Sertis: transactions typing (silver) and the per-customer rules (gold), pure functions on DataFrames.

- ``favourite_product``: the product with the greatest total units for the customer; tie: product code ascending.
- ``longest_streak``: the longest run of consecutive calendar days with at least one purchase (several purchases
  on one day count once; a one-day customer has a streak of 1).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable

import pandas as pd

from sluice.transforms.values import iso_dates, whole_numbers


def transform_transactions(raw: pd.DataFrame) -> pd.DataFrame:
    """Source columns (all text) → typed silver columns. ``custId`` stays text: ``0023586`` keeps its zeros."""
    text = {c: raw[c].astype("string").str.strip() for c in raw.columns}
    return pd.DataFrame(
        {
            "transaction_id": text["transactionId"].replace("", pd.NA),
            "customer_id": text["custId"].replace("", pd.NA),
            "transaction_date": iso_dates(text["transactionDate"]),
            "product_sold": text["productSold"].replace("", pd.NA),
            "units_sold": whole_numbers(text["unitsSold"]),
        },
        index=raw.index,
    )


def favourite_products(silver: pd.DataFrame) -> pd.Series:
    """customer_id → the product with the most units (tie: the smallest product code)."""
    totals = silver.groupby(["customer_id", "product_sold"], as_index=False)["units_sold"].sum()
    ranked = totals.sort_values(["customer_id", "units_sold", "product_sold"], ascending=[True, False, True])
    return ranked.drop_duplicates("customer_id").set_index("customer_id")["product_sold"]


def longest_streak(days: pd.Series) -> int:
    """The longest run of consecutive calendar days among ``days`` (duplicates count once)."""
    unique = sorted(set(days))
    if not unique:
        return 0
    best = run = 1
    for previous, current in itertools.pairwise(unique):
        run = run + 1 if current - previous == dt.timedelta(days=1) else 1
        best = max(best, run)
    return best


def build_customers(silver: pd.DataFrame) -> pd.DataFrame:
    """Gold ``customers(customer_id, favourite_product, longest_streak)`` from all of silver."""
    if silver.empty:
        return pd.DataFrame(
            {
                "customer_id": pd.Series(dtype="string"),
                "favourite_product": pd.Series(dtype="string"),
                "longest_streak": pd.Series(dtype="Int64"),
            }
        )
    favourites = favourite_products(silver)
    streaks = silver.groupby("customer_id")["transaction_date"].agg(longest_streak)
    out = pd.DataFrame({"favourite_product": favourites, "longest_streak": streaks}).reset_index(
        names="customer_id"
    )
    return pd.DataFrame(
        {
            "customer_id": out["customer_id"].astype("string"),
            "favourite_product": out["favourite_product"].astype("string"),
            "longest_streak": out["longest_streak"].astype("Int64"),
        }
    ).sort_values("customer_id", ignore_index=True)


def build_customers_by_part(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """``build_customers`` over silver given in parts that each hold whole customers (no customer in two parts):
    the same table as over all of silver at once, built one part at a time."""
    built = [build_customers(part) for part in parts]
    if not built:
        return build_customers(pd.DataFrame())
    return pd.concat(built, ignore_index=True).sort_values("customer_id", ignore_index=True)
