"""Unit tests of the Sertis gold rules: gaps, ties, one-day customers, zero-padded ids."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from schemas.sertis import Customer, Transaction
from sluice.transforms.sertis import (
    build_customers,
    favourite_products,
    longest_streak,
    transform_transactions,
)

D = dt.date


def silver(*rows: tuple[str, dt.date, str, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "transaction_date", "product_sold", "units_sold"])


def test_streak_counts_consecutive_days_once_each() -> None:
    days = [D(2011, 1, 1), D(2011, 1, 2), D(2011, 1, 2), D(2011, 1, 3), D(2011, 1, 5), D(2011, 1, 6)]
    assert longest_streak(pd.Series(days)) == 3
    assert longest_streak(pd.Series([D(2011, 1, 1)])) == 1  # a one-day customer
    assert longest_streak(pd.Series([D(2011, 1, 1), D(2011, 1, 3), D(2011, 1, 5)])) == 1  # gaps only
    assert longest_streak(pd.Series([D(2011, 12, 31), D(2012, 1, 1)])) == 2  # across a year end
    assert longest_streak(pd.Series([D(2011, 1, 9), D(2011, 1, 8), D(2011, 1, 7)])) == 3  # any order


def test_favourite_is_most_units_tie_smallest_code() -> None:
    frame = silver(
        ("0001", D(2011, 1, 1), "SUPA101", 10),
        ("0001", D(2011, 1, 2), "SUPA101", 5),
        ("0001", D(2011, 1, 2), "DETA800", 14),  # 14 < 15: not the favourite
        ("0002", D(2011, 1, 1), "PURA250", 7),
        ("0002", D(2011, 1, 1), "DETA100", 7),  # a tie: DETA100 < PURA250
    )
    assert favourite_products(frame).to_dict() == {"0001": "SUPA101", "0002": "DETA100"}


def test_gold_keeps_zero_padded_ids_and_validates() -> None:
    gold = build_customers(
        silver(("0023586", D(2011, 1, 11), "DETA800", 176), ("0000007", D(2011, 1, 1), "A1", 1))
    )
    assert gold["customer_id"].tolist() == ["0000007", "0023586"]
    assert gold["longest_streak"].tolist() == [1, 1]
    Customer.validate(gold)


def test_silver_typing_keeps_custid_text_and_flags_bad_units() -> None:
    raw = pd.DataFrame(
        {"transactionId": ["20110111-0023586", "x"], "custId": ["0023586", "007"], "transactionDate": ["2011-01-11", "2011-13-01"],
         "productSold": ["DETA800", "SUPA101"], "unitsSold": ["176", "-3"]},
        dtype="str",
    )  # fmt: skip
    typed = transform_transactions(raw)
    assert typed.loc[0, "customer_id"] == "0023586" and typed.loc[1, "customer_id"] == "007"
    assert typed.loc[0, "transaction_date"] == D(2011, 1, 11) and typed.loc[1, "transaction_date"] is None
    try:
        Transaction.validate(typed, lazy=True)
    except Exception as exc:
        failed = exc.failure_cases  # type: ignore[attr-defined]
    assert set(failed["index"].dropna().astype(int)) == {1}
    assert {"transaction_date", "units_sold"} <= set(failed["column"].astype(str))
