"""Unit tests of the Data2bots rules on tiny frames: 6-day and 15-day edges, ties, weekends vs holidays."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from schemas.data2bots import Order, ShipmentDelivery
from sluice.transforms import data2bots as r

D = dt.date


def orders(*rows: tuple[int, dt.date, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["order_id", "order_date", "product_id"])


def shipments(*rows: tuple[int, int, dt.date | None, dt.date | None]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["shipment_id", "order_id", "shipment_date", "delivery_date"]).astype(
        object
    )


def test_dim_dates_weekdays_monday_one_and_holidays_are_not_working_days() -> None:
    dates = r.dim_dates(D(2022, 1, 1), D(2022, 1, 10), [D(2022, 1, 3), D(2022, 1, 8)])
    row = dates.set_index("calendar_dt")
    assert row.loc[D(2022, 1, 3), "day_of_the_week_num"] == 1  # a Monday
    assert row.loc[D(2022, 1, 2), "day_of_the_week_num"] == 7  # a Sunday
    assert not row.loc[D(2022, 1, 3), "working_day"]  # holiday on a weekday
    assert not row.loc[D(2022, 1, 8), "working_day"]  # holiday on a Saturday: still not a working day
    assert row.loc[D(2022, 1, 4), "working_day"]
    assert r.public_holidays(dates) == {D(2022, 1, 3)}  # a weekend holiday is not a public-holiday order day


def test_a_generated_dim_dates_spans_the_orders_years_but_never_past_what_its_model_holds() -> None:
    """An order of 1850 staged (before staging refused it) made the generated dim_dates start in 1850, fail its
    own model (``year_num`` 1900..2200) and so fail every analytics run that creates it."""
    from schemas.data2bots import DimDates

    assert r.date_span(orders((1, D(2021, 5, 1), 1), (2, D(2022, 2, 1), 1)), D(2022, 3, 1)) == (
        D(2021, 1, 1),
        D(2022, 12, 31),
    )
    start, end = r.date_span(orders((1, D(1850, 1, 1), 1), (2, D(2250, 6, 1), 1)), D(2022, 3, 1))
    assert (start, end) == (D(1900, 1, 1), D(2200, 12, 31))
    DimDates.validate(r.dim_dates(start, D(1900, 12, 31), []))
    assert r.date_span(orders((1, D(2300, 1, 1), 1)), D(2300, 1, 1)) == (D(2200, 1, 1), D(2200, 12, 31))


def test_late_is_six_days_or_more_and_not_delivered() -> None:
    o = D(2022, 3, 1)
    frame = pd.DataFrame(
        {
            "order_date": [o, o, o, o, o],
            "shipment_date": [
                o + dt.timedelta(days=5),
                o + dt.timedelta(days=6),
                o + dt.timedelta(days=9),
                o + dt.timedelta(days=6),
                None,
            ],
            "delivery_date": [None, None, None, o + dt.timedelta(days=8), None],
        }
    )
    assert r.is_late(frame).tolist() == [False, True, True, False, False]
    assert r.is_early(frame).tolist() == [True, False, False, False, False]


def test_undelivered_needs_both_dates_empty_and_fifteen_days() -> None:
    o = D(2022, 3, 1)
    frame = pd.DataFrame(
        {"order_date": [o, o, o], "shipment_date": [None, None, o], "delivery_date": [None, None, None]}
    )
    assert r.is_undelivered(frame, o + dt.timedelta(days=15)).tolist() == [True, True, False]
    assert r.is_undelivered(frame, o + dt.timedelta(days=14)).tolist() == [False, False, False]


def test_agg_public_holiday_counts_per_month_within_the_year_up_to_as_of() -> None:
    dates = r.dim_dates(
        D(2021, 1, 1),
        D(2022, 12, 31),
        [D(2021, 1, 1), D(2022, 1, 3), D(2022, 4, 15), D(2022, 5, 1), D(2022, 12, 26)],
    )
    frame = orders(
        (1, D(2022, 1, 3), 1), (2, D(2022, 1, 3), 2), (3, D(2022, 4, 15), 1),
        (4, D(2022, 5, 1), 1),  # a Sunday holiday: not counted
        (5, D(2021, 1, 1), 1),  # last year: not counted
        (6, D(2022, 12, 26), 1),  # after as_of: not counted
        (7, D(2022, 1, 4), 1),  # a working day
    )  # fmt: skip
    out = r.agg_public_holiday(frame, dates, D(2022, 6, 30)).iloc[0]
    assert out["tt_order_hol_jan"] == 2 and out["tt_order_hol_apr"] == 1
    assert out["tt_order_hol_may"] == 0 and out["tt_order_hol_dec"] == 0
    assert out["ingestion_date"] == D(2022, 6, 30)


def test_agg_shipments() -> None:
    o = D(2022, 3, 1)
    frame = orders((1, o, 1), (2, o, 1), (3, o, 1), (4, D(2022, 3, 20), 1))
    ships = shipments(
        (1, 1, o + dt.timedelta(days=6), None), (2, 2, None, None), (3, 3, o, o), (4, 4, None, None)
    )
    out = r.agg_shipments(frame, ships, o + dt.timedelta(days=15)).iloc[0]
    # order 4 is after as_of: ignored entirely
    assert (out["tt_late_shipments"], out["tt_undelivered_items"]) == (1, 1)


def test_best_product_ties_lowest_id_and_star_shares_of_points() -> None:
    reviews = pd.DataFrame({"review": [5, 1, 4, 2, 3, 1, 5], "product_id": [7, 7, 3, 3, 3, 9, 9]})
    # points: 7 → 6, 3 → 9, 9 → 6: product 3 wins
    frame = orders((1, D(2022, 1, 4), 3), (2, D(2022, 1, 5), 3), (3, D(2022, 1, 5), 3), (4, D(2022, 1, 4), 3))
    ships = shipments(
        (1, 1, D(2022, 1, 5), None),
        (2, 2, D(2022, 1, 11), None),
        (3, 3, None, None),
        (4, 4, D(2022, 1, 20), D(2022, 1, 22)),
    )
    products = pd.DataFrame({"product_id": [3], "product_category": ["Home"], "product_name": ["Lamp"]})
    dates = r.dim_dates(D(2022, 1, 1), D(2022, 12, 31), [D(2022, 1, 4)])
    out = r.best_performing_product(frame, reviews, ships, products, dates, D(2022, 2, 1)).iloc[0]
    assert out["product_id"] == 3 and out["product_name"] == "Lamp" and out["tt_review_points"] == 9
    assert out["most_ordered_day"] == D(2022, 1, 4)  # 2 orders on the 4th and on the 5th: the earliest
    assert bool(out["is_public_holiday"]) is True
    assert (out["pct_two_star_review"], out["pct_three_star_review"], out["pct_four_star_review"]) == (
        22.22,
        33.33,
        44.44,
    )
    assert out["pct_one_star_review"] == 0 and out["pct_five_star_review"] == 0
    # One early (day 1), one late (day 6, not delivered); the unshipped one and the one shipped on day 16 but
    # delivered are neither: the split is of the two that are early or late.
    assert (out["pct_early_shipments"], out["pct_late_shipments"]) == (50.0, 50.0)
    tie = pd.DataFrame({"review": [5, 5], "product_id": [12, 4]})
    assert (
        r.best_performing_product(frame, tie, ships, products, dates, D(2022, 2, 1)).iloc[0]["product_id"]
        == 4
    )


def test_staging_typing_and_checks() -> None:
    raw = pd.DataFrame(
        {"order_id": ["1", "2", "3"], "customer_id": ["5", "5", "x"], "order_date": ["2022-07-13", "13/07/2022", "2022-07-13"],
         "product_id": ["24", "2", "2"], "unit_price": ["139", "10", "10"], "quantity": ["10", "2", "2"],
         "total_price": ["1390", "21", "20"]},
        dtype="str",
    )  # fmt: skip
    typed = r.transform_orders(raw)
    assert typed.loc[0, "order_date"] == D(2022, 7, 13) and typed.loc[1, "order_date"] is None
    with pytest.raises(Exception) as failed:
        Order.validate(typed, lazy=True)
    cases = failed.value.failure_cases
    assert set(cases["index"].dropna().astype(int)) == {1, 2}
    assert "total_price = unit_price × quantity" in set(cases["check"].astype(str))
    ships = r.transform_shipments(
        pd.DataFrame({"shipment_id": ["1", "2"], "order_id": ["1", "2"], "shipment_date": ["", "2022-01-05"], "delivery_date": ["", "2022-01-03"]}, dtype="str")
    )  # fmt: skip
    with pytest.raises(Exception, match="delivered on or after shipment"):
        ShipmentDelivery.validate(ships, lazy=True)


def test_early_late_split_is_of_the_early_or_late_shipments_and_adds_up_to_100() -> None:
    assert r.early_late_split(118, 6) == (95.16, 4.84)  # product 22 of the sample
    assert r.early_late_split(1, 2) == (33.33, 66.67)
    assert r.early_late_split(0, 5) == (0.0, 100.0)
    assert r.early_late_split(3, 0) == (100.0, 0.0)
    assert r.early_late_split(0, 0) == (0.0, 0.0)  # nothing to split: both 0 (the columns are NOT NULL)
    for early in range(0, 40):
        for late in range(1, 40):
            a, b = r.early_late_split(early, late)
            assert round(a + b, 2) == 100.0, (early, late)


def best_of(frame: pd.DataFrame, ships: pd.DataFrame) -> pd.Series:
    reviews = pd.DataFrame({"review": [5], "product_id": [3]})
    products = pd.DataFrame({"product_id": [3], "product_category": ["Home"], "product_name": ["Lamp"]})
    dates = r.dim_dates(D(2022, 1, 1), D(2022, 12, 31), [])
    return r.best_performing_product(frame, reviews, ships, products, dates, D(2022, 6, 30)).iloc[0]


def test_pct_shipments_leave_unshipped_and_late_but_delivered_out_of_both_sides() -> None:
    o = D(2022, 3, 1)
    frame = orders(*[(i, o, 3) for i in range(1, 11)], (11, o, 4))
    ships = shipments(
        (1, 1, o, None), (2, 2, o + dt.timedelta(days=5), o + dt.timedelta(days=9)),  # early (delivered or not)
        (3, 3, o + dt.timedelta(days=6), None),  # late
        (4, 4, None, None), (5, 5, None, None), (6, 6, None, None), (7, 7, None, None), (8, 8, None, None),
        (9, 9, o + dt.timedelta(days=8), o + dt.timedelta(days=9)),  # shipped late but delivered: neither
        (10, 10, o + dt.timedelta(days=30), o + dt.timedelta(days=31)),  # neither
        (11, 11, o + dt.timedelta(days=9), None),  # late, but another product's
    )  # fmt: skip
    out = best_of(frame, ships)
    assert (out["pct_early_shipments"], out["pct_late_shipments"]) == (66.67, 33.33)


def test_pct_shipments_without_early_or_late_shipments_are_both_zero() -> None:
    o = D(2022, 3, 1)
    only_unshipped = best_of(orders((1, o, 3), (2, o, 3)), shipments((1, 1, None, None), (2, 2, None, None)))
    assert (only_unshipped["pct_early_shipments"], only_unshipped["pct_late_shipments"]) == (0.0, 0.0)
    delivered_late = best_of(
        orders((1, o, 3)), shipments((1, 1, o + dt.timedelta(days=7), o + dt.timedelta(days=8)))
    )
    assert (delivered_late["pct_early_shipments"], delivered_late["pct_late_shipments"]) == (0.0, 0.0)
    no_shipment_rows = best_of(orders((1, o, 3)), shipments())
    assert (no_shipment_rows["pct_early_shipments"], no_shipment_rows["pct_late_shipments"]) == (0.0, 0.0)
    no_orders = best_of(orders((1, o, 9)), shipments((1, 1, o, None)))  # reviewed but never ordered
    assert (no_orders["pct_early_shipments"], no_orders["pct_late_shipments"]) == (0.0, 0.0)
    assert no_orders["most_ordered_day"] is None


def holiday_counts(order_days: list[dt.date], holidays: list[dt.date], as_of: dt.date) -> dict[str, int]:
    dates = r.dim_dates(D(2020, 1, 1), D(2025, 12, 31), holidays)
    frame = orders(*[(i, d, 1) for i, d in enumerate(order_days, start=1)])
    row = r.agg_public_holiday(frame, dates, as_of).iloc[0]
    return {c.removeprefix("tt_order_hol_"): int(row[c]) for c in r.MONTH_COLUMNS if row[c]}


def test_past_year_is_the_twelve_calendar_months_ending_with_as_of_month() -> None:
    assert r.past_year(D(2022, 6, 15)) == (D(2021, 7, 1), D(2022, 6, 15))
    assert r.past_year(D(2022, 1, 10)) == (D(2021, 2, 1), D(2022, 1, 10))
    assert r.past_year(D(2022, 12, 31)) == (D(2022, 1, 1), D(2022, 12, 31))
    days = [D(2021, 6, 30), D(2021, 7, 1), D(2021, 12, 27), D(2022, 6, 15), D(2022, 6, 16)]
    assert all(d.weekday() < 5 for d in days)
    # 2021-06-30 is before the window, 2022-06-16 after as_of; December 2021 is in the past year.
    assert holiday_counts(days, days, D(2022, 6, 15)) == {"jul": 1, "dec": 1, "jun": 1}
    # A day later the window has not moved (same month): still only up to as_of.
    assert holiday_counts(days, days, D(2022, 6, 16)) == {"jul": 1, "dec": 1, "jun": 2}
    # The next month the window starts on 1 August 2021: July 2021 drops out, July 2022 has none yet.
    assert holiday_counts(days, days, D(2022, 7, 1)) == {"dec": 1, "jun": 2}


def test_past_year_across_leap_days() -> None:
    days = [D(2023, 2, 28), D(2023, 3, 1), D(2024, 2, 29), D(2024, 3, 1)]
    assert all(d.weekday() < 5 for d in days)
    assert r.past_year(D(2024, 2, 29)) == (D(2023, 3, 1), D(2024, 2, 29))
    assert holiday_counts(days, days, D(2024, 2, 29)) == {"mar": 1, "feb": 1}
    assert holiday_counts(days, days, D(2024, 2, 28)) == {"mar": 1}  # the leap day is after as_of
    assert r.past_year(D(2025, 2, 28)) == (D(2024, 3, 1), D(2025, 2, 28))
    assert holiday_counts(days, days, D(2025, 2, 28)) == {"mar": 1}  # 2024-02-29 is thirteen months back
    assert holiday_counts(days, days, D(2024, 3, 1)) == {"feb": 1, "mar": 1}  # Mar 2023 left, Mar 2024 came


def test_star_shares_round_half_up_like_the_numeric_columns() -> None:
    # 32 points: one 1-star (3.125 %), two 3-star (18.75 %), five 5-star (78.125 %). Half-up, as PostgreSQL's
    # round() and the early/late split round, gives 3.13 and 78.13; float round() gave 3.12 and 78.12.
    reviews = pd.DataFrame({"review": [1, 3, 3, 5, 5, 5, 5, 5], "product_id": [3] * 8})
    products = pd.DataFrame({"product_id": [3], "product_category": ["Home"], "product_name": ["Lamp"]})
    dates = r.dim_dates(D(2022, 1, 1), D(2022, 12, 31), [])
    out = r.best_performing_product(
        orders((1, D(2022, 3, 1), 3)), reviews, shipments(), products, dates, D(2022, 6, 30)
    ).iloc[0]
    assert out["tt_review_points"] == 32
    assert [out[c] for c in r.STAR_COLUMNS] == [3.13, 0.0, 18.75, 0.0, 78.13]


def test_a_best_product_missing_from_dim_products_is_said_not_silently_nameless() -> None:
    from sluice.data2bots import Reference, build

    staging = {
        "orders": orders((1, D(2022, 3, 1), 3)),
        "reviews": pd.DataFrame({"review": [5], "product_id": [3]}),
        "shipments": shipments((1, 1, D(2022, 3, 2), None)),
    }
    products = pd.DataFrame({"product_id": [4], "product_category": ["Home"], "product_name": ["Lamp"]})
    reference = Reference(dates=r.dim_dates(D(2022, 1, 1), D(2022, 12, 31), []), products=products)
    built = build(staging, reference, D(2022, 3, 31))
    best = built["best_performing_product"].iloc[0]
    assert best["product_id"] == 3 and pd.isna(best["product_name"])
    assert (
        "best performing product 3 is not in if_common.dim_products: its product_name is empty"
        in reference.notes
    )


def test_a_past_year_without_any_public_holiday_in_dim_dates_is_said() -> None:
    from sluice.data2bots import Reference, build

    staging = {
        "orders": orders((1, D(2024, 3, 1), 3)),
        "reviews": pd.DataFrame({"review": [5], "product_id": [3]}),
        "shipments": shipments((1, 1, D(2024, 3, 2), None)),
    }
    products = pd.DataFrame({"product_id": [3], "product_category": ["Home"], "product_name": ["Lamp"]})
    # A holiday list that stops at 2023: the past year of 2024-03-31 (April 2023 - March 2024) has 2023's.
    dates = r.dim_dates(D(2023, 1, 1), D(2024, 12, 31), [D(2023, 12, 25)])
    reference = Reference(dates=dates, products=products)
    build(staging, reference, D(2024, 3, 31))
    assert reference.notes == [
        "if_common.dim_dates has no public holiday in 2024: agg_public_holiday counts none there "
        "(is the holiday list up to date?)"
    ]
    reference = Reference(dates=dates, products=products)
    build(staging, reference, D(2023, 12, 31))
    assert reference.notes == []
