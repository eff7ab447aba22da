"""Totesys OLTP rows → star schema: pure functions on DataFrames, no I/O.

Inputs are the source tables as extracted: every column text (``str``/NA), exactly as the OLTP's CSV export
writes it. Outputs are typed frames matching ``schemas.totesys``: ids ``Int64``, money ``Decimal``-exact
strings kept as ``float``-free ``object`` decimals, dates ``datetime.date``, times ``datetime.time``.

Weekday numbering of ``dim_date``: ISO 8601, ``day_of_week`` 1 = Monday … 7 = Sunday.

Over 350 lines: one pure builder per star-schema table (dimensions and facts) and the helpers they share;
splitting them would scatter the rules of one schema.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import pandas as pd

TABLES: tuple[str, ...] = (
    "address",
    "counterparty",
    "currency",
    "department",
    "design",
    "staff",
    "sales_order",
    "purchase_order",
    "payment_type",
    "transaction",
    "payment",
)

# The columns each source table must have, beyond its ``{table}_id`` and ``last_updated``: what the star schema is
# built from. A source missing one has changed shape (schema drift): the cycle stops before extracting anything.
# Columns the source has beyond these are extracted (the ingestion zone keeps whole rows) and otherwise ignored.
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "address": ("address_line_1", "address_line_2", "district", "city", "postal_code", "country", "phone"),
    "counterparty": ("counterparty_legal_name", "legal_address_id"),
    "currency": ("currency_code",),
    "department": ("department_name", "location"),
    "design": ("design_name", "file_location", "file_name"),
    "staff": ("first_name", "last_name", "department_id", "email_address"),
    "sales_order": (
        "created_at",
        "staff_id",
        "counterparty_id",
        "units_sold",
        "unit_price",
        "currency_id",
        "design_id",
        "agreed_payment_date",
        "agreed_delivery_date",
        "agreed_delivery_location_id",
    ),
    "purchase_order": (
        "created_at",
        "staff_id",
        "counterparty_id",
        "item_code",
        "item_quantity",
        "item_unit_price",
        "currency_id",
        "agreed_delivery_date",
        "agreed_payment_date",
        "agreed_delivery_location_id",
    ),
    "payment_type": ("payment_type_name",),
    "transaction": ("transaction_type", "sales_order_id", "purchase_order_id"),
    "payment": (
        "created_at",
        "transaction_id",
        "counterparty_id",
        "payment_amount",
        "currency_id",
        "payment_type_id",
        "paid",
        "payment_date",
    ),
}


def required_columns(table: str) -> tuple[str, ...]:
    """Every column of source ``table`` the star schema needs: its id, ``last_updated`` and ``SOURCE_COLUMNS``."""
    return (f"{table}_id", "last_updated", *SOURCE_COLUMNS[table])


# ISO 4217 names of the currencies a UK tote-bag business trades in; an unknown code keeps its code as name.
CURRENCY_NAMES: dict[str, str] = {
    "GBP": "British Pound",
    "USD": "US Dollar",
    "EUR": "Euro",
    "JPY": "Japanese Yen",
    "CHF": "Swiss Franc",
    "CAD": "Canadian Dollar",
    "AUD": "Australian Dollar",
    "NZD": "New Zealand Dollar",
    "CNY": "Chinese Yuan",
    "HKD": "Hong Kong Dollar",
    "SGD": "Singapore Dollar",
    "SEK": "Swedish Krona",
    "NOK": "Norwegian Krone",
    "DKK": "Danish Krone",
    "PLN": "Polish Zloty",
    "CZK": "Czech Koruna",
    "HUF": "Hungarian Forint",
    "INR": "Indian Rupee",
    "ZAR": "South African Rand",
    "BRL": "Brazilian Real",
    "MXN": "Mexican Peso",
    "TRY": "Turkish Lira",
    "AED": "UAE Dirham",
    "SAR": "Saudi Riyal",
    "KRW": "South Korean Won",
    "THB": "Thai Baht",
}

# Output table → (its key, the source table it comes from). Dimensions load before facts.
DIMENSIONS: dict[str, str] = {
    "dim_date": "date_id",
    "dim_location": "location_id",
    "dim_counterparty": "counterparty_id",
    "dim_staff": "staff_id",
    "dim_currency": "currency_id",
    "dim_design": "design_id",
    "dim_payment_type": "payment_type_id",
    "dim_transaction": "transaction_id",
}
FACTS: dict[str, str] = {
    "fact_sales_order": "sales_order_id",
    "fact_purchase_order": "purchase_order_id",
    "fact_payment": "payment_id",
}

#: Warehouse table → the source tables it is built from, as ``star_schema`` builds it (``dim_date``: from the
#: facts' dates, no source table of its own). A cycle's table and artifact show each warehouse table beside these.
BUILT_FROM: dict[str, tuple[str, ...]] = {
    "dim_date": (),
    "dim_location": ("address",),
    "dim_counterparty": ("counterparty", "address"),
    "dim_staff": ("staff", "department"),
    "dim_currency": ("currency",),
    "dim_design": ("design",),
    "dim_payment_type": ("payment_type",),
    "dim_transaction": ("transaction",),
    "fact_sales_order": ("sales_order",),
    "fact_purchase_order": ("purchase_order",),
    "fact_payment": ("payment",),
}


def lineage(extracted: Mapping[str, int], loaded: Mapping[str, int]) -> list[tuple[str, int, str]]:
    """Per warehouse table, in load order: the rows loaded into it and what it was built from, its source tables
    that had rows extracted with how many (``counterparty 20, address 30``). A table is listed if it loaded rows or
    any of its sources had some."""
    rows = []
    for table in [*BUILT_FROM, *(t for t in loaded if t not in BUILT_FROM)]:
        sources = [f"{s} {extracted[s]:,}" for s in BUILT_FROM.get(table, ()) if extracted.get(s)]
        if loaded.get(table) or sources:
            facts_dates = table == "dim_date" and not sources
            rows.append(
                (table, loaded.get(table, 0), "the facts' dates" if facts_dates else ", ".join(sources))
            )
    return rows


# Lookups a dimension needs beyond its own table: kept from earlier runs so a batch with a staff change but
# no department change (or a counterparty without its address) still builds complete rows.
LOOKUP_TABLES: tuple[str, ...] = ("address", "counterparty", "department", "staff")

_OPTIONAL = {"counterparty_legal_address_line2", "counterparty_legal_district"}
_LEGAL_ADDRESS = {
    "address_line_1": "counterparty_legal_address_line_1",
    "address_line_2": "counterparty_legal_address_line2",
    "district": "counterparty_legal_district",
    "city": "counterparty_legal_city",
    "postal_code": "counterparty_legal_postal_code",
    "country": "counterparty_legal_country",
    "phone": "counterparty_legal_phone_number",
}


# --- typing helpers -------------------------------------------------------------------------------------


class BadValue(ValueError):
    """Source values that are not what their column holds; ``star_schema`` adds the table and the row's id.

    The message names the first; ``labels`` are every bad row's (so a lenient build can set them all aside)."""

    def __init__(self, series: pd.Series, bad: pd.Series, what: str) -> None:
        self.column = str(series.name)
        self.labels = list(bad.index)
        self.label = self.labels[0]
        self.value = series.loc[self.label]
        self.what = what
        super().__init__(f"column {self.column}: {self.value!r} is not {what}")


