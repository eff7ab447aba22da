"""Unit tests of the Totesys transforms on tiny frames: join keys, the date/time split, versions, lookups."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pandas as pd
import pandera.errors as pe
import pytest

from schemas.totesys import MODELS
from sluice.fakes.totesys import generate
from sluice.transforms import totesys as t

TS = "2022-11-03 14:20:49.962"
LATER = "2023-01-02 09:05:01.5"


def frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype=str)


def address(i: int, line1: str, updated: str = TS) -> dict[str, str]:
    return {
        "address_id": str(i),
        "address_line_1": line1,
        "address_line_2": "",
        "district": "",
        "city": "Leeds",
        "postal_code": "LS1",
        "country": "UK",
        "phone": "0113",
        "created_at": TS,
        "last_updated": updated,
    }


def department(i: int, location: str, updated: str = TS) -> dict[str, str]:
    return {
        "department_id": str(i),
        "department_name": f"Dept {i}",
        "location": location,
        "manager": "M",
        "created_at": TS,
        "last_updated": updated,
    }


def staff(i: int, dept: int, updated: str = TS) -> dict[str, str]:
    return {
        "staff_id": str(i),
        "first_name": "Ana",
        "last_name": "Glover",
        "department_id": str(dept),
        "email_address": f"ana{i}@terrifictotes.com",
        "created_at": TS,
        "last_updated": updated,
    }


def sales_order(i: int, updated: str = TS, units: str = "100") -> dict[str, str]:
    return {
        "sales_order_id": str(i),
        "created_at": TS,
        "last_updated": updated,
        "design_id": "3",
        "staff_id": "1",
        "counterparty_id": "2",
        "units_sold": units,
        "unit_price": "3.945",
        "currency_id": "1",
        "agreed_delivery_date": "2022-11-07",
        "agreed_payment_date": "2022-11-08",
        "agreed_delivery_location_id": "8",
    }


def test_split_timestamp_keeps_milliseconds_and_any_iso_precision() -> None:
    dates, times = t.split_timestamp(pd.Series([TS, LATER, "2024-08-22 09:13:10"]))
    assert dates.tolist() == [dt.date(2022, 11, 3), dt.date(2023, 1, 2), dt.date(2024, 8, 22)]
    assert times.tolist() == [dt.time(14, 20, 49, 962000), dt.time(9, 5, 1, 500000), dt.time(9, 13, 10)]


def test_ids_accept_float_exports_and_empty_as_null() -> None:
    assert t.ids(pd.Series(["2.0", "", "17"], name="x")).tolist() == [2, pd.NA, 17]
    with pytest.raises(ValueError, match=r"2\.5"):
        t.ids(pd.Series(["2.5"], name="x"))


def test_money_is_exact_and_rounded_half_up_to_cents() -> None:
    assert t.decimals(pd.Series(["3.945", "0.1", ""], name="p")).tolist() == [
        Decimal("3.95"),
        Decimal("0.10"),
        None,
    ]


def test_text_dates_parse_and_bad_ones_raise() -> None:
    assert t.dates(pd.Series(["2022-11-07", ""])).tolist() == [dt.date(2022, 11, 7), None]
    with pytest.raises(ValueError):
        t.dates(pd.Series(["07/11/2022"]))


def test_dim_date_uses_iso_weekdays_monday_is_one() -> None:
    out = t.dim_date([dt.date(2024, 1, 1), dt.date(2024, 1, 7), dt.date(2024, 1, 1), None])
    assert out["date_id"].tolist() == [dt.date(2024, 1, 1), dt.date(2024, 1, 7)]
    assert out["day_of_week"].tolist() == [1, 7]
    assert out["day_name"].tolist() == ["Monday", "Sunday"]
    assert out[["year", "month", "day", "quarter"]].iloc[0].tolist() == [2024, 1, 1, 1]
    assert out["month_name"].tolist() == ["January", "January"]
    MODELS["dim_date"].validate(out)


def test_counterparty_takes_its_legal_address_not_another() -> None:
    addresses = frame([address(15, "605 Haskell Trafficway"), address(28, "Elsewhere")])
    parties = frame(
        [
            {
                "counterparty_id": "1",
                "counterparty_legal_name": "Fahey and Sons",
                "legal_address_id": "15",
                "commercial_contact": "x",
                "delivery_contact": "y",
                "created_at": TS,
                "last_updated": TS,
            }
        ]
    )
    out = t.dim_counterparty(parties, addresses)
    assert out.loc[0, "counterparty_legal_address_line_1"] == "605 Haskell Trafficway"
    assert out.loc[0, "counterparty_legal_phone_number"] == "0113"
    assert pd.isna(out.loc[0, "counterparty_legal_address_line2"])
    assert list(out.columns) == list(MODELS["dim_counterparty"].to_schema().columns)
    MODELS["dim_counterparty"].validate(out)


def test_staff_join_department_name_and_location_keeps_the_leds_typo() -> None:
    out = t.dim_staff(frame([staff(1, 4)]), frame([department(4, "Leds"), department(5, "Leeds")]))
    assert out.loc[0, ["department_name", "location"]].tolist() == ["Dept 4", "Leds"]
    MODELS["dim_staff"].validate(out)


def test_staff_change_without_its_department_takes_the_department_loaded_before() -> None:
    batch = {"staff": frame([staff(1, 4, updated=LATER)])}
    before = {"department": frame([department(4, "Leds")]), "staff": frame([staff(1, 4)])}
    out = t.star_schema(batch, before)
    assert list(out) == ["dim_staff"]
    assert out["dim_staff"].loc[0, "location"] == "Leds"


def test_missing_department_anywhere_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match="staff 1: column department_id: '9' is not a department in this batch"
    ):
        t.star_schema({"staff": frame([staff(1, 9)])}, {})


def test_department_change_rebuilds_the_staff_in_it_only() -> None:
    batch = {"department": frame([department(4, "Leeds", updated=LATER)])}
    before = {
        "department": frame([department(4, "Leds"), department(5, "York")]),
        "staff": frame([staff(1, 4), staff(2, 5)]),
    }
    out = t.star_schema(batch, before)
    assert out["dim_staff"]["staff_id"].tolist() == [1]
    assert out["dim_staff"].loc[0, "location"] == "Leeds"


def test_address_change_rebuilds_counterparties_whose_legal_address_it_is() -> None:
    party = {
        "counterparty_id": "1",
        "counterparty_legal_name": "Fahey",
        "legal_address_id": "15",
        "commercial_contact": "",
        "delivery_contact": "",
        "created_at": TS,
        "last_updated": TS,
    }
    batch = {"address": frame([address(15, "New Street", updated=LATER)])}
    before = {"address": frame([address(15, "Old Street")]), "counterparty": frame([party])}
    out = t.star_schema(batch, before)
    assert out["dim_location"]["address_line_1"].tolist() == ["New Street"]
    assert out["dim_counterparty"]["counterparty_legal_address_line_1"].tolist() == ["New Street"]


def test_fact_sales_order_columns_split_and_versions() -> None:
    batch = {
        "sales_order": frame([sales_order(2), sales_order(2, updated=LATER, units="101"), sales_order(2)])
    }
    out = t.star_schema(batch, {})
    facts = out["fact_sales_order"]
    assert len(facts) == 2  # the same version twice (overlap) is one row; a new last_updated is another
    assert set(facts.columns) == set(MODELS["fact_sales_order"].to_schema().columns)
    first = facts.iloc[0]
    assert first["created_date"] == dt.date(2022, 11, 3)
    assert first["created_time"] == dt.time(14, 20, 49, 962000)
    assert first["sales_staff_id"] == 1
    assert first["agreed_payment_date"] == dt.date(2022, 11, 8)
    assert facts["units_sold"].tolist() == [100, 101]
    assert set(out["dim_date"]["date_id"]) == {
        dt.date(2022, 11, 3),
        dt.date(2023, 1, 2),
        dt.date(2022, 11, 7),
        dt.date(2022, 11, 8),
    }
    MODELS["fact_sales_order"].validate(facts)


def test_fact_payment_drops_account_numbers_and_types_the_date() -> None:
    payment = {
        "payment_id": "2",
        "created_at": TS,
        "last_updated": TS,
        "transaction_id": "2",
        "counterparty_id": "15",
        "payment_amount": "552548.62",
        "currency_id": "2",
        "payment_type_id": "3",
        "paid": "False",
        "payment_date": "2022-11-04",
        "company_ac_number": "67305075",
        "counterparty_ac_number": "31622269",
    }
    out = t.fact_payment(frame([payment]))
    assert "company_ac_number" not in out and "counterparty_ac_number" not in out
    assert out.loc[0, "payment_date"] == dt.date(2022, 11, 4)
    assert out.loc[0, "paid"] is False or bool(out.loc[0, "paid"]) is False
    assert out.loc[0, "payment_amount"] == Decimal("552548.62")
    MODELS["fact_payment"].validate(out)


def test_transaction_has_exactly_one_order_id() -> None:
    rows = [
        {"transaction_id": "1", "transaction_type": "PURCHASE", "sales_order_id": "", "purchase_order_id": "2.0",
         "created_at": TS, "last_updated": TS},
        {"transaction_id": "2", "transaction_type": "SALE", "sales_order_id": "3.0", "purchase_order_id": "4.0",
         "created_at": TS, "last_updated": TS},
    ]  # fmt: skip
    out = t.dim_transaction(frame(rows))
    assert out["purchase_order_id"].tolist() == [2, 4]
    with pytest.raises(pe.SchemaErrors, match="exactly one"):
        MODELS["dim_transaction"].validate(out, lazy=True)


def test_currency_names_and_unknown_code() -> None:
    rows = [
        {"currency_id": "1", "currency_code": "gbp", "created_at": TS, "last_updated": TS},
        {"currency_id": "2", "currency_code": "XYZ", "created_at": TS, "last_updated": TS},
    ]
    out = t.dim_currency(frame(rows))
    assert out["currency_code"].tolist() == ["GBP", "XYZ"]
    assert out["currency_name"].tolist() == ["British Pound", "XYZ"]


def test_latest_keeps_newest_version_per_key() -> None:
    older = frame([staff(1, 4), staff(2, 4)])
    newer = frame([staff(1, 5, updated=LATER)])
    out = t.latest([newer, older], "staff_id")
    assert sorted(zip(out["staff_id"], out["department_id"], strict=True)) == [("1", "5"), ("2", "4")]


# The Totesys warehouse schema its users query (the seed projects' DDL of the "totesys" data warehouse: e.g.
# dim_counterparty has counterparty_legal_address_line_1 but counterparty_legal_address_line2). Surrogate keys
# (*_record_id) included; order as in that DDL.
SEED_WAREHOUSE_COLUMNS: dict[str, list[str]] = {
    "dim_date": ["date_id", "year", "month", "day", "day_of_week", "day_name", "month_name", "quarter"],
    "dim_location": ["location_id", "address_line_1", "address_line_2", "district", "city", "postal_code",
                     "country", "phone"],
    "dim_counterparty": ["counterparty_id", "counterparty_legal_name", "counterparty_legal_address_line_1",
                         "counterparty_legal_address_line2", "counterparty_legal_district",
                         "counterparty_legal_city", "counterparty_legal_postal_code", "counterparty_legal_country",
                         "counterparty_legal_phone_number"],
    "dim_staff": ["staff_id", "first_name", "last_name", "department_name", "location", "email_address"],
    "dim_currency": ["currency_id", "currency_code", "currency_name"],
    "dim_design": ["design_id", "design_name", "file_location", "file_name"],
    "dim_payment_type": ["payment_type_id", "payment_type_name"],
    "dim_transaction": ["transaction_id", "transaction_type", "sales_order_id", "purchase_order_id"],
    "fact_sales_order": ["sales_record_id", "sales_order_id", "created_date", "created_time", "last_updated_date",
                         "last_updated_time", "sales_staff_id", "counterparty_id", "units_sold", "unit_price",
                         "currency_id", "design_id", "agreed_payment_date", "agreed_delivery_date",
                         "agreed_delivery_location_id"],
    "fact_purchase_order": ["purchase_record_id", "purchase_order_id", "created_date", "created_time",
                            "last_updated_date", "last_updated_time", "staff_id", "counterparty_id", "item_code",
                            "item_quantity", "item_unit_price", "currency_id", "agreed_delivery_date",
                            "agreed_payment_date", "agreed_delivery_location_id"],
    "fact_payment": ["payment_record_id", "payment_id", "created_date", "created_time", "last_updated_date",
                     "last_updated_time", "transaction_id", "counterparty_id", "payment_amount", "currency_id",
                     "payment_type_id", "paid", "payment_date"],
}  # fmt: skip


def test_warehouse_columns_are_named_exactly_as_the_totesys_warehouse_schema() -> None:
    from schemas.totesys import MODELS
    from sluice.totesys import WAREHOUSE_TABLES

    assert {
        name: [c.name for c in t.columns] for name, t in WAREHOUSE_TABLES.items()
    } == SEED_WAREHOUSE_COLUMNS
    for name, model in MODELS.items():
        surrogate = [c for c in SEED_WAREHOUSE_COLUMNS[name] if c.endswith("_record_id")]
        assert set(model.to_schema().columns) == set(SEED_WAREHOUSE_COLUMNS[name]) - set(surrogate), name


@pytest.mark.parametrize(
    ("column", "value", "what"),
    [
        ("agreed_payment_date", "03/11/2024", "a YYYY-MM-DD date"),
        ("units_sold", "12 units", "an integer"),
        ("unit_price", "£3.50", "a number"),
        ("last_updated", "yesterday", "a timestamp"),
    ],
)
def test_a_bad_source_value_names_its_table_row_column_and_value(column: str, value: str, what: str) -> None:
    rows = [sales_order(1), sales_order(10)]
    rows[1][column] = value
    with pytest.raises(ValueError) as raised:
        t.star_schema({"sales_order": frame(rows)}, {})
    message = str(raised.value)
    assert message == f"sales_order 10: column {column}: {value!r} is not {what}", message
    assert "\n" not in message


def test_payment_amounts_may_use_the_whole_numeric_12_2_and_prices_only_numeric_10_2() -> None:
    payment = {
        "payment_id": "2", "created_at": TS, "last_updated": TS, "transaction_id": "2", "counterparty_id": "15",
        "payment_amount": "123456789.12", "currency_id": "2", "payment_type_id": "3", "paid": "true",
        "payment_date": "2022-11-04", "company_ac_number": "1", "counterparty_ac_number": "2",
    }  # fmt: skip
    MODELS["fact_payment"].validate(t.fact_payment(frame([payment])))
    too_dear = t.fact_sales_order(frame([sales_order(1) | {"unit_price": "100000000.00"}]))
    with pytest.raises(pe.SchemaErrors, match="numeric"):
        MODELS["fact_sales_order"].validate(too_dear, lazy=True)


def test_a_lenient_build_sets_every_bad_row_aside_with_why_and_builds_the_rest() -> None:
    rows = [sales_order(1), sales_order(2), sales_order(3)]
    rows[0]["agreed_payment_date"] = "soon"
    rows[2]["units_sold"] = "many"
    rejected: list[t.Rejection] = []
    out = t.star_schema({"sales_order": frame(rows), "staff": frame([staff(7, 9)])}, {}, rejected)
    assert out["fact_sales_order"]["sales_order_id"].tolist() == [2]
    assert "dim_staff" not in out  # its only row refers to a department that is nowhere
    assert sorted((r.table, r.row_id, r.column, r.value) for r in rejected) == [
        ("sales_order", "1", "agreed_payment_date", "soon"),
        ("sales_order", "3", "units_sold", "many"),
        ("staff", "7", "department_id", "9"),
    ]
    reasons = {r.reason for r in rejected}
    assert "sales_order 1: column agreed_payment_date: 'soon' is not a YYYY-MM-DD date" in reasons
    with pytest.raises(ValueError, match="sales_order 3: column units_sold"):
        t.star_schema({"sales_order": frame(rows)}, {})  # strict (the default): the first bad row raises


@pytest.mark.parametrize("source", t.TABLES)
def test_a_change_to_one_source_table_rebuilds_only_tables_built_from_it(source: str) -> None:
    """``BUILT_FROM`` (what a cycle's table shows beside each warehouse table) is what ``star_schema`` does: a batch
    of one source table's rows builds the tables that list it, ``dim_date`` from a fact's dates, and no other."""
    oltp = generate(20, random.Random(7))
    before = {name: oltp[name] for name in t.LOOKUP_TABLES}
    built = set(t.star_schema({source: oltp[source]}, before))
    expected = {table for table, sources in t.BUILT_FROM.items() if source in sources}
    if source in ("sales_order", "purchase_order", "payment"):
        expected.add("dim_date")
    assert built == expected
