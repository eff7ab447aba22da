"""Exact parsing of the text values every dataset shares: whole numbers and ``YYYY-MM-DD`` dates.

Pure and vectorised; what does not parse becomes null, so that validation reports it with the raw value. Both are
strict on purpose: a value is loaded as written or not at all, never coerced (``1.0``, ``1e3`` and ``+1`` are not
whole numbers; ``2019-2-3`` is not ``YYYY-MM-DD``).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# At most 18 significant digits: every such number fits a PostgreSQL bigint, so nothing overflows at the load.
WHOLE = r"-?0*[0-9]{1,18}"
ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"


def whole_numbers(values: pd.Series) -> pd.Series:
    """Decimal digits (an optional ``-``, leading zeros, surrounding spaces) → ``Int64``, exactly: no float detour,
    so an id past 2**53 keeps its last digit. Anything else → null."""
    text = values.astype("str").str.strip()
    ok = text.str.fullmatch(WHOLE).fillna(False).astype(bool)
    digits = pa.array(text.where(ok, None), type=pa.string(), from_pandas=True)
    numbers = pc.cast(digits, pa.int64())
    return numbers.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get).set_axis(values.index)


def iso_dates(values: pd.Series) -> pd.Series:
    """``YYYY-MM-DD`` exactly (a real calendar day) → ``datetime.date``; anything else → None (in a nullable
    column, validation tells an empty value from an unparseable one by the raw text)."""
    text = values.astype("str").str.strip()
    shaped = text.where(text.str.fullmatch(ISO_DATE).fillna(False).astype(bool))
    parsed = pd.to_datetime(shaped, format="%Y-%m-%d", errors="coerce")
    return parsed.dt.date.astype(object).where(parsed.notna(), None)
