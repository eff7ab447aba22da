"""Pandera models of the Sertis transactions (silver) and the per-customer gold table."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine
from pandera.typing import Series

SOURCE_COLUMNS = ("transactionId", "custId", "transactionDate", "productSold", "unitsSold")


class Transaction(pa.DataFrameModel):
    """A silver transaction line: typed, ids kept as text (``custId`` is zero-padded and stays so)."""

    transaction_id: Series[pd.StringDtype] = pa.Field(str_length={"min_value": 1, "max_value": 100})
    customer_id: Series[pd.StringDtype] = pa.Field(str_matches=r"^\d+$", description="zero-padded digits")
    transaction_date: Series[pandas_engine.Date] = pa.Field()
    product_sold: Series[pd.StringDtype] = pa.Field(str_matches=r"^[A-Za-z0-9_-]{1,50}$")
    units_sold: Series[pd.Int64Dtype] = pa.Field(gt=0)

    class Config:
        strict = True
        coerce = False


class Customer(pa.DataFrameModel):
    """Gold: one row per customer."""

    customer_id: Series[pd.StringDtype] = pa.Field(unique=True, str_matches=r"^\d+$")
    favourite_product: Series[pd.StringDtype] = pa.Field()
    longest_streak: Series[pd.Int64Dtype] = pa.Field(ge=1)

    class Config:
        strict = True
        coerce = False
