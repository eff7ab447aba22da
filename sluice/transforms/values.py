"""Exact parsing of the text values every dataset shares: whole numbers and ``YYYY-MM-DD`` dates.

Pure and vectorised; what does not parse becomes null, so that validation reports it with the raw value. A value
loads with exactly the value written or not at all: ``+7``, ``007`` and ``7.0`` are 7 (producers write integers as
floats: Totesys' own exports do), ``7.5``, ``1e3`` and ``2019-2-3`` fail their row.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# At most 18 significant digits: every such number fits a PostgreSQL bigint, so nothing overflows at the load. A
# fraction of zeros only (``7.0``) changes nothing and is dropped before the cast.
WHOLE = r"[-+]?0*[0-9]{1,18}(\.0*)?"
ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"


def whole_numbers(values: pd.Series) -> pd.Series:
    """Decimal digits (an optional sign, leading zeros, a fraction of zeros, surrounding spaces) → ``Int64``,
    exactly: no float detour, so an id past 2**53 keeps its last digit. Anything else → null."""
    text = values.astype("str").str.strip()
    ok = text.str.fullmatch(WHOLE).fillna(False).astype(bool)
    text = text.where(ok).str.replace(r"\.0*$", "", regex=True).str.removeprefix("+")
    digits = pa.array(text, type=pa.string(), from_pandas=True)
    numbers = pc.cast(digits, pa.int64())
    return numbers.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get).set_axis(values.index)


def iso_dates(values: pd.Series) -> pd.Series:
    """``YYYY-MM-DD`` exactly (a real calendar day) → ``datetime.date``; anything else → None (in a nullable
    column, validation tells an empty value from an unparseable one by the raw text)."""
    text = values.astype("str").str.strip()
    shaped = text.where(text.str.fullmatch(ISO_DATE).fillna(False).astype(bool))
    parsed = pd.to_datetime(shaped, format="%Y-%m-%d", errors="coerce")
    return parsed.dt.date.astype(object).where(parsed.notna(), None)
