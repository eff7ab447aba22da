"""Pandera models of the Data2bots staging datasets and the analytics tables."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine
from pandera.typing import Series

from schemas.checks import INT4_MAX, two_decimals

ORDERS_COLUMNS = (
    "order_id",
    "customer_id",
    "order_date",
    "product_id",
    "unit_price",
    "quantity",
    "total_price",
)
REVIEWS_COLUMNS = ("review", "product_id")
SHIPMENTS_COLUMNS = ("shipment_id", "order_id", "shipment_date", "delivery_date")

Id = Series[pd.Int64Dtype]
Day = Series[pandas_engine.Date]

# The years a generated ``if_common.dim_dates`` covers. An order outside them is refused at staging, with its row:
# staged, it made the dimension that the analytics create from the orders' years fail its own model, and every
# analytics run with it (a typo such as 1850 or 2250 for a real order's year).
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2200, 12, 31)
IN_CALENDAR = f"a day dim_dates can hold ({FIRST_DAY} to {LAST_DAY})"


class _Strict(pa.DataFrameModel):
    class Config:
        strict = True
        coerce = False


class Order(_Strict):
    order_id: Id = pa.Field(gt=0, unique=True)
    customer_id: Id = pa.Field(gt=0)
    order_date: Day = pa.Field()
    product_id: Id = pa.Field(gt=0)
    unit_price: Series[float] = pa.Field(ge=0, lt=1e12)  # numeric(14, 2)
    quantity: Id = pa.Field(gt=0, le=INT4_MAX)
    total_price: Series[float] = pa.Field(ge=0, lt=1e14)  # numeric(16, 2)

    @pa.check("order_date", name=IN_CALENDAR)
    def _in_calendar(cls, days: pd.Series) -> pd.Series:
        return (
            days.map(lambda day: FIRST_DAY <= day <= LAST_DAY, na_action="ignore").fillna(True).astype(bool)
        )

    @pa.check("unit_price", "total_price", name="at most 2 decimals (to the cent)")
    def _cents(cls, values: pd.Series) -> pd.Series:
        return two_decimals(values)

    @pa.dataframe_check(name="total_price = unit_price × quantity")
    def _total(cls, df: pd.DataFrame) -> pd.Series:
        return (df["unit_price"] * df["quantity"].astype("float64") - df["total_price"]).abs() < 0.005


class Review(_Strict):
    review: Id = pa.Field(ge=1, le=5, description="Stars, 1..5")
    product_id: Id = pa.Field(gt=0)


class ShipmentDelivery(_Strict):
    shipment_id: Id = pa.Field(gt=0, unique=True)
    order_id: Id = pa.Field(gt=0)
    shipment_date: Day = pa.Field(nullable=True)
    delivery_date: Day = pa.Field(nullable=True)

    @pa.dataframe_check(name="delivered on or after shipment, never without one")
    def _order(cls, df: pd.DataFrame) -> pd.Series:
        shipped, delivered = df["shipment_date"], df["delivery_date"]
        both = shipped.notna() & delivered.notna()
        ok = pd.Series(True, index=df.index)
        if both.any():  # an empty list assigned through an all-False mask is a TypeError in pandas 3
            ok[both] = [d >= s for s, d in zip(shipped[both], delivered[both], strict=True)]
        ok[delivered.notna() & shipped.isna()] = False
        return ok


class AggPublicHoliday(_Strict):
    ingestion_date: Day = pa.Field(unique=True)
    tt_order_hol_jan: Id = pa.Field(ge=0)
    tt_order_hol_feb: Id = pa.Field(ge=0)
    tt_order_hol_mar: Id = pa.Field(ge=0)
    tt_order_hol_apr: Id = pa.Field(ge=0)
    tt_order_hol_may: Id = pa.Field(ge=0)
    tt_order_hol_jun: Id = pa.Field(ge=0)
    tt_order_hol_jul: Id = pa.Field(ge=0)
    tt_order_hol_aug: Id = pa.Field(ge=0)
    tt_order_hol_sep: Id = pa.Field(ge=0)
    tt_order_hol_oct: Id = pa.Field(ge=0)
    tt_order_hol_nov: Id = pa.Field(ge=0)
    tt_order_hol_dec: Id = pa.Field(ge=0)


class AggShipments(_Strict):
    ingestion_date: Day = pa.Field(unique=True)
    tt_late_shipments: Id = pa.Field(ge=0)
    tt_undelivered_items: Id = pa.Field(ge=0)


class BestPerformingProduct(_Strict):
    ingestion_date: Day = pa.Field(unique=True)
    product_id: Id = pa.Field(gt=0)
    product_name: Series[pd.StringDtype] = pa.Field(nullable=True)
    most_ordered_day: Day = pa.Field(nullable=True)
    is_public_holiday: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    tt_review_points: Id = pa.Field(ge=0)
    pct_one_star_review: Series[float] = pa.Field(ge=0, le=100)
    pct_two_star_review: Series[float] = pa.Field(ge=0, le=100)
    pct_three_star_review: Series[float] = pa.Field(ge=0, le=100)
    pct_four_star_review: Series[float] = pa.Field(ge=0, le=100)
    pct_five_star_review: Series[float] = pa.Field(ge=0, le=100)
    pct_early_shipments: Series[float] = pa.Field(ge=0, le=100)
    pct_late_shipments: Series[float] = pa.Field(ge=0, le=100)


class DimDates(_Strict):
    calendar_dt: Day = pa.Field(unique=True)
    year_num: Id = pa.Field(ge=FIRST_DAY.year, le=LAST_DAY.year)
    month_of_the_year_num: Id = pa.Field(ge=1, le=12)
    day_of_the_month_num: Id = pa.Field(ge=1, le=31)
    day_of_the_week_num: Id = pa.Field(ge=1, le=7, description="1 = Monday … 7 = Sunday")
    working_day: Series[pd.BooleanDtype] = pa.Field()


class DimProducts(_Strict):
    product_id: Id = pa.Field(gt=0, unique=True)
    product_category: Series[pd.StringDtype] = pa.Field()
    product_name: Series[pd.StringDtype] = pa.Field()
