"""Pandera models of the Sertis transactions (silver) and the per-customer gold table."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine
from pandera.typing import Series

from schemas.checks import INT4_MAX, no_nul

SOURCE_COLUMNS = ("transactionId", "custId", "transactionDate", "productSold", "unitsSold")


class Transaction(pa.DataFrameModel):
    """A silver transaction line: typed, ids kept as text (``custId`` is zero-padded and stays so)."""

    transaction_id: Series[pd.StringDtype] = pa.Field(str_length={"min_value": 1, "max_value": 100})
    # [0-9], not \d: \d also matches other scripts' digits (Arabic-Indic "١٢٣")
    customer_id: Series[pd.StringDtype] = pa.Field(str_matches=r"^[0-9]+$", description="zero-padded digits")
    transaction_date: Series[pandas_engine.Date] = pa.Field()
    product_sold: Series[pd.StringDtype] = pa.Field(str_matches=r"^[A-Za-z0-9_-]{1,50}$")
    units_sold: Series[pd.Int64Dtype] = pa.Field(gt=0, le=INT4_MAX)

    @pa.check("transaction_id", name="no NUL character")
    def _no_nul(cls, values: pd.Series) -> pd.Series:
        return no_nul(values)

    class Config:
        strict = True
        coerce = False


class Customer(pa.DataFrameModel):
    """Gold: one row per customer."""

    customer_id: Series[pd.StringDtype] = pa.Field(unique=True, str_matches=r"^[0-9]+$")
    favourite_product: Series[pd.StringDtype] = pa.Field()
    longest_streak: Series[pd.Int64Dtype] = pa.Field(ge=1)

    class Config:
        strict = True
        coerce = False
