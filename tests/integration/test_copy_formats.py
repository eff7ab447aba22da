"""Binary COPY (sluice.pgbinary) stores exactly what CSV COPY stores, for every type it encodes."""

from __future__ import annotations

import json
import uuid
from datetime import date, time
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from sluice import pgbinary
from sluice.adapters.warehouse import copy_frames, get_engine, qualified, raw_connection

DDL = """
    k bigint, t text, v varchar(20), i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
    n52 numeric(5, 2), n12 numeric(14, 4), nn numeric, b boolean, d date, ts timestamp, tz timestamptz, u uuid,
    tm time, js jsonb
"""
COLUMNS = ["k", "t", "v", "i2", "i4", "i8", "f4", "f8", "n52", "n12", "nn", "b", "d", "ts", "tz", "u"]


def awkward_frame() -> pd.DataFrame:
    """Nulls in every column, unicode, empty text, negatives, rounding edges, dates around 2000."""
    n = 9
    ids = [uuid.UUID(int=i * 7919) for i in range(n)]
    frame = pd.DataFrame(
        {
            "k": np.arange(n, dtype="int64"),
            "t": [
                "plain",
                "",
                None,
                "ünïcødé ✓",
                'quote " comma , newline\n',
                "a" * 300,
                "\\N",
                "tab\t",
                "x",
            ],
            "v": ["a", None, "", "b", "c", "d", "e", "f", "g"],
            "i2": pd.array([0, -1, 32767, -32768, None, 5, 6, 7, 8], dtype="Int64"),
            "i4": [1.0, 2.0, np.nan, -4.0, 2_147_483_647.0, 0.0, 7.0, 8.0, 9.0],
            "i8": np.array([0, -(2**62), 2**62, 1, 2, 3, 4, 5, 6], dtype="int64"),
            "f4": [1.5, np.nan, -0.25, 3.0, 0.0, 1e10, -1e-3, 2.0, 7.75],
            "f8": [0.1, 1e300, -1e-300, np.nan, 123456.789, -0.0, 2.5, 3.25, 1 / 3],
            "n52": [1.005, 2.675, -0.125, 0.0, np.nan, 999.994, -12.345, 24.0, 0.5],
            "n12": [1.0005, -12345678.1234, 0.0004, np.nan, 9999999999.9999, 0.0001, 42.0, -0.5, 7.1235],
            "nn": [1.1, np.nan, -3.14159265, 0.0, 1234567.0, 1e-7, 100.0, -0.001, 5.0],
            "b": pd.array([True, False, None, True, False, True, False, True, None], dtype="boolean"),
            "d": [date(2000, 1, 1), date(1999, 12, 31), None, date(1970, 1, 1), date(2038, 1, 19)] * 1
            + [date(2024, 2, 29), date(1900, 3, 1), date(2100, 12, 31), date(2019, 9, 26)],
            "ts": pd.to_datetime(
                [
                    "2000-01-01 00:00:00",
                    "1999-12-31 23:59:59.999999",
                    None,
                    "1970-01-01",
                    "2019-09-26 14:47:36.0429",
                    "2100-01-01",
                    "1900-06-15 12:00",
                    "2024-02-29 23:59",
                    "2019-01-01",
                ],
                format="ISO8601",
            ),
            "tz": pd.to_datetime(
                [
                    "2018-11-26 14:47:36.0429+00:00",
                    "2019-09-27 00:00+03:00",
                    None,
                    "1999-12-31 23:00-05:00",
                    "2000-01-01 00:00+00:00",
                    "2019-09-26 00:00+00:00",
                    "1969-07-20 20:17+00:00",
                    "2038-01-19 03:14:07+00:00",
                    "2021-03-28 01:30+01:00",
                ],
                utc=True,
                format="ISO8601",
            ),
            "u": [str(u) for u in ids[:-1]] + [None],
        }
    )
    return frame