@dataclass(frozen=True)
class Rejection:
    """A source row a lenient ``star_schema`` set aside: the row (its table, id and version) and why."""

    table: str
    row_id: str
    last_updated: str
    column: str
    value: str
    what: str

    @property
    def reason(self) -> str:
        return f"{self.table} {self.row_id}: column {self.column}: {self.value!r} is not {self.what}"


class BadRow(ValueError):
    """A source row the star schema cannot be built from (the message names its table, id, column, value)."""

    def __init__(self, table: str, message: str) -> None:
        self.table = table
        super().__init__(message)


def _present(series: pd.Series) -> pd.Series:
    """Where a value is given (not NULL, not empty text)."""
    return series.notna() & (series.astype("string").str.strip() != "")


def ids(series: pd.Series) -> pd.Series:
    """Integer ids that may arrive as ``"2"``, ``"2.0"`` or empty (nullable ``Int64``)."""
    numbers = pd.to_numeric(series.replace("", pd.NA), errors="coerce")
    bad = numbers.isna() & _present(series) | numbers.notna() & (numbers % 1 != 0)
    if bad.any():
        raise BadValue(series, series[bad], "an integer")
    return numbers.astype("Int64")


def decimals(series: pd.Series, places: int = 2) -> pd.Series:
    """Exact money: ``Decimal`` rounded half-up to ``places`` (never through binary floats)."""
    quantum = Decimal(1).scaleb(-places)

    def convert(value: object) -> Decimal | None:
        if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) or value == "":
            return None
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return Decimal("NaN")
        if not number.is_finite():
            return Decimal("NaN")
        try:
            return number.quantize(quantum, rounding=ROUND_HALF_UP)
        except InvalidOperation:  # more digits than the context holds (1e26): too big for any money column
            return number  # the checks reject it, naming its source row (a bare InvalidOperation did not)

    converted = series.map(convert).astype(object)
    bad = converted.map(lambda v: isinstance(v, Decimal) and not v.is_finite())
    if bad.any():
        raise BadValue(series, series[bad], "a number")
    return converted


