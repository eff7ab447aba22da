"""Values a sloppy producer writes, through the real transforms and models (no I/O): each loads exactly as written
or fails its row with the column and the check; none is coerced, rounded, shifted or crashes the pass."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest
import sqlalchemy as sa
from pandera.typing import Series

from sluice import ingest
from sluice.datasets import get_dataset
from sluice.registry import Dataset
from sluice.transforms.values import whole_numbers


def checked(dataset: Dataset, rows: list[list[str]]) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """One chunk as the pass builds it (1-based record numbers, the raw text beside), validated."""
    raw = pd.DataFrame(rows, columns=list(dataset.source_columns), dtype="str")
    raw.index = pd.RangeIndex(1, len(raw) + 1)
    frame = dataset.transform(raw).assign(**{ingest.ROW: raw.index.to_numpy()})
    frame.index = pd.RangeIndex(len(frame))
    for column in dataset.source_columns:
        frame[ingest.RAW_PREFIX + column] = raw[column].array
    return ingest.validate_chunk(frame, dataset)


def failed(failures: list[dict[str, object]]) -> set[tuple[object, object]]:
    return {(f["row"], f["column"]) for f in failures}


ORDER = ["7", "5", "2022-07-13", "24", "1.50", "2", "3.00"]


def order(**changes: str) -> list[str]:
    columns = list(get_dataset("orders").source_columns)
    row = list(ORDER)
    for name, value in changes.items():
        row[columns.index(name)] = value
    return row


def test_ids_past_2_53_keep_every_digit_beside_a_bad_value() -> None:
    good, failures = checked(get_dataset("orders"), [order(order_id="9007199254740993"), order(order_id="x")])
    assert good["order_id"].tolist() == [9007199254740993]  # a float detour would make it ...992
    assert failed(failures) == {(2, "order_id")}


@pytest.mark.parametrize(
    "value", ["99999999999999999999", "1e19", "9223372036854775808", "1.5", "1.01", "1e3", "++1", "١٢"]
)
def test_an_id_that_is_not_plain_digits_fails_its_row_and_never_crashes(value: str) -> None:
    good, failures = checked(get_dataset("orders"), [order(order_id=value), order(order_id="8")])
    assert good["order_id"].tolist() == [8]
    assert failed(failures) == {(1, "order_id")}


@pytest.mark.parametrize(("value", "expected"), [("+7", 7), ("007", 7), ("7.0", 7), (" 7.00 ", 7)])
def test_a_whole_number_written_with_a_sign_or_a_zero_fraction_loads_as_written(
    value: str, expected: int
) -> None:
    good, failures = checked(get_dataset("orders"), [order(order_id=value)])
    assert failures == [] and good["order_id"].tolist() == [expected]


@pytest.mark.parametrize(
    ("column", "value", "check"),
    [
        ("quantity", "3000000000", "less_than_or_equal_to(2147483647)"),  # past a PostgreSQL integer
        ("unit_price", "1.005", "at most 2 decimals (to the cent)"),  # numeric(14, 2) would store 1.01
        ("unit_price", "10000000000000", "less_than(1000000000000.0)"),  # numeric(14, 2) overflows
        ("order_date", "2022-7-13", "required (missing or unparseable)"),  # not YYYY-MM-DD
        # a year the generated dim_dates cannot hold: staged, it failed every analytics run that creates dim_dates
        ("order_date", "1850-01-01", "a day dim_dates can hold (1900-01-01 to 2200-12-31)"),
        ("order_date", "2250-01-01", "a day dim_dates can hold (1900-01-01 to 2200-12-31)"),
    ],
)
def test_order_values_the_warehouse_cannot_hold_as_written_fail_their_row(
    column: str, value: str, check: str
) -> None:
    good, failures = checked(get_dataset("orders"), [order(**{column: value}), order(order_id="8")])
    assert good["order_id"].tolist() == [8]
    assert (1, column, check) in {(f["row"], f["column"], f["check"]) for f in failures}


def test_checkin_text_with_nul_bytes_fails_its_row_and_hours_keep_their_decimals_for_the_column() -> None:
    dataset = get_dataset("dailycheckins")
    stamp = "2018-12-20 00:00:00 UTC"
    good, failures = checked(
        dataset,
        [
            ["ned", stamp, "0.333", "p"],  # numeric(5, 2) stores 0.33, as the Glue job it replaces rounded
            ["ned\x00x", stamp, "1", "p"],
            ["ned", stamp, "1.25", "p\x00"],
            ["a", stamp, "0.1", "p"],
        ],
    )
    assert good["hours"].tolist() == [0.333, 0.1]
    assert {(f["row"], f["column"], f["check"]) for f in failures} == {
        (2, "user", "no NUL character"),
        (3, "project", "no NUL character"),
    }


def test_transactions_integers_digits_and_text_as_the_warehouse_keeps_them() -> None:
    dataset = get_dataset("transactions")
    row = ["20110111-0023586", "0023586", "2011-01-11", "DETA800", "3"]
    rows = [
        row,
        [*row[:4], "3.5"],  # not a whole number
        [*row[:4], "5000000000"],  # past a PostgreSQL integer
        [row[0], "١٢٣", *row[2:]],  # Arabic-Indic digits are not the zero-padded id
        ["A\x00", *row[1:]],
        [row[0], row[1], "2011-1-11", *row[3:]],
    ]
    good, failures = checked(dataset, rows)
    assert good["customer_id"].tolist() == ["0023586"] and good["units_sold"].tolist() == [3]
    assert failed(failures) == {
        (2, "unitsSold"),
        (3, "unitsSold"),
        (4, "custId"),
        (5, "transactionId"),
        (6, "transactionDate"),
    }


def test_shipments_none_delivered_validate_and_a_bad_date_is_not_an_empty_one() -> None:
    dataset = get_dataset("shipment_deliveries")
    good, failures = checked(
        dataset,
        [
            ["1", "1", "2022-01-02", ""],
            ["2", "2", "", ""],
            ["3", "3", "2019-02-30", ""],
            ["4", "4", "", "2022-1-3"],
        ],
    )
    assert good["shipment_id"].tolist() == [1, 2]  # no row delivered: the order check once crashed the pass
    assert {(f["row"], f["column"], f["check"]) for f in failures} == {
        (3, "shipment_date", ingest.UNPARSED),
        (4, "delivery_date", ingest.UNPARSED),
    }


@pytest.mark.parametrize(
    ("value", "loads"),
    [
        ("2019-11-26 14:47:60 UTC", None),  # rolled over to 14:48:00
        ("2019-11-26 14:47:61.5 UTC", None),
        ("2019-11-26 14:47:36.0429123456 UTC", None),  # cut to microseconds
        ("2019-11-26 14:47:36.0429120000 UTC", "2019-11-26 14:47:36.042912+00:00"),  # zeros lose nothing
        ("2019-11-26 14:47:36.042912 UTC", "2019-11-26 14:47:36.042912+00:00"),
        ("2019-11-26 14:47:59 UTC", "2019-11-26 14:47:59+00:00"),
    ],
)
def test_a_check_in_time_loads_as_written_or_fails_never_rolled_over_or_cut(
    value: str, loads: str | None
) -> None:
    """pandas' parser took a 60th or 61st second (rolled over to the next minute) and nanoseconds (cut to the
    column's microseconds): both coerced what was written."""
    row = ["ned", value, "1", "p"]
    good, failures = checked(get_dataset("dailycheckins"), [row])
    if loads is None:
        assert failed(failures) == {(1, "timestamp")} and good.empty
    else:
        assert failures == [] and str(good["timestamp"].iloc[0]) == loads