def load_both(frame: pd.DataFrame) -> tuple[list[tuple], list[tuple]]:
    engine = get_engine()
    with engine.begin() as conn:
        for name in ("copy_bin", "copy_csv"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
            conn.execute(sa.text(f"CREATE TABLE {name} ({DDL})"))
    with engine.begin() as conn:
        copy_frames(conn, "copy_bin", list(frame.columns), [frame], binary=True)
        copy_frames(conn, "copy_csv", list(frame.columns), [frame], binary=False)
    with engine.connect() as conn:
        columns = ", ".join(frame.columns)
        return tuple(
            conn.execute(sa.text(f"SELECT {columns} FROM {name} ORDER BY k")).all()
            for name in ("copy_bin", "copy_csv")
        )


def binary_payload(frame: pd.DataFrame, table: str) -> bytes | None:
    with get_engine().begin() as conn, raw_connection(conn) as cursor:
        # made here too: a test may run first on its xdist worker, before any load_both made the table
        conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {table} ({DDL})"))
        types = pgbinary.column_types(
            cursor, qualified(table).as_string(cursor.connection), list(frame.columns)
        )
        return pgbinary.encode(frame, types)


@pytest.mark.usefixtures("sluice_env")
def test_binary_and_csv_copy_store_the_same_values() -> None:
    frame = awkward_frame()
    binary, text = load_both(frame)
    assert binary_payload(frame, "copy_bin") is not None  # the binary path was really taken
    assert binary == text
    by_key = {row[0]: row for row in binary}
    assert (str(by_key[0][8]), str(by_key[1][8])) == ("1.01", "2.68")  # rounded as PostgreSQL rounds text
    assert str(by_key[6][8]) == "-12.35"  # half away from zero, as for text
    assert by_key[2][1] is None and by_key[1][1] == ""  # NULL and empty text stay distinct


@pytest.mark.usefixtures("sluice_env")
def test_binary_numeric_rounds_like_text_on_many_values() -> None:
    rng = np.random.default_rng(8)
    n = 20_000
    cents = rng.integers(-99_999, 99_999, n)
    frame = pd.DataFrame(
        {
            "k": np.arange(n, dtype="int64"),
            # two to six decimals: half-way cases (x.xx5) and float noise both appear
            "n52": np.round(cents / 100 + rng.integers(0, 10, n) / 1000 + rng.integers(0, 10, n) / 1e6, 6),
            "n12": np.round(rng.normal(0, 1e6, n), rng.integers(0, 7)),
            "nn": np.round(rng.normal(0, 1e3, n), 3),
            "f8": rng.normal(0, 1e9, n),
            "tz": pd.Timestamp("2019-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 10**15, n), unit="us"),
        }
    )
    frame = frame[frame["n52"].abs() < 999.99]
    binary, text = load_both(frame)
    assert binary_payload(frame, "copy_bin") is not None
    assert len(binary) == len(frame) and binary == text
    noisy = frame.assign(nn=rng.normal(0, 1e3, len(frame)))  # 17 significant digits: sent as CSV
    assert binary_payload(noisy, "copy_bin") is None
    binary, text = load_both(noisy)
    assert len(binary) == len(frame) and binary == text


@pytest.mark.usefixtures("sluice_env")
def test_types_without_an_encoder_fall_back_to_csv() -> None:
    objects = pd.DataFrame({"k": [1, 2], "nn": [None, Decimal("1.5")], "t": [1, 2]}, dtype=object)
    digits = pd.DataFrame({"k": [1, 2], "nn": [-3.14159265358979, 0.1 + 0.2]})  # beyond a chunk's 8 decimals
    assert binary_payload(objects, "copy_bin") is None and binary_payload(digits, "copy_bin") is None
    binary, text = load_both(objects)
    assert binary == text == [(1, None, "1"), (2, Decimal("1.5"), "2")]
    binary, text = load_both(digits)
    assert binary == text == [(1, Decimal("-3.14159265358979")), (2, Decimal("0.30000000000000004"))]


@pytest.mark.usefixtures("sluice_env")
def test_integers_keep_every_digit_and_never_wrap() -> None:
    import psycopg2.errors

    big = pd.DataFrame(
        {"k": pd.array([2**62 + 1, None], dtype="Int64"), "i2": pd.array([1, None], dtype="Int64")}
    )
    assert binary_payload(big, "copy_bin") is not None
    binary, text = load_both(big)
    assert binary == text == [(2**62 + 1, 1), (None, None)]  # no float detour: 2**62 + 1 stays odd

    for column, value in (("i2", 40_000), ("i4", 2**31), ("f4", 1e39)):
        wide = pd.DataFrame({"k": [1], column: [value]})
        assert binary_payload(wide, "copy_bin") is None  # sent as CSV: PostgreSQL says out of range
        with pytest.raises(psycopg2.errors.NumericValueOutOfRange):
            load_both(wide)


@pytest.mark.usefixtures("sluice_env")
def test_time_of_day_goes_binary_and_stores_what_csv_stores() -> None:
    times = [time(0, 0), time(23, 59, 59, 999_999), None, time(12, 34, 56, 789), time(0, 0, 0, 1)]
    frame = pd.DataFrame({"k": range(len(times)), "tm": pd.Series(times, dtype=object)})
    assert binary_payload(frame, "copy_bin") is not None  # before: no time encoder, the chunk went as CSV
    binary, text = load_both(frame)
    assert binary == text == list(enumerate(times))


@pytest.mark.usefixtures("sluice_env")
def test_decimals_go_binary_into_a_declared_scale_and_round_like_csv() -> None:
    n52 = ["1.005", "-12.345", None, "999.99", "0", "1E+2", "0.1", "-0.005", "2.675"]
    n12 = ["1.0005", "-12345678.1234", "0.00001", None, "9999999999.9999", "7", "-0.5", "1E+3", "42.12345"]
    frame = pd.DataFrame(
        {
            "k": range(len(n52)),
            "n52": pd.Series([Decimal(v) if v else None for v in n52], dtype=object),
            "n12": pd.Series([Decimal(v) if v else None for v in n12], dtype=object),
        }
    )
    assert binary_payload(frame, "copy_bin") is not None  # before: Decimals always went as CSV
    binary, text = load_both(frame)
    assert binary == text
    assert [str(r[1]) for r in binary[:3]] == ["1.01", "-12.35", "None"]  # half away from zero, as for text
    unconstrained = pd.DataFrame({"k": [1], "nn": pd.Series([Decimal("1.50")], dtype=object)})
    assert binary_payload(unconstrained, "copy_bin") is None  # keeps each value's own scale: CSV


@pytest.mark.usefixtures("sluice_env")
def test_jsonb_goes_binary_and_stores_what_csv_stores() -> None:
    documents = [{"a": 1, "b": "x"}, None, {"ü": [1, 2.5, None], "q": 'say "hi"\n'}, {}]
    frame = pd.DataFrame(
        {
            "k": range(len(documents)),
            "js": pd.Series([None if d is None else json.dumps(d) for d in documents], dtype=object),
        }
    )
    assert binary_payload(frame, "copy_bin") is not None
    binary, text = load_both(frame)
    assert binary == text == list(enumerate(documents))
