"""Pandera models of the TM daily check-ins."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas.checks import no_nul

SOURCE_COLUMNS = ("user", "timestamp", "hours", "project")
MAX_TEXT = 1000


class DailyCheckin(pa.DataFrameModel):
    """A check-in as it loads into ``tm.daily_checkins``: every rule of the source, typed."""

    # The upper bound is a guard, not a source rule: a runaway field (a 50 MB line) is quarantined, not loaded.
    username: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": MAX_TEXT})
    project: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": MAX_TEXT})
    # numeric(5, 2): stored to 2 decimals, rounded, as the Glue job Sluice replaces rounded them (0.333 h is 0.33)
    hours: Series[float] = pa.Field(nullable=False, ge=0, le=24)
    timestamp: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs={"unit": "us", "tz": "UTC"})

    @pa.check("username", "project", name="no NUL character")
    def _no_nul(cls, values: pd.Series) -> pd.Series:
        return no_nul(values)

    class Config:
        strict = True
        coerce = False
