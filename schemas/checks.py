"""Vectorised checks that several models share: what the warehouse's column types can hold without loss.

A value past these would otherwise fail the whole load at the COPY (PostgreSQL refuses it) or be changed on the
way in (``numeric(p, 2)`` rounds a third decimal away): instead its row fails validation, with the column and check.
"""

from __future__ import annotations

import pandas as pd

INT4_MAX = 2_147_483_647  # the largest PostgreSQL ``integer``


def no_nul(values: pd.Series) -> pd.Series:
    """PostgreSQL text cannot hold a NUL character."""
    return ~values.astype("str").str.contains("\x00", regex=False).fillna(False).astype(bool)


def two_decimals(values: pd.Series) -> pd.Series:
    """At most two decimals, as ``numeric(p, 2)`` keeps them (float noise of the parse tolerated, nothing more)."""
    cents = values * 100
    return (cents - cents.round()).abs() <= 1e-6 + cents.abs() * 1e-15