def timestamps(series: pd.Series) -> pd.Series:
    """OLTP ``timestamp`` text (``2022-11-03 14:20:49.962``, any ISO precision) → ``datetime64``."""
    parsed = pd.to_datetime(series.replace("", pd.NA), format="ISO8601", errors="coerce")
    bad = parsed.isna()
    if bad.any():
        raise BadValue(series, series[bad], "a timestamp")
    return parsed


def split_timestamp(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """A timestamp column → (``datetime.date`` column, ``datetime.time`` column)."""
    moments = timestamps(series)
    return moments.dt.date.astype(object), moments.dt.time.astype(object)


def dates(series: pd.Series) -> pd.Series:
    """``YYYY-MM-DD`` text (the OLTP keeps agreed and payment dates as text) → ``datetime.date``; empty → None."""
    parsed = pd.to_datetime(series.replace("", pd.NA), format="%Y-%m-%d", errors="coerce")
    bad = parsed.isna() & _present(series)
    if bad.any():
        raise BadValue(series, series[bad], "a YYYY-MM-DD date")
    return parsed.dt.date.astype(object).where(parsed.notna(), None)


def booleans(series: pd.Series) -> pd.Series:
    truth = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}
    lowered = series.astype("string").str.strip().str.lower()
    unknown = lowered.notna() & ~lowered.isin(truth)
    if unknown.any():
        raise BadValue(series, series[unknown], "a boolean")
    return lowered.map(truth).astype("boolean")


def text(series: pd.Series) -> pd.Series:
    """A text column the OLTP requires (NOT NULL): an empty value is the empty string it holds, kept."""
    return series.astype("string")


def optional(series: pd.Series) -> pd.Series:
    """A text column the OLTP may leave NULL: empty is NULL (its CSV export writes both alike)."""
    return series.astype("string").replace("", pd.NA)


def latest(frames: Iterable[pd.DataFrame], key: str) -> pd.DataFrame:
    """Union of versions of the same table: one row per ``key``, the newest ``last_updated`` (later frame wins ties)."""
    present = [f for f in frames if f is not None and not f.empty]
    if not present:
        return pd.DataFrame()
    combined = pd.concat(present, ignore_index=True)
    order = timestamps(combined["last_updated"]).rename("_order")
    combined = combined.assign(_order=order, _pos=range(len(combined)))
    combined = combined.sort_values(["_order", "_pos"], kind="stable")
    return combined.drop_duplicates(subset=[key], keep="last").drop(columns=["_order", "_pos"])


def current(before: pd.DataFrame, batch: pd.DataFrame, key: str) -> pd.DataFrame:
    """A reference table as the source holds it now: the batch's row of each id it has (read in this cycle's
    snapshot: the source's current row, whatever its stamp), else the row loaded before.

    Not the newest ``last_updated``: a row updated again with a stamp behind the version loaded before (a long
    transaction's ``now()``, an application server with a slower clock) is the source's row all the same, and
    its dimension must show it, as ``dim_location`` and the other dimensions built from the batch alone do."""
    if before.empty:
        return latest([batch], key)
    if batch.empty:
        return before
    fresh = latest([batch], key)
    kept = before[~ids(before[key]).isin(set(ids(fresh[key]).dropna()))]
    return pd.concat([kept, fresh], ignore_index=True)


# --- dimensions -----------------------------------------------------------------------------------------


