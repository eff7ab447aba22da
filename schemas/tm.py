"""Pandera models of the TM daily check-ins."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

SOURCE_COLUMNS = ("user", "timestamp", "hours", "project")
MAX_TEXT = 1000


class DailyCheckin(pa.DataFrameModel):
    """A check-in as it loads into ``tm.daily_checkins``: every rule of the source, typed."""

    # The upper bound is a guard, not a source rule: a runaway field (a 50 MB line) is quarantined, not loaded.
    username: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": MAX_TEXT})
    project: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": MAX_TEXT})
    hours: Series[float] = pa.Field(nullable=False, ge=0, le=24)
    timestamp: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs={"unit": "us", "tz": "UTC"})

    class Config:
        strict = True
        coerce = False
