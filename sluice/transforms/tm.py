"""TM daily check-ins: pure, vectorised transforms (no I/O, no Prefect)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Genitive month names, as in "26 сентября 2019 00:00".
RUSSIAN_MONTHS = {
    "января": 1,
    "февраля": 2,
    "марта": 3,
    "апреля": 4,
    "мая": 5,
    "июня": 6,
    "июля": 7,
    "августа": 8,
    "сентября": 9,
    "октября": 10,
    "ноября": 11,
    "декабря": 12,
}

_RU = r"^(?P<day>\d{1,2}) (?P<month>[а-яё]+) (?P<year>\d{4}) (?P<hour>\d{1,2}):(?P<minute>\d{2})$"
_NAIVE = "datetime64[us]"
#: A second past 59, or a fraction finer than microseconds that is not zeros (``.0429120000`` loses nothing)
_COERCED = r":[6-9]\d(?:\.|$)|\.\d{6}\d*[1-9]"
#: A fraction of more than six digits: the first six kept
_FINER = r"(\.\d{6})\d+$"


def _strict(text: pd.Series, *formats: str) -> pd.Series:
    """Parse with the first exact format that fits each value; NaT where none does.

    Zone-free formats only: pandas' strptime path is ~15x slower with a literal zone or ``utc=True``.
    """
    result = pd.to_datetime(text, format=formats[0], errors="coerce").astype(_NAIVE)
    for fmt in formats[1:]:
        missing = result.isna()
        if not missing.any():
            break
        result[missing] = pd.to_datetime(text[missing], format=fmt, errors="coerce").astype(_NAIVE)
    return result


def parse_checkin_timestamps(values: pd.Series) -> pd.Series:
    """Parse the three check-in timestamp formats to UTC; anything else becomes NaT.

    - ``2018-11-26 14:47:36.0429 UTC``: ISO, optional fraction, explicitly UTC;
    - ``09/27/2019 12:00 AM``: US month/day/year, 12-hour clock;
    - ``26 сентября 2019 00:00``: day, Russian genitive month name, year, 24-hour clock.

    The last two carry no zone; they are taken as UTC, which is what the TM source system records.
    Rows are routed by a cheap look at fixed character positions, then parsed with exact formats
    (vectorised: about 0.5 s per million rows), so a value that merely looks right still fails if invalid.
    """
    text = values.astype("str").str.strip().reset_index(drop=True)
    # Work on plain numpy arrays: label-based assignment into a Series costs more than the parsing.
    result = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[us]")

    iso = ((text.str.slice(4, 5) == "-") & text.str.endswith(" UTC")).to_numpy(dtype=bool)
    if iso.any():
        bare = text[iso].str.slice(0, -4)  # the " UTC" suffix, checked above
        written = pa.array(bare, type=pa.string(), from_pandas=True)
        # Parsed to the microsecond: one value with a finer fraction (even zeros) made pandas parse the whole chunk
        # in nanoseconds, whose range ends in 2262, so a valid 2300 or 9999 stamp beside it failed its row, and
        # the same file loaded differently as it was cut into chunks. A finer fraction that is not zeros fails below.
        fine = pc.match_substring_regex(written, _FINER).to_numpy(zero_copy_only=False)
        if fine.any():
            bare = bare.copy()
            bare[fine] = bare[fine].str.replace(_FINER, r"\1", regex=True)
        result[iso] = _naive(_strict(bare, "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"))
        # pandas takes a 60th or 61st second (rolled over to the next minute) and nanoseconds (cut to the
        # column's microseconds): what was written would not load as written, so it does not load
        coerced = pc.match_substring_regex(written, _COERCED)
        result[np.flatnonzero(iso)[coerced.to_numpy(zero_copy_only=False)]] = np.datetime64("NaT")

    # 09/27/2019 or 9/27/2019: an en-US export pads neither month, day nor hour (M/d/yyyy h:mm tt)
    us = ((text.str.slice(2, 3) == "/") | (text.str.slice(1, 2) == "/")).to_numpy(dtype=bool) & ~iso
    if us.any():
        result[us] = _naive(_strict(text[us], "%m/%d/%Y %I:%M %p"))

    rest = ~iso & ~us
    if rest.any():
        parts = _extract(text[rest].str.lower(), _RU)
        ru = parts["month"].isin(RUSSIAN_MONTHS.keys())
        if ru.any():
            p = parts[ru]
            iso_text = (
                p["year"]
                + "-"
                + p["month"].map(RUSSIAN_MONTHS).astype("int64").astype("str").str.zfill(2)
                + "-"
                + p["day"].str.zfill(2)
                + " "
                + p["hour"]
                + ":"
                + p["minute"]
            )
            result[p.index.to_numpy()] = _naive(_strict(iso_text, "%Y-%m-%d %H:%M"))
    return pd.Series(result, index=values.index).dt.tz_localize("UTC")


def _extract(text: pd.Series, pattern: str) -> pd.DataFrame:
    """``Series.str.extract`` through Arrow's RE2 kernel (pandas' own path is per value: 5x slower)."""
    groups = pc.extract_regex(pa.array(text, type=pa.string(), from_pandas=True), pattern)
    if isinstance(groups, pa.ChunkedArray):
        groups = groups.combine_chunks()
    return pd.DataFrame(
        {name: groups.field(name).to_pandas() for name in ("day", "month", "year", "hour", "minute")}
    ).set_axis(text.index)


def _naive(parsed: pd.Series) -> np.ndarray:
    return parsed.to_numpy(dtype="datetime64[us]")


def _text(values: pd.Series) -> pd.Series:
    """Trimmed text; blank becomes null (a blank name is no name)."""
    text = values.astype("str").str.strip()
    return text.where(text != "", None)


def _number(values: pd.Series) -> pd.Series:
    """Decimal text → float; blank, text or padded-with-garbage values → NaN (checked by validation).

    Arrow's cast parses a clean chunk 8x faster than ``to_numeric``; it refuses the whole chunk on any value
    that is not a plain number (and a non-finite result is not trusted), and then ``to_numeric`` decides.
    """
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        try:
            fast = pc.cast(pa.array(values.array), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            fast = None
        if fast is not None and fast.null_count == 0 and pc.all(pc.is_finite(fast)).as_py() is not False:
            return pd.Series(fast.to_numpy(), index=values.index, dtype="float64")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    retry = numbers.isna() & (values.astype("str").str.strip() != "")
    if retry.any():  # padded values such as " 1.5 ": rare, so strip only those
        numbers[retry] = pd.to_numeric(values[retry].astype("str").str.strip(), errors="coerce")
    return numbers


def transform_checkins(raw: pd.DataFrame) -> pd.DataFrame:
    """Source ``user,timestamp,hours,project`` (all text) → typed ``tm.daily_checkins`` columns.

    Total on any input: values that cannot be parsed become null and fail validation with the raw value.
    """
    return pd.DataFrame(
        {
            "username": _text(raw["user"]),
            "project": _text(raw["project"]),
            "hours": _number(raw["hours"]),
            "timestamp": parse_checkin_timestamps(raw["timestamp"]),
        },
        index=raw.index,
    )