def _with_columns(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``frame``, or an empty text frame with ``columns`` when nothing is known yet."""
    columns = list(columns)
    if frame.empty and not set(columns) <= set(frame.columns):
        return pd.DataFrame({c: pd.Series(dtype="str") for c in columns})
    return frame


def dim_location(address: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "location_id": ids(address["address_id"]),
            "address_line_1": text(address["address_line_1"]),
            "address_line_2": optional(address["address_line_2"]),
            "district": optional(address["district"]),
            "city": text(address["city"]),
            "postal_code": text(address["postal_code"]),
            "country": text(address["country"]),
            "phone": text(address["phone"]),
        }
    ).reset_index(drop=True)


def dim_counterparty(counterparty: pd.DataFrame, address: pd.DataFrame) -> pd.DataFrame:
    """Counterparty joined to its **legal** address (``legal_address_id`` → ``address_id``)."""
    address = _with_columns(address, ["address_id", *_LEGAL_ADDRESS])
    legal = address[["address_id", *_LEGAL_ADDRESS]].assign(address_id=ids(address["address_id"]))
    parties = counterparty.assign(
        counterparty_id=ids(counterparty["counterparty_id"]),
        legal_address_id=ids(counterparty["legal_address_id"]),
    )
    missing = ~parties["legal_address_id"].isin(legal["address_id"].dropna())
    if missing.any():
        column = counterparty["legal_address_id"]
        raise BadValue(column, column[missing], "an address in this batch or loaded before")
    joined = parties.merge(
        legal, how="left", left_on="legal_address_id", right_on="address_id", validate="many_to_one"
    )
    out = pd.DataFrame(
        {
            "counterparty_id": joined["counterparty_id"],
            "counterparty_legal_name": text(joined["counterparty_legal_name"]),
        }
    )
    for source, target in _LEGAL_ADDRESS.items():
        out[target] = (optional if target in _OPTIONAL else text)(joined[source])
    return out.reset_index(drop=True)


def dim_staff(staff: pd.DataFrame, department: pd.DataFrame) -> pd.DataFrame:
    """Staff joined to their department's name and location."""
    department = _with_columns(department, ["department_id", "department_name", "location"])
    depts = department[["department_id", "department_name", "location"]].assign(
        department_id=ids(department["department_id"])
    )
    people = staff.assign(staff_id=ids(staff["staff_id"]), department_id=ids(staff["department_id"]))
    missing = ~people["department_id"].isin(depts["department_id"].dropna())
    if missing.any():
        column = staff["department_id"]
        raise BadValue(column, column[missing], "a department in this batch or loaded before")
    joined = people.merge(depts, how="left", on="department_id", validate="many_to_one")
    return pd.DataFrame(
        {
            "staff_id": joined["staff_id"],
            "first_name": text(joined["first_name"]),
            "last_name": text(joined["last_name"]),
            "department_name": text(joined["department_name"]),
            "location": optional(joined["location"]),
            "email_address": text(joined["email_address"]),
        }
    ).reset_index(drop=True)


def dim_currency(currency: pd.DataFrame) -> pd.DataFrame:
    codes = text(currency["currency_code"]).str.strip().str.upper()
    return pd.DataFrame(
        {
            "currency_id": ids(currency["currency_id"]),
            "currency_code": codes,
            "currency_name": codes.map(
                lambda c: CURRENCY_NAMES.get(c, c) if isinstance(c, str) else c
            ).astype("string"),
        }
    ).reset_index(drop=True)


def dim_design(design: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "design_id": ids(design["design_id"]),
            "design_name": text(design["design_name"]),
            "file_location": text(design["file_location"]),
            "file_name": text(design["file_name"]),
        }
    ).reset_index(drop=True)


def dim_payment_type(payment_type: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "payment_type_id": ids(payment_type["payment_type_id"]),
            "payment_type_name": text(payment_type["payment_type_name"]),
        }
    ).reset_index(drop=True)


def dim_transaction(transaction: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": ids(transaction["transaction_id"]),
            "transaction_type": text(transaction["transaction_type"]),
            "sales_order_id": ids(transaction["sales_order_id"]),
            "purchase_order_id": ids(transaction["purchase_order_id"]),
        }
    ).reset_index(drop=True)


def dim_date(days: Iterable[object]) -> pd.DataFrame:
    """One row per distinct date (``None`` ignored); ISO weekday 1 = Monday … 7 = Sunday."""
    unique = sorted({d for d in days if d is not None and not (isinstance(d, float) and pd.isna(d))})
    frame = pd.DataFrame({"date_id": pd.Series(unique, dtype=object)})
    stamps = pd.to_datetime(frame["date_id"])
    frame["year"] = stamps.dt.year.astype("Int64")
    frame["month"] = stamps.dt.month.astype("Int64")
    frame["day"] = stamps.dt.day.astype("Int64")
    frame["day_of_week"] = (stamps.dt.dayofweek + 1).astype("Int64")
    frame["day_name"] = stamps.dt.dayofweek.map(lambda i: calendar.day_name[i]).astype("string")
    frame["month_name"] = stamps.dt.month.map(lambda m: calendar.month_name[m]).astype("string")
    frame["quarter"] = stamps.dt.quarter.astype("Int64")
    return frame


