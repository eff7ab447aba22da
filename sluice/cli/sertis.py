"""``sluice customers``: rebuild the Sertis gold table (per-customer aggregate) from all of silver."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from sluice.cli.output import AsJson, Verbose, console, err, escape, print_json, showing, where
from sluice.errors import counted
from sluice.runtime import prepare


def register(app: typer.Typer) -> None:
    app.command()(customers)


def customers(
    as_json: AsJson = False,
    limit: Annotated[int, typer.Option(min=0, help="Customers to print (text output).")] = 15,
    verbose: Verbose = False,
) -> None:
    """Build gold: customers(customer_id, favourite_product, longest_streak), as table and Parquet."""
    # on a terminal: the run's stage and lines so far (it showed nothing while it ran), from the start: the first
    # command in a new home starts its services (about 12 s)
    with showing("customers", quiet=as_json or verbose):  # -v: the logs say it
        prepare(verbose)
        # after prepare: the flows import Prefect, which reads its environment once, at import
        from sluice.cli.runner import run_sertis

        report = run_sertis()
    if as_json:
        print_json(report.model_dump(exclude={"failures", "flow_run_id"}))
    elif report.status == "failed":
        err.print(
            f"[bold red]error[/]{where(report)}: {escape(str(report.error))}", highlight=False, soft_wrap=True
        )
    else:
        print_customers(report, console, limit)
    if report.status == "failed":
        raise typer.Exit(1)


def print_customers(report: Any, console: Any, limit: int = 15) -> None:
    # kept off `sluice --help` (SQLAlchemy)
    import sqlalchemy as sa

    from sluice.adapters.warehouse import get_engine

    with get_engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT customer_id, favourite_product, longest_streak FROM sertis.customers "
                "ORDER BY longest_streak DESC, customer_id LIMIT :n"
            ),
            {"n": limit},
        ).all()
    # the silver lines read and those gold counted (it said the counted ones "in silver", the ledger the read ones)
    lines = getattr(report, "rows_read", 0) or 0
    used = getattr(report, "lines_counted", lines)
    console.print(
        f"sertis.customers: {getattr(report, 'customers', 0):,} customers from "
        + (f"{used:,} of the " if used != lines else "")
        + f"{counted(lines, 'transaction line')} in silver",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title=f"top {len(rows)} by streak")
    table.add_column("customer_id")
    table.add_column("favourite_product")
    table.add_column("longest_streak", justify="right")  # a count: right-aligned, as every other table's
    for row in rows:
        table.add_row(str(row[0]), str(row[1]), str(row[2]))
    console.print(table)
    for note in getattr(report, "notes", None) or []:
        console.print(f"[yellow]note[/]: {escape(note)}", highlight=False, soft_wrap=True)
    if not lines:  # said here only: a rebuild from empty silver changes nothing, and a note would alert
        console.print(
            "[yellow]note[/]: silver holds no transactions yet, so gold is empty: `sluice ingest` a transactions "
            "file (transaction_*.csv, pipe-delimited) first",
            highlight=False,
            soft_wrap=True,
        )
    if getattr(report, "gold_uri", None):
        console.print(f"gold Parquet: {report.gold_uri}", highlight=False, soft_wrap=True)
