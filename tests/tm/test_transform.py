"""The check-in transform and schema on tiny frames: no database, no Prefect."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest

from schemas.tm import DailyCheckin
from sluice.transforms.tm import parse_checkin_timestamps, transform_checkins


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-11-26 14:47:36.0429 UTC", "2018-11-26T14:47:36.042900+00:00"),
        ("2018-12-20 00:00:00 UTC", "2018-12-20T00:00:00+00:00"),
        ("2019-01-02 03:04:05.123456 UTC", "2019-01-02T03:04:05.123456+00:00"),
        ("09/27/2019 12:00 AM", "2019-09-27T00:00:00+00:00"),
        ("09/27/2019 12:00 PM", "2019-09-27T12:00:00+00:00"),
        ("01/05/2020 1:30 PM", "2020-01-05T13:30:00+00:00"),
        ("26 сентября 2019 00:00", "2019-09-26T00:00:00+00:00"),
        ("1 января 2020 23:59", "2020-01-01T23:59:00+00:00"),
        ("7 мая 2019 08:15", "2019-05-07T08:15:00+00:00"),
        # unpadded, as an en-US export writes them (M/d/yyyy h:mm tt); the month alone was refused
        ("9/27/2019 12:00 AM", "2019-09-27T00:00:00+00:00"),
        ("1/5/2020 1:30 PM", "2020-01-05T13:30:00+00:00"),
        ("1 января 2020 0:05", "2020-01-01T00:05:00+00:00"),
    ],
)
def test_each_format_parses_to_utc(text: str, expected: str) -> None:
    parsed = parse_checkin_timestamps(pd.Series([text]))
    assert parsed.iloc[0] == pd.Timestamp(expected)
    assert str(parsed.dtype) == "datetime64[us, UTC]"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2019-02-30 00:00:00 UTC",
        "13/27/2019 12:00 AM",
        "9/27/19 1:00 AM",
        "/27/2019 1:00 AM",
        "26 septembre 2019 00:00",
        "2019-09-26",
    ],
)
def test_anything_else_is_nat(text: str) -> None:
    assert parse_checkin_timestamps(pd.Series([text])).isna().all()


def test_transform_renames_trims_and_types() -> None:
    raw = pd.DataFrame(
        {
            "user": [" ned ", ""],
            "timestamp": ["2018-12-20 00:00:00 UTC", "x"],
            "hours": ["1.5", "abc"],
            "project": ["bizdev", "  "],
        },
        index=[1, 2],
    )
    out = transform_checkins(raw)
    assert list(out.columns) == ["username", "project", "hours", "timestamp"]
    assert out.loc[1, "username"] == "ned" and out.loc[1, "hours"] == 1.5
    assert out.loc[2].isna().all()  # every unparseable value becomes null, to fail validation


def test_schema_accepts_bounds_and_rejects_each_rule() -> None:
    good = transform_checkins(
        pd.DataFrame(
            {
                "user": ["a", "b"],
                "timestamp": ["2018-12-20 00:00:00 UTC"] * 2,
                "hours": ["0", "24"],
                "project": ["p", "p"],
            }
        )
    )
    DailyCheckin.validate(good)
    bad = transform_checkins(
        pd.DataFrame(
            {
                "user": ["a", "", "c", "d"],
                "timestamp": [
                    "2018-12-20 00:00:00 UTC",
                    "2018-12-20 00:00:00 UTC",
                    "no",
                    "2018-12-20 00:00:00 UTC",
                ],
                "hours": ["24.01", "1", "1", "-0.5"],
                "project": ["p", "p", "p", "p"],
            }
        )
    )
    with pytest.raises(pa.errors.SchemaErrors) as caught:
        DailyCheckin.validate(bad, lazy=True)
    cases = caught.value.failure_cases
    assert sorted(zip(cases["column"], cases["index"].astype(int), strict=True)) == [
        ("hours", 0),
        ("hours", 3),
        ("timestamp", 2),
        ("username", 1),
    ]


@pytest.mark.parametrize("neighbour", ["2018-11-26 14:47:36.1234560 UTC", "2018-11-26 14:47:36.1234561 UTC"])
def test_a_stamp_parses_alike_whatever_its_neighbours_in_the_chunk(neighbour: str) -> None:
    """One value with a fraction finer than microseconds made pandas parse the whole chunk in nanoseconds (range
    1677..2262): a valid 2300 or 9999 stamp beside it failed its row, and loaded when the file was cut otherwise."""
    far = ["2300-01-01 00:00:00.5 UTC", "9999-12-31 23:59:59.999999 UTC", "1600-02-29 12:00:00 UTC"]
    alone = parse_checkin_timestamps(pd.Series(far)).tolist()
    together = parse_checkin_timestamps(pd.Series([neighbour, *far])).tolist()
    assert together[1:] == alone and not any(pd.isna(alone))
    assert str(alone[0]) == "2300-01-01 00:00:00.500000+00:00"
    # the neighbour as written: zeros past the microsecond lose nothing; other digits would be cut, so it fails
    assert pd.isna(together[0]) == neighbour.endswith("1 UTC")
