"""Pandera models of the TM daily check-ins."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

SOURCE_COLUMNS = ("user", "timestamp", "hours", "project")


class DailyCheckin(pa.DataFrameModel):
    """A check-in as it loads into ``tm.daily_checkins``: every rule of the source, typed."""

    username: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    project: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    hours: Series[float] = pa.Field(nullable=False, ge=0, le=24)
    timestamp: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs={"unit": "us", "tz": "UTC"})

    class Config:
        strict = True
        coerce = False