# --- facts ----------------------------------------------------------------------------------------------


def _versions(frame: pd.DataFrame) -> dict[str, pd.Series]:
    created_date, created_time = split_timestamp(frame["created_at"])
    updated_date, updated_time = split_timestamp(frame["last_updated"])
    return {
        "created_date": created_date,
        "created_time": created_time,
        "last_updated_date": updated_date,
        "last_updated_time": updated_time,
    }


def fact_sales_order(sales_order: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sales_order_id": ids(sales_order["sales_order_id"]),
            **_versions(sales_order),
            "sales_staff_id": ids(sales_order["staff_id"]),
            "counterparty_id": ids(sales_order["counterparty_id"]),
            "units_sold": ids(sales_order["units_sold"]),
            "unit_price": decimals(sales_order["unit_price"]),
            "currency_id": ids(sales_order["currency_id"]),
            "design_id": ids(sales_order["design_id"]),
            "agreed_payment_date": dates(sales_order["agreed_payment_date"]),
            "agreed_delivery_date": dates(sales_order["agreed_delivery_date"]),
            "agreed_delivery_location_id": ids(sales_order["agreed_delivery_location_id"]),
        }
    ).reset_index(drop=True)


def fact_purchase_order(purchase_order: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "purchase_order_id": ids(purchase_order["purchase_order_id"]),
            **_versions(purchase_order),
            "staff_id": ids(purchase_order["staff_id"]),
            "counterparty_id": ids(purchase_order["counterparty_id"]),
            "item_code": text(purchase_order["item_code"]),
            "item_quantity": ids(purchase_order["item_quantity"]),
            "item_unit_price": decimals(purchase_order["item_unit_price"]),
            "currency_id": ids(purchase_order["currency_id"]),
            "agreed_delivery_date": dates(purchase_order["agreed_delivery_date"]),
            "agreed_payment_date": dates(purchase_order["agreed_payment_date"]),
            "agreed_delivery_location_id": ids(purchase_order["agreed_delivery_location_id"]),
        }
    ).reset_index(drop=True)


def fact_payment(payment: pd.DataFrame) -> pd.DataFrame:
    """Payments without the two account numbers; ``payment_date`` a date."""
    return pd.DataFrame(
        {
            "payment_id": ids(payment["payment_id"]),
            **_versions(payment),
            "transaction_id": ids(payment["transaction_id"]),
            "counterparty_id": ids(payment["counterparty_id"]),
            "payment_amount": decimals(payment["payment_amount"]),
            "currency_id": ids(payment["currency_id"]),
            "payment_type_id": ids(payment["payment_type_id"]),
            "paid": booleans(payment["paid"]),
            "payment_date": dates(payment["payment_date"]),
        }
    ).reset_index(drop=True)


FACT_DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "fact_sales_order": ("created_date", "last_updated_date", "agreed_payment_date", "agreed_delivery_date"),
    "fact_purchase_order": (
        "created_date",
        "last_updated_date",
        "agreed_delivery_date",
        "agreed_payment_date",
    ),
    "fact_payment": ("created_date", "last_updated_date", "payment_date"),
}


# --- the whole batch ------------------------------------------------------------------------------------


def _ids_of(frame: pd.DataFrame | None, column: str) -> set[int]:
    if frame is None or frame.empty:
        return set()
    return {int(v) for v in ids(frame[column]).dropna()}


def _built(
    table: str,
    build: Callable[..., pd.DataFrame],
    frame: pd.DataFrame,
    *more: pd.DataFrame,
    rejected: list[Rejection] | None = None,
) -> pd.DataFrame | None:
    """``build(frame, *more)``; a bad value names its source table and row: ``sales_order 10: column …``.

    With ``rejected`` (a lenient build), every row of ``frame`` with a bad value is set aside there, with why,
    and the rest is built (None if no row is left); a bad value in a row of ``more`` (rows loaded before) still
    raises, as it is no row of this batch."""
    key = f"{table}_id"
    while True:
        try:
            return build(frame, *more)
        except BadValue as exc:
            mine = exc.label in frame.index and exc.column in frame.columns and key in frame.columns
            if mine and str(frame.loc[exc.label, exc.column]) == str(exc.value):
                if rejected is None:
                    raise BadRow(table, f"{table} {frame.loc[exc.label, key]}: {exc}") from None
                labels = [label for label in exc.labels if label in frame.index]
                rejected.extend(
                    Rejection(
                        table=table,
                        row_id=str(frame.loc[label, key]),
                        last_updated=str(frame.loc[label, "last_updated"]),
                        column=exc.column,
                        value=str(frame.loc[label, exc.column]),
                        what=exc.what,
                    )
                    for label in labels
                )
                frame = frame.drop(index=labels)
                if frame.empty:
                    return None
                continue
            raise BadRow(table, f"{table}: {exc}") from None


