"""TM daily check-ins: pure, vectorised transforms (no I/O, no Prefect)."""

from __future__ import annotations

import pandas as pd

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

_ISO = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d{1,9})? UTC$"
_US = r"^\d{2}/\d{2}/\d{4} \d{1,2}:\d{2} [AP]M$"
_RU = r"^(?P<day>\d{1,2}) (?P<month>[а-яё]+) (?P<year>\d{4}) (?P<hour>\d{2}):(?P<minute>\d{2})$"


def parse_checkin_timestamps(values: pd.Series) -> pd.Series:
    """Parse the three check-in timestamp formats to UTC; anything else becomes NaT.

    - ``2018-11-26 14:47:36.0429 UTC``: ISO, optional fraction, explicitly UTC;
    - ``09/27/2019 12:00 AM``: US month/day/year, 12-hour clock;
    - ``26 сентября 2019 00:00``: day, Russian genitive month name, year, 24-hour clock.

    The last two carry no zone; they are taken as UTC, which is what the TM source system records.
    """
    text = values.astype("str").str.strip()
    result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")

    iso = text.str.match(_ISO, na=False)
    if iso.any():
        result[iso] = pd.to_datetime(
            text[iso].str.removesuffix(" UTC"), format="ISO8601", utc=True, errors="coerce"
        ).astype("datetime64[us, UTC]")

    us = text.str.match(_US, na=False)
    if us.any():
        result[us] = pd.to_datetime(text[us], format="%m/%d/%Y %I:%M %p", utc=True, errors="coerce").astype(
            "datetime64[us, UTC]"
        )

    parts = text.str.lower().str.extract(_RU)
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
        result[ru] = pd.to_datetime(iso_text, format="%Y-%m-%d %H:%M", utc=True, errors="coerce").astype(
            "datetime64[us, UTC]"
        )
    return result


def _text(values: pd.Series) -> pd.Series:
    """Trimmed text; blank becomes null (a blank name is no name)."""
    text = values.astype("str").str.strip()
    return text.where(text != "", None)


def transform_checkins(raw: pd.DataFrame) -> pd.DataFrame:
    """Source ``user,timestamp,hours,project`` (all text) → typed ``tm.daily_checkins`` columns.

    Total on any input: values that cannot be parsed become null and fail validation with the raw value.
    """
    return pd.DataFrame(
        {
            "username": _text(raw["user"]),
            "project": _text(raw["project"]),
            "hours": pd.to_numeric(raw["hours"].astype("str").str.strip(), errors="coerce").astype("float64"),
            "timestamp": parse_checkin_timestamps(raw["timestamp"]),
        },
        index=raw.index,
    )
