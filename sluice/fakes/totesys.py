"""A fake Totesys OLTP for the demo, the tests and the benchmarks: its DDL, seeding, a generator, activity.

Nothing in flows, tasks or the engine imports this (the layers contract in pyproject.toml says so): production
reads a real OLTP through ``sluice.adapters.totesys_source``. Seeding goes through ``COPY``.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg2
import sqlalchemy as sa
from psycopg2 import sql

from sluice import progress
from sluice.adapters.warehouse import raw_connection, run_copy
from sluice.errors import BadFile, ConfigurationError
from sluice.transforms.totesys import TABLES

# The OLTP's DDL as the source system has it: agreed dates and payment_date are text, a transaction points at
# exactly one of a sales or a purchase order.
DDL = """
CREATE TABLE IF NOT EXISTS address (
    address_id serial PRIMARY KEY, address_line_1 varchar NOT NULL, address_line_2 varchar, district varchar,
    city varchar NOT NULL, postal_code varchar NOT NULL, country varchar NOT NULL, phone varchar NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(), last_updated timestamp NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS counterparty (
    counterparty_id serial PRIMARY KEY, counterparty_legal_name varchar NOT NULL,
    legal_address_id int NOT NULL REFERENCES address, commercial_contact varchar, delivery_contact varchar,
    created_at timestamp NOT NULL DEFAULT now(), last_updated timestamp NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS currency (
    currency_id serial PRIMARY KEY, currency_code varchar(3) NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(), last_updated timestamp NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS department (
    department_id serial PRIMARY KEY, department_name varchar NOT NULL, location varchar, manager varchar,
    created_at timestamp NOT NULL DEFAULT now(), last_updated timestamp NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS design (
    design_id serial PRIMARY KEY, created_at timestamp NOT NULL DEFAULT now(), design_name varchar NOT NULL,
    file_location varchar NOT NULL, file_name varchar NOT NULL, last_updated timestamp NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS staff (
    staff_id serial PRIMARY KEY, first_name varchar NOT NULL, last_name varchar NOT NULL,
    department_id int NOT NULL REFERENCES department, email_address varchar NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(), last_updated timestamp NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS payment_type (
    payment_type_id serial PRIMARY KEY, payment_type_name varchar NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(), last_updated timestamp NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS sales_order (
    sales_order_id serial PRIMARY KEY, created_at timestamp NOT NULL DEFAULT now(),
    last_updated timestamp NOT NULL DEFAULT now(), design_id int NOT NULL REFERENCES design,
    staff_id int NOT NULL REFERENCES staff, counterparty_id int NOT NULL REFERENCES counterparty,
    units_sold int NOT NULL, unit_price numeric(10, 2) NOT NULL, currency_id int NOT NULL REFERENCES currency,
    agreed_delivery_date varchar NOT NULL, agreed_payment_date varchar NOT NULL,
    agreed_delivery_location_id int NOT NULL REFERENCES address);
CREATE TABLE IF NOT EXISTS purchase_order (
    purchase_order_id serial PRIMARY KEY, created_at timestamp NOT NULL DEFAULT now(),
    last_updated timestamp NOT NULL DEFAULT now(), staff_id int NOT NULL REFERENCES staff,
    counterparty_id int NOT NULL REFERENCES counterparty, item_code varchar NOT NULL, item_quantity int NOT NULL,
    item_unit_price numeric NOT NULL, currency_id int NOT NULL REFERENCES currency,
    agreed_delivery_date varchar NOT NULL, agreed_payment_date varchar NOT NULL,
    agreed_delivery_location_id int NOT NULL REFERENCES address);
CREATE TABLE IF NOT EXISTS transaction (
    transaction_id serial PRIMARY KEY, transaction_type varchar NOT NULL,
    sales_order_id int REFERENCES sales_order, purchase_order_id int REFERENCES purchase_order,
    created_at timestamp NOT NULL DEFAULT now(), last_updated timestamp NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS payment (
    payment_id serial PRIMARY KEY, created_at timestamp NOT NULL DEFAULT now(),
    last_updated timestamp NOT NULL DEFAULT now(), transaction_id int NOT NULL REFERENCES transaction,
    counterparty_id int NOT NULL REFERENCES counterparty, payment_amount numeric NOT NULL,
    currency_id int NOT NULL REFERENCES currency, payment_type_id int NOT NULL REFERENCES payment_type,
    paid boolean NOT NULL, payment_date varchar NOT NULL, company_ac_number int NOT NULL,
    counterparty_ac_number int NOT NULL);
"""

# Load order that satisfies the foreign keys.
SEED_ORDER: tuple[str, ...] = (
    "address",
    "department",
    "currency",
    "design",
    "payment_type",
    "counterparty",
    "staff",
    "sales_order",
    "purchase_order",
    "transaction",
    "payment",
)
assert set(SEED_ORDER) == set(TABLES)


def create_schema(engine: sa.Engine) -> None:
    with engine.begin() as conn, raw_connection(conn) as cursor:
        cursor.execute(DDL)


def seed(
    engine: sa.Engine,
    tables: dict[str, pd.DataFrame],
    *,
    replace: bool = True,
    files: Mapping[str, Path] | None = None,
) -> dict[str, int]:
    """COPY ``tables`` (source table → text frame with the table's columns) into the OLTP, in FK order; ``files``
    (source table → the CSV its frame was read from) names a refused value's file in the error."""
    create_schema(engine)
    counts: dict[str, int] = {}
    with engine.begin() as conn, raw_connection(conn) as cursor:
        if replace:
            cursor.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in SEED_ORDER)
                )
            )
        for name in SEED_ORDER:
            frame = tables.get(name)
            if frame is None or frame.empty:
                counts[name] = 0
                continue
            progress.tell(f"copy {name}: {len(frame):,} rows")
            frame = _normalise(name, frame)
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, header=False)
            buffer.seek(0)
            try:
                run_copy(
                    cursor,
                    sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
                        sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
                    ),
                    buffer,
                )
            except (
                psycopg2.Error
            ) as exc:  # a value the OLTP refuses: one line naming file (or table), row, column
                raise BadFile(_refused(name, exc, (files or {}).get(name))) from None
            counts[name] = len(frame)
            cursor.execute(
                sql.SQL("SELECT setval(pg_get_serial_sequence({}, {}), GREATEST(MAX({}), 1)) FROM {}").format(
                    sql.Literal(name),
                    sql.Literal(f"{name}_id"),
                    sql.Identifier(f"{name}_id"),
                    sql.Identifier(name),
                )
            )
    return counts


def _refused(table: str, exc: psycopg2.Error, file: Path | None) -> str:
    """COPY's error as one line: ``<file> row 2, column created_at: invalid input syntax for type timestamp:
    "garbage"``. Was ``payment: … (COPY payment, line 2, column created_at: "garbage")``: a table, not the file,
    and COPY's line, not the file's (COPY gets the rows without their header: its line N is the file's row N)."""
    message = (exc.diag.message_primary or str(exc).strip().splitlines()[0]).strip()
    where = str(file) if file is not None else table
    found = re.search(r"\bline (\d+)(?:, column (\w+))?", exc.diag.context or "")
    if found:
        where += f" row {int(found[1]):,}" + (f", column {found[2]}" if found[2] else "")
    detail = f" ({exc.diag.message_detail.strip()})" if exc.diag.message_detail else ""
    return f"{where}: {message}{detail}"


# Integer columns besides the ids (``…_id``).
_INTEGERS = {"units_sold", "item_quantity", "company_ac_number", "counterparty_ac_number"}


def newest(engine: sa.Engine) -> tuple[dict[str, datetime], dict[str, int]]:
    """Each seeded OLTP table's greatest ``last_updated`` and greatest id (``<table>_id``), one query per table
    (tables left empty are not named)."""
    stamps: dict[str, datetime] = {}
    ids: dict[str, int] = {}
    with engine.connect() as conn:
        for name in SEED_ORDER:
            stamp, top = conn.execute(
                sa.select(
                    sa.func.max(sa.column("last_updated")), sa.func.max(sa.column(f"{name}_id"))
                ).select_from(sa.table(name))
            ).one()
            if stamp is not None:
                stamps[name] = stamp
            if top is not None:
                ids[name] = int(top)
    return stamps, ids


def _normalise(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Exports write integers as floats (``2.0``: nullable ids through pandas); the OLTP wants integers."""
    frame = frame.copy()
    for column in frame.columns:
        if column.endswith("_id") or column in _INTEGERS:
            frame[column] = frame[column].astype("string").str.replace(r"\.0+$", "", regex=True)
    return frame


def read_folder(folder: Path) -> dict[str, pd.DataFrame]:
    """One CSV per table (``address.csv`` …), header = column names, every value text."""
    missing = [t for t in TABLES if not (folder / f"{t}.csv").exists()]
    if missing:
        raise ConfigurationError(f"{folder}: missing {', '.join(f'{t}.csv' for t in missing)}")
    tables = {}
    for t in TABLES:
        progress.tell(f"read {t}.csv")
        tables[t] = pd.read_csv(folder / f"{t}.csv", dtype=str, keep_default_na=False)
    for name, frame in tables.items():
        # was PostgreSQL's `staff: column "phone" of relation "staff" does not exist ()`, one column at a time
        if extra := [str(c) for c in frame.columns if c not in COLUMNS[name]]:
            raise BadFile(
                f"{folder / f'{name}.csv'}: column(s) {', '.join(extra)} not in the Totesys table {name} "
                f"({', '.join(COLUMNS[name])}); remove them or rename them to its columns"
            )
    return tables


def seed_from_folder(engine: sa.Engine, folder: Path) -> dict[str, int]:
    return seed(engine, read_folder(folder), files={t: folder / f"{t}.csv" for t in TABLES})


# --- generator ------------------------------------------------------------------------------------------

_CITIES = ["Leeds", "Manchester", "York", "Bristol", "Cardiff", "Glasgow", "Belfast", "Norwich"]
_STREETS = [
    "Haskell Trafficway",
    "Herzog Via",
    "Alexie Cliffs",
    "Sincere Fort",
    "Ritchie Point",
    "Zieme Walk",
]
_DESIGNS = ["Wooden", "Bronze", "Granite", "Cotton", "Steel", "Plastic", "Rubber", "Silk", "Frozen", "Soft"]
_NAMES = ["Jeremie", "Deron", "Jeanette", "Ana", "Magdalena", "Korey", "Raphael", "Oswaldo", "Brody", "Meda"]
_SURNAMES = [
    "Franey",
    "Beier",
    "Erdman",
    "Glover",
    "Zieme",
    "Kreiger",
    "Rippin",
    "Bergstrom",
    "Ratke",
    "Cremin",
]


COLUMNS: dict[str, tuple[str, ...]] = {
    "address": ("address_id", "address_line_1", "address_line_2", "district", "city", "postal_code", "country",
                "phone", "created_at", "last_updated"),
    "department": ("department_id", "department_name", "location", "manager", "created_at", "last_updated"),
    "currency": ("currency_id", "currency_code", "created_at", "last_updated"),
    "design": ("design_id", "created_at", "design_name", "file_location", "file_name", "last_updated"),
    "payment_type": ("payment_type_id", "payment_type_name", "created_at", "last_updated"),
    "counterparty": ("counterparty_id", "counterparty_legal_name", "legal_address_id", "commercial_contact",
                     "delivery_contact", "created_at", "last_updated"),
    "staff": ("staff_id", "first_name", "last_name", "department_id", "email_address", "created_at", "last_updated"),
    "sales_order": ("sales_order_id", "created_at", "last_updated", "design_id", "staff_id", "counterparty_id",
                    "units_sold", "unit_price", "currency_id", "agreed_delivery_date", "agreed_payment_date",
                    "agreed_delivery_location_id"),
    "purchase_order": ("purchase_order_id", "created_at", "last_updated", "staff_id", "counterparty_id",
                       "item_code", "item_quantity", "item_unit_price", "currency_id", "agreed_delivery_date",
                       "agreed_payment_date", "agreed_delivery_location_id"),
    "transaction": ("transaction_id", "transaction_type", "sales_order_id", "purchase_order_id", "created_at",
                    "last_updated"),
    "payment": ("payment_id", "created_at", "last_updated", "transaction_id", "counterparty_id", "payment_amount",
                "currency_id", "payment_type_id", "paid", "payment_date", "company_ac_number",
                "counterparty_ac_number"),
}  # fmt: skip
_DEPARTMENTS = (
    ("Sales", "Manchester"), ("Purchasing", "Manchester"), ("Production", "Leeds"), ("Dispatch", "Leds"),
    ("Finance", "Manchester"), ("Facilities", "Manchester"), ("Communications", "Leeds"), ("HR", "Leeds"),
)  # fmt: skip


def _text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def generate(sales_orders: int, rng: random.Random, start: datetime | None = None) -> dict[str, pd.DataFrame]:
    """A consistent OLTP: ``sales_orders`` orders over 600 days, half as many purchase orders, one transaction
    and one payment per order, with the source's quirks (text dates, one nullable order id, "Leds")."""
    start = start or datetime(2022, 11, 3, 14, 20, 49, 962000)
    at0 = _text(start)
    data: dict[str, list[list[object]]] = {name: [] for name in COLUMNS}
    for i in range(1, 31):
        data["address"].append([
            i, f"{rng.randrange(1, 9999)} {rng.choice(_STREETS)}", "Flat 2" if i % 3 == 0 else None,
            "West Yorkshire" if i % 4 == 0 else None, rng.choice(_CITIES), f"LS{i} {i % 9}AB", "United Kingdom",
            f"0113 {rng.randrange(10**6):06d}", at0, at0,
        ])  # fmt: skip
    for i, (name, location) in enumerate(_DEPARTMENTS, start=1):
        data["department"].append(
            [i, name, location, f"{rng.choice(_NAMES)} {rng.choice(_SURNAMES)}", at0, at0]
        )
    for i, code in enumerate(("GBP", "USD", "EUR"), start=1):
        data["currency"].append([i, code, at0, at0])
    for i in range(1, 51):
        design = rng.choice(_DESIGNS)
        data["design"].append([i, at0, design, "/usr", f"{design.lower()}-{i:04d}.json", at0])
    for i, name in enumerate(
        ("SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND"), start=1
    ):
        data["payment_type"].append([i, name, at0, at0])
    for i in range(1, 21):
        data["counterparty"].append([
            i, f"{rng.choice(_SURNAMES)} and Sons {i}", rng.randrange(1, 31), rng.choice(_NAMES), rng.choice(_NAMES),
            at0, at0,
        ])  # fmt: skip
        first, last = rng.choice(_NAMES), rng.choice(_SURNAMES)
        data["staff"].append([
            i, first, last, rng.randrange(1, 9), f"{first.lower()}.{last.lower()}{i}@terrifictotes.com", at0, at0,
        ])  # fmt: skip

    span = timedelta(days=600)
    orders: list[tuple[datetime, str, list[object]]] = []
    for i in range(1, sales_orders + 1):
        at = start + span * i / (sales_orders + 1) + timedelta(seconds=rng.randrange(600))
        row = [
            i, _text(at), _text(at), rng.randrange(1, 51), rng.randrange(1, 21), rng.randrange(1, 21),
            rng.randrange(1000, 100_000), f"{rng.uniform(2, 4):.2f}", rng.randrange(1, 4),
            f"{at + timedelta(days=rng.randrange(1, 7)):%Y-%m-%d}", f"{at + timedelta(days=rng.randrange(1, 7)):%Y-%m-%d}",
            rng.randrange(1, 31),
        ]  # fmt: skip
        data["sales_order"].append(row)
        orders.append((at, "SALE", row))
        if i % 50_000 == 0:
            progress.tell(f"generate: {i:,} of {sales_orders:,} sales orders")
    for i in range(1, sales_orders // 2 + 1):
        at = start + span * (2 * i) / (sales_orders + 1) + timedelta(seconds=rng.randrange(600))
        row = [
            i, _text(at), _text(at), rng.randrange(1, 21), rng.randrange(1, 21),
            "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(7)), rng.randrange(1, 1000),
            f"{rng.uniform(1, 1000):.2f}", rng.randrange(1, 4), f"{at + timedelta(days=rng.randrange(1, 7)):%Y-%m-%d}",
            f"{at + timedelta(days=rng.randrange(1, 7)):%Y-%m-%d}", rng.randrange(1, 31),
        ]  # fmt: skip
        data["purchase_order"].append(row)
        orders.append((at, "PURCHASE", row))
    orders.sort(key=lambda item: item[0])
    progress.tell(f"generate: the transactions and payments of {len(orders):,} orders")
    for n, (_, kind, order) in enumerate(orders, start=1):
        sale = kind == "SALE"
        data["transaction"].append(
            [n, kind, order[0] if sale else None, None if sale else order[0], order[1], order[2]]
        )
        amount = int(str(order[6])) * float(str(order[7]))  # units x unit price (same places in both)
        data["payment"].append([
            n, order[1], order[2], n, order[5] if sale else order[4], f"{amount:.2f}", order[8], 1 if sale else 3,
            rng.random() < 0.5, order[10], rng.randrange(10**7, 10**8),
            rng.randrange(10**7, 10**8),
        ])  # fmt: skip
    progress.tell(f"generate: {sum(len(rows) for rows in data.values()):,} rows as tables")
    return {
        name: pd.DataFrame(rows, columns=list(COLUMNS[name]))
        .astype(object)
        .where(pd.DataFrame(rows, columns=list(COLUMNS[name])).notna(), "")
        .astype(str)
        for name, rows in data.items()
    }


def write_csv_folder(tables: dict[str, pd.DataFrame], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False, quoting=csv.QUOTE_MINIMAL)


def simulate_activity(
    engine: sa.Engine, rng: random.Random, *, new_orders: int = 5, updates: int = 2
) -> None:
    """Twenty minutes of OLTP life: a few new sales orders (with transactions and payments) and a few updates."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() "
                "WHERE sales_order_id IN (SELECT sales_order_id FROM sales_order ORDER BY random() LIMIT :n)"
            ),
            {"n": updates},
        )
        for _ in range(new_orders):
            order_id = conn.execute(
                sa.text(
                    "INSERT INTO sales_order (design_id, staff_id, counterparty_id, units_sold, unit_price, currency_id,"
                    " agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) SELECT "
                    "(SELECT min(design_id) FROM design), (SELECT min(staff_id) FROM staff), "
                    "(SELECT min(counterparty_id) FROM counterparty), :units, :price, "
                    "(SELECT min(currency_id) FROM currency), to_char(now() + interval '3 days', 'YYYY-MM-DD'), "
                    "to_char(now() + interval '5 days', 'YYYY-MM-DD'), (SELECT min(address_id) FROM address) "
                    "RETURNING sales_order_id"
                ),
                {"units": rng.randrange(1000, 50000), "price": round(rng.uniform(2, 4), 2)},
            ).scalar_one()
            transaction_id = conn.execute(
                sa.text(
                    "INSERT INTO transaction (transaction_type, sales_order_id) VALUES ('SALE', :o) "
                    "RETURNING transaction_id"
                ),
                {"o": order_id},
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO payment (transaction_id, counterparty_id, payment_amount, currency_id, "
                    "payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number) SELECT :t, "
                    "counterparty_id, units_sold * unit_price, currency_id, (SELECT min(payment_type_id) FROM "
                    "payment_type), false, agreed_payment_date, 12345678, 87654321 FROM sales_order "
                    "WHERE sales_order_id = :o"
                ),
                {"t": transaction_id, "o": order_id},
            )