def star_schema(
    batch: Mapping[str, pd.DataFrame],
    before: Mapping[str, pd.DataFrame],
    rejected: list[Rejection] | None = None,
) -> dict[str, pd.DataFrame]:
    """The batch's rows as star-schema tables (only non-empty ones).

    ``batch``: source table → rows extracted this run. ``before``: lookup table → its rows as loaded by earlier
    runs (``LOOKUP_TABLES``). A dimension row is rebuilt when its own row changed or a row it is joined to
    did (a department moving rebuilds its staff; an address changing rebuilds the counterparties it is the
    legal address of).

    A row with a value that cannot be typed (or a reference to a row that is nowhere) raises ``BadRow`` naming
    the first; with ``rejected`` given, every such row is set aside there instead and the rest is built, so
    that one run reports them all.
    """

    def rows(name: str) -> pd.DataFrame:
        frame = batch.get(name)
        return frame if frame is not None else pd.DataFrame()

    def known(name: str) -> pd.DataFrame:
        return current(before.get(name, pd.DataFrame()), rows(name), f"{name}_id")

    out: dict[str, pd.DataFrame] = {}
    if not rows("address").empty:
        built = _built("address", dim_location, latest([rows("address")], "address_id"), rejected=rejected)
        if built is not None:
            out["dim_location"] = built

    changed_addresses = _ids_of(rows("address"), "address_id")
    if not rows("counterparty").empty or changed_addresses:
        parties = known("counterparty")
        if not parties.empty:
            touched = _ids_of(rows("counterparty"), "counterparty_id")
            legal = ids(parties["legal_address_id"])
            selected = parties[ids(parties["counterparty_id"]).isin(touched) | legal.isin(changed_addresses)]
            if not selected.empty:
                built = _built(
                    "counterparty", dim_counterparty, selected, known("address"), rejected=rejected
                )
                if built is not None:
                    out["dim_counterparty"] = built

    changed_departments = _ids_of(rows("department"), "department_id")
    if not rows("staff").empty or changed_departments:
        people = known("staff")
        if not people.empty:
            touched = _ids_of(rows("staff"), "staff_id")
            dept = ids(people["department_id"])
            selected = people[ids(people["staff_id"]).isin(touched) | dept.isin(changed_departments)]
            if not selected.empty:
                built = _built("staff", dim_staff, selected, known("department"), rejected=rejected)
                if built is not None:
                    out["dim_staff"] = built

    simple = {
        "currency": ("dim_currency", dim_currency),
        "design": ("dim_design", dim_design),
        "payment_type": ("dim_payment_type", dim_payment_type),
        "transaction": ("dim_transaction", dim_transaction),
    }
    for source, (target, build) in simple.items():
        if not rows(source).empty:
            built = _built(source, build, latest([rows(source)], f"{source}_id"), rejected=rejected)
            if built is not None:
                out[target] = built

    facts = {
        "sales_order": ("fact_sales_order", fact_sales_order),
        "purchase_order": ("fact_purchase_order", fact_purchase_order),
        "payment": ("fact_payment", fact_payment),
    }
    for source, (target, build) in facts.items():
        if not rows(source).empty:
            # Every version of a row is a fact row; the same version twice (overlap) once.
            frame = rows(source).drop_duplicates(subset=[f"{source}_id", "last_updated"])
            built = _built(source, build, frame, rejected=rejected)
            if built is not None:
                out[target] = built

    referenced: list[object] = []
    for target, columns in FACT_DATE_COLUMNS.items():
        if target in out:
            for column in columns:
                referenced.extend(out[target][column].tolist())
    if referenced:
        out["dim_date"] = dim_date(referenced)
    return {name: out[name] for name in [*DIMENSIONS, *FACTS] if name in out}