def test_a_new_datasets_values_its_column_types_cannot_hold_fail_their_row_whatever_its_model_says() -> None:
    """A dataset written from README's template, its model without the shipped models' bounds: a NUL in text, an
    integer past ``integer``, a number past its ``numeric(6, 2)`` and text past its ``varchar(5)`` each failed the
    whole file at the COPY ("invalid byte sequence for encoding UTF8: 0x00", no row or column named). Each now fails
    its row, with the check, and the rest loads."""

    class Loose(pa.DataFrameModel):
        name: Series[str] = pa.Field()
        code: Series[str] = pa.Field()
        units: Series[pd.Int64Dtype] = pa.Field()
        amount: Series[float] = pa.Field()

    table = sa.Table(
        "loose", sa.MetaData(), sa.Column("name", sa.Text), sa.Column("code", sa.String(5)),
        sa.Column("units", sa.Integer), sa.Column("amount", sa.Numeric(6, 2)), schema="scratch",
    )  # fmt: skip

    def transform(raw: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "name": raw["name"],
                "code": raw["code"],
                "units": whole_numbers(raw["units"]),
                "amount": pd.to_numeric(raw["amount"], errors="coerce"),
            }
        )

    dataset = Dataset(
        name="loose", description="", patterns=("loose*.csv",), source_columns=("name", "code", "units", "amount"),
        model=Loose, transform=transform, table=table,
    )  # fmt: skip
    good, failures = checked(
        dataset,
        [
            ["fine", "ab", "7", "9999.99"],
            ["nul\x00", "ab", "7", "1"],
            ["long", "abcdef", "7", "1"],
            ["big", "ab", "3000000000", "1"],
            ["low", "ab", "-3000000000", "1"],
            ["dear", "ab", "7", "10000"],
            ["owed", "ab", "7", "-10000.5"],
            ["rounds", "ab", "7", "9999.995"],  # under 10^4, but PostgreSQL rounds it to 10000.00 first
            ["edge", "ab", "7", "-9999.994"],
        ],
    )
    assert good["name"].tolist() == ["fine", "edge"]
    fits = "fits numeric(6, 2) (less than 1e4 once rounded)"
    assert sorted((f["row"], f["column"], f["check"]) for f in failures) == [
        (2, "name", "no NUL character"),
        (3, "code", "str_length(None, 5)"),
        (4, "units", "less_than_or_equal_to(2147483647)"),
        (5, "units", "greater_than_or_equal_to(-2147483648)"),
        (6, "amount", fits),
        (7, "amount", fits),
        (8, "amount", fits),
    ]


def test_a_cell_the_model_fails_is_told_once_though_its_column_type_would_fail_it_too() -> None:
    """``custId`` with a NUL: the model's digits-only rule and the column type's NUL rule both failed it, two lines
    for one cell in the quarantine and in a hard run's error."""
    transactions = get_dataset("transactions")
    good, failures = checked(transactions, [["t9", "00\x0009", "2011-01-28", "DETA800", "1"]])
    assert good.empty
    assert [(f["row"], f["column"]) for f in failures] == [(1, "custId")], failures
