"""After many cycles over a changing OLTP, the warehouse equals a star schema recomputed independently.

Dimensions are recomputed from the final source with SQL joins (not Sluice's transform); facts from every version
of each row that stood in the source when a cycle ran (a row updated twice between cycles shows its last state
only: the source keeps no history). The changes are random but seeded, the way an OLTP's applications make them:
updates, inserts, late commits stamped inside the overlap, dimension rows moving under the facts.
"""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from tests.totesys.conftest import Env
from tests.totesys.test_pipeline import cycle, orphans

DIMENSIONS = {
    "dim_location": (
        "SELECT address_id, address_line_1, address_line_2, district, city, postal_code, country, phone "
        "FROM address",
        "SELECT location_id, address_line_1, address_line_2, district, city, postal_code, country, phone "
        "FROM warehouse.dim_location",
    ),
    "dim_counterparty": (
        "SELECT c.counterparty_id, c.counterparty_legal_name, a.address_line_1, a.address_line_2, a.district, "
        "a.city, a.postal_code, a.country, a.phone FROM counterparty c JOIN address a "
        "ON a.address_id = c.legal_address_id",
        "SELECT counterparty_id, counterparty_legal_name, counterparty_legal_address_line_1, "
        "counterparty_legal_address_line2, counterparty_legal_district, counterparty_legal_city, "
        "counterparty_legal_postal_code, counterparty_legal_country, counterparty_legal_phone_number "
        "FROM warehouse.dim_counterparty",
    ),
    "dim_staff": (
        "SELECT s.staff_id, s.first_name, s.last_name, d.department_name, d.location, s.email_address "
        "FROM staff s JOIN department d USING (department_id)",
        "SELECT staff_id, first_name, last_name, department_name, location, email_address FROM warehouse.dim_staff",
    ),
    "dim_currency": (
        "SELECT currency_id, currency_code FROM currency",
        "SELECT currency_id, currency_code FROM warehouse.dim_currency",
    ),
    "dim_design": (
        "SELECT design_id, design_name, file_location, file_name FROM design",
        "SELECT design_id, design_name, file_location, file_name FROM warehouse.dim_design",
    ),
    "dim_transaction": (
        "SELECT transaction_id, transaction_type, sales_order_id, purchase_order_id FROM transaction",
        "SELECT transaction_id, transaction_type, sales_order_id, purchase_order_id FROM warehouse.dim_transaction",
    ),
}
FACTS = {
    "fact_sales_order": (
        "SELECT sales_order_id, last_updated, created_at, staff_id, counterparty_id, units_sold, unit_price, "
        "currency_id, design_id, agreed_payment_date::date, agreed_delivery_date::date, "
        "agreed_delivery_location_id FROM sales_order",
        "SELECT sales_order_id, last_updated_date + last_updated_time, created_date + created_time, "
        "sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id, agreed_payment_date, "
        "agreed_delivery_date, agreed_delivery_location_id FROM warehouse.fact_sales_order",
    ),
    "fact_payment": (
        "SELECT payment_id, last_updated, transaction_id, counterparty_id, round(payment_amount, 2), currency_id, "
        "payment_type_id, paid, payment_date::date FROM payment",
        "SELECT payment_id, last_updated_date + last_updated_time, transaction_id, counterparty_id, payment_amount, "
        "currency_id, payment_type_id, paid, payment_date FROM warehouse.fact_payment",
    ),
}


def rows(engine: sa.Engine, query: str) -> set[tuple]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.text(query))}


