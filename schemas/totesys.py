"""Strict Pandera models of the Totesys star schema (schema ``warehouse``), one per output table.

Every frame the transform produces is checked against its model before anything loads (hard mode: a broken
star schema must not load). Dates are ``datetime.date`` objects, times ``datetime.time``, money ``Decimal``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine
from pandera.typing import Series


def _all(series: pd.Series, kind: type, nullable: bool = False) -> pd.Series:
    return series.map(lambda v: isinstance(v, kind) or (nullable and (v is None or v is pd.NA)))


def _money(series: pd.Series, nullable: bool = False, precision: int = 10) -> pd.Series:
    """Decimals that fit ``numeric(precision, 2)``."""
    limit = Decimal(10) ** (precision - 2)

    def ok(v: object) -> bool:
        if v is None or v is pd.NA:
            return nullable
        return isinstance(v, Decimal) and v.is_finite() and abs(v) < limit

    return series.map(ok)


class _Strict(pa.DataFrameModel):
    class Config:
        strict = True
        coerce = False


class _Versioned(_Strict):
    created_date: Series[pandas_engine.Date] = pa.Field()
    created_time: Series[object] = pa.Field()
    last_updated_date: Series[pandas_engine.Date] = pa.Field()
    last_updated_time: Series[object] = pa.Field()

    @pa.check("created_time", "last_updated_time", name="is a time of day")
    def _times(cls, series: pd.Series) -> pd.Series:
        return _all(series, dt.time)

    # No "last_updated is not before created_at" check: an OLTP whose clock went back stamps exactly that, and a
    # hard failure would stop every cycle until someone edits the source. The version loads as it is stamped.


Id = Series[pd.Int64Dtype]


class DimDate(_Strict):
    date_id: Series[pandas_engine.Date] = pa.Field(unique=True)
    # Any date the source can hold: an open-ended agreement's 9999-12-31 is a real OLTP value, and a bound here
    # failed the cycle on a dim_date row that names no source row.
    year: Id = pa.Field(ge=1, le=9999)
    month: Id = pa.Field(ge=1, le=12)
    day: Id = pa.Field(ge=1, le=31)
    day_of_week: Id = pa.Field(ge=1, le=7, description="ISO: 1 = Monday … 7 = Sunday")
    day_name: Series[pd.StringDtype] = pa.Field(
        isin=["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    )
    month_name: Series[pd.StringDtype] = pa.Field(str_length={"min_value": 3})
    quarter: Id = pa.Field(ge=1, le=4)


class DimLocation(_Strict):
    location_id: Id = pa.Field(gt=0, unique=True)
    address_line_1: Series[pd.StringDtype] = pa.Field()
    address_line_2: Series[pd.StringDtype] = pa.Field(nullable=True)
    district: Series[pd.StringDtype] = pa.Field(nullable=True)
    city: Series[pd.StringDtype] = pa.Field()
    postal_code: Series[pd.StringDtype] = pa.Field()
    country: Series[pd.StringDtype] = pa.Field()
    phone: Series[pd.StringDtype] = pa.Field()


class DimCounterparty(_Strict):
    counterparty_id: Id = pa.Field(gt=0, unique=True)
    counterparty_legal_name: Series[pd.StringDtype] = pa.Field()
    counterparty_legal_address_line_1: Series[pd.StringDtype] = pa.Field()
    counterparty_legal_address_line2: Series[pd.StringDtype] = pa.Field(nullable=True)
    counterparty_legal_district: Series[pd.StringDtype] = pa.Field(nullable=True)
    counterparty_legal_city: Series[pd.StringDtype] = pa.Field()
    counterparty_legal_postal_code: Series[pd.StringDtype] = pa.Field()
    counterparty_legal_country: Series[pd.StringDtype] = pa.Field()
    counterparty_legal_phone_number: Series[pd.StringDtype] = pa.Field()


class DimStaff(_Strict):
    staff_id: Id = pa.Field(gt=0, unique=True)
    first_name: Series[pd.StringDtype] = pa.Field()
    last_name: Series[pd.StringDtype] = pa.Field()
    department_name: Series[pd.StringDtype] = pa.Field()
    location: Series[pd.StringDtype] = pa.Field(nullable=True)
    # Any text, as the OLTP holds it (``varchar NOT NULL``: an empty address too). The checks here are what the
    # warehouse needs, not guesses at what a valid value looks like: a hard check the source does not enforce would
    # block every cycle on a row its owners may not be able to change.
    email_address: Series[pd.StringDtype] = pa.Field()


class DimCurrency(_Strict):
    currency_id: Id = pa.Field(gt=0, unique=True)
    # An ISO 4217 code (upper-cased by the transform): what its name is looked up by, and char(3) in the warehouse
    currency_code: Series[pd.StringDtype] = pa.Field(str_matches=r"^[A-Z]{3}$")
    currency_name: Series[pd.StringDtype] = pa.Field()


class DimDesign(_Strict):
    design_id: Id = pa.Field(gt=0, unique=True)
    design_name: Series[pd.StringDtype] = pa.Field()
    file_location: Series[pd.StringDtype] = pa.Field()
    file_name: Series[pd.StringDtype] = pa.Field()


class DimPaymentType(_Strict):
    payment_type_id: Id = pa.Field(gt=0, unique=True)
    payment_type_name: Series[pd.StringDtype] = pa.Field()


class DimTransaction(_Strict):
    transaction_id: Id = pa.Field(gt=0, unique=True)
    transaction_type: Series[pd.StringDtype] = (
        pa.Field()
    )  # SALE or PURCHASE in the samples; any text in the OLTP
    sales_order_id: Id = pa.Field(gt=0, nullable=True)
    purchase_order_id: Id = pa.Field(gt=0, nullable=True)

    @pa.dataframe_check(name="exactly one of sales_order_id, purchase_order_id is set")
    def _one_order(cls, df: pd.DataFrame) -> pd.Series:
        return df["sales_order_id"].notna() != df["purchase_order_id"].notna()


class FactSalesOrder(_Versioned):
    sales_order_id: Id = pa.Field(gt=0)
    sales_staff_id: Id = pa.Field(gt=0)
    counterparty_id: Id = pa.Field(gt=0)
    units_sold: Id = pa.Field(ge=-(2**31), le=2**31 - 1)  # a return is negative
    unit_price: Series[object] = pa.Field()
    currency_id: Id = pa.Field(gt=0)
    design_id: Id = pa.Field(gt=0)
    agreed_payment_date: Series[pandas_engine.Date] = pa.Field()
    agreed_delivery_date: Series[pandas_engine.Date] = pa.Field()
    agreed_delivery_location_id: Id = pa.Field(gt=0, nullable=True)  # an order without an agreed location

    @pa.check("unit_price", name="is money (numeric(10,2))")
    def _price(cls, series: pd.Series) -> pd.Series:
        return _money(series)

    class Config:
        unique = ["sales_order_id", "last_updated_date", "last_updated_time"]  # noqa: RUF012


class FactPurchaseOrder(_Versioned):
    purchase_order_id: Id = pa.Field(gt=0)
    staff_id: Id = pa.Field(gt=0)
    counterparty_id: Id = pa.Field(gt=0)
    item_code: Series[pd.StringDtype] = pa.Field()
    item_quantity: Id = pa.Field(ge=-(2**31), le=2**31 - 1)
    item_unit_price: Series[object] = pa.Field()
    currency_id: Id = pa.Field(gt=0)
    agreed_delivery_date: Series[pandas_engine.Date] = pa.Field()
    agreed_payment_date: Series[pandas_engine.Date] = pa.Field()
    agreed_delivery_location_id: Id = pa.Field(gt=0, nullable=True)  # an order without an agreed location

    @pa.check("item_unit_price", name="is money (numeric(10,2))")
    def _price(cls, series: pd.Series) -> pd.Series:
        return _money(series)

    class Config:
        unique = ["purchase_order_id", "last_updated_date", "last_updated_time"]  # noqa: RUF012


class FactPayment(_Versioned):
    payment_id: Id = pa.Field(gt=0)
    transaction_id: Id = pa.Field(gt=0)
    counterparty_id: Id = pa.Field(gt=0)
    payment_amount: Series[object] = pa.Field()
    currency_id: Id = pa.Field(gt=0)
    payment_type_id: Id = pa.Field(gt=0)
    paid: Series[pd.BooleanDtype] = pa.Field()
    payment_date: Series[pandas_engine.Date] = pa.Field()

    @pa.check("payment_amount", name="is money (numeric(12,2))")
    def _amount(cls, series: pd.Series) -> pd.Series:
        return _money(series, precision=12)

    class Config:
        unique = ["payment_id", "last_updated_date", "last_updated_time"]  # noqa: RUF012


MODELS: dict[str, type[pa.DataFrameModel]] = {
    "dim_date": DimDate,
    "dim_location": DimLocation,
    "dim_counterparty": DimCounterparty,
    "dim_staff": DimStaff,
    "dim_currency": DimCurrency,
    "dim_design": DimDesign,
    "dim_payment_type": DimPaymentType,
    "dim_transaction": DimTransaction,
    "fact_sales_order": FactSalesOrder,
    "fact_purchase_order": FactPurchaseOrder,
    "fact_payment": FactPayment,
}
