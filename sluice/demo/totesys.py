"""Demo step: a generated Totesys OLTP → one cycle into the star schema (later demos: twenty minutes of activity)."""

from __future__ import annotations

import random

import sqlalchemy as sa
from rich.console import Console

from sluice.adapters.totesys_source import source_engine, source_url
from sluice.cli.output import showing
from sluice.cli.runner import run_totesys
from sluice.cli.totesys import print_cycle
from sluice.fakes.totesys import generate, seed, simulate_activity

DEMO_ORDERS = 1500


def demo_step(console: Console) -> bool:
    console.rule("Totesys: OLTP → star schema")
    engine = source_engine(source_url())
    try:
        with engine.connect() as conn:
            seeded = conn.execute(
                sa.text("SELECT to_regclass('public.sales_order') IS NOT NULL")
            ).scalar_one()
            if seeded:
                seeded = conn.execute(sa.text("SELECT count(*) FROM sales_order")).scalar_one() > 0
        if seeded:
            simulate_activity(engine, random.Random(), new_orders=5, updates=2)
            console.print("source: 5 new sales orders and 2 updated since the last demo", highlight=False)
        else:
            counts = seed(engine, generate(DEMO_ORDERS, random.Random(20221103)))
            console.print(
                f"source: seeded a generated OLTP, {sum(counts.values()):,} rows in 11 tables",
                highlight=False,
            )
    finally:
        engine.dispose()
    with showing("totesys", console, starting="totesys: one cycle..."):
        report = run_totesys()
    print_cycle(report)
    with showing("totesys", console, starting="totesys: an idle cycle (nothing changed)..."):
        idle = run_totesys()
    print_cycle(idle)
    return report.status in ("success", "skipped") and idle.status in ("success", "skipped")