def change(conn: sa.Connection, rng: random.Random) -> None:
    """One application transaction: a random, valid change to the OLTP."""
    kind = rng.choice(
        ["address", "department", "staff", "counterparty", "design", "order", "order", "new_order", "late",
         "payment", "twice"]
    )  # fmt: skip
    ids = {
        t: conn.execute(sa.text(f"SELECT max({t}_id) FROM {t}")).scalar_one()
        for t in ("address", "department", "staff", "counterparty", "design", "sales_order", "payment")
    }

    def pick(table: str) -> int:
        return rng.randint(1, ids[table])

    if kind == "address":
        conn.execute(
            sa.text("UPDATE address SET address_line_1 = :v, last_updated = now() WHERE address_id = :i"),
            {"v": f"{rng.randint(1, 999)} New Street", "i": pick("address")},
        )
    elif kind == "department":
        conn.execute(
            sa.text("UPDATE department SET location = :v, last_updated = now() WHERE department_id = :i"),
            {"v": rng.choice(["Leeds", "Manchester", "York", None]), "i": pick("department")},
        )
    elif kind == "staff":
        conn.execute(
            sa.text("UPDATE staff SET department_id = :d, last_updated = now() WHERE staff_id = :i"),
            {"d": pick("department"), "i": pick("staff")},
        )
    elif kind == "counterparty":
        conn.execute(
            sa.text(
                "UPDATE counterparty SET legal_address_id = :a, last_updated = now() WHERE counterparty_id = :i"
            ),
            {"a": pick("address"), "i": pick("counterparty")},
        )
    elif kind == "design":
        conn.execute(
            sa.text("UPDATE design SET design_name = :v, last_updated = now() WHERE design_id = :i"),
            {"v": rng.choice(["Bronze", "Granite", "Ñandú", "Ōtautahi"]), "i": pick("design")},
        )
    elif kind in ("order", "twice"):
        order = pick("sales_order")
        for _ in range(2 if kind == "twice" else 1):
            conn.execute(
                sa.text(
                    "UPDATE sales_order SET units_sold = :u, unit_price = :p, last_updated = clock_timestamp() "
                    "WHERE sales_order_id = :i"
                ),
                {"u": rng.randint(1, 90_000), "p": f"{rng.uniform(1, 5):.2f}", "i": order},
            )
    elif kind in ("new_order", "late"):
        # "late": committed now, stamped up to two minutes earlier (a long transaction), inside the overlap
        at = "now() - make_interval(secs => :lag)" if kind == "late" else "now()"
        conn.execute(
            sa.text(
                "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, "
                "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                f"agreed_delivery_location_id) VALUES ({at}, {at}, :d, :s, :c, :u, 2.50, 1, '2024-01-02', "
                "'2024-01-03', :a)"
            ),
            {
                "lag": rng.randint(1, 120),
                "d": pick("design"),
                "s": pick("staff"),
                "c": pick("counterparty"),
                "u": rng.randint(1, 500),
                "a": pick("address"),
            },
        )
    else:
        conn.execute(
            sa.text("UPDATE payment SET paid = NOT paid, last_updated = now() WHERE payment_id = :i"),
            {"i": pick("payment")},
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_warehouse_after_many_cycles_equals_an_independent_recomputation(
    totesys_env: Env, seed: int
) -> None:
    from sluice.fakes.totesys import generate
    from sluice.fakes.totesys import seed as seed_tables

    rng = random.Random(seed)
    src, wh = totesys_env.source, totesys_env.warehouse
    seed_tables(src, generate(40, rng))
    versions = {name: rows(src, source) for name, (source, _) in FACTS.items()}
    assert cycle().status == "success"
    for _ in range(6):
        for _ in range(rng.randint(0, 8)):
            with src.begin() as conn:
                change(conn, rng)
        report = cycle()
        assert report.status in ("success", "skipped"), report.error
        for name, (source, _) in FACTS.items():
            versions[name] |= rows(src, source)
    assert cycle().status == "skipped"  # nothing left behind
    for name, (source, warehouse) in DIMENSIONS.items():
        assert rows(wh, warehouse) == rows(src, source), name
    for name, (_, warehouse) in FACTS.items():
        loaded = rows(wh, warehouse)
        assert loaded == versions[name], (name, sorted(loaded ^ versions[name])[:5])
    with wh.connect() as conn:
        doubled = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT 1 FROM warehouse.fact_sales_order GROUP BY sales_order_id, "
                "last_updated_date, last_updated_time HAVING count(*) > 1) d"
            )
        ).scalar_one()
        dates_missing = conn.execute(
            sa.text(
                "SELECT count(*) FROM warehouse.fact_sales_order f WHERE NOT EXISTS "
                "(SELECT 1 FROM warehouse.dim_date d WHERE d.date_id = f.agreed_payment_date)"
            )
        ).scalar_one()
    assert doubled == 0 and dates_missing == 0
    assert orphans(wh) == []
