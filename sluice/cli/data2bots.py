"""``sluice analytics``: the Data2bots analytics tables for one ingestion date, exported as CSV."""

from __future__ import annotations

import datetime as dt
import numbers
from typing import Annotated, Any

import typer
from rich.table import Table

from sluice.cli.output import AsJson, Verbose, console, err, escape, fail, print_json, showing, where
from sluice.runtime import prepare


def register(app: typer.Typer) -> None:
    app.command()(analytics)


def analytics(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Ingestion date YYYY-MM-DD (default: the latest order date)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Run again for a day that already ran on the same staging files.")
    ] = False,
    refresh_reference: Annotated[
        bool,
        typer.Option(
            "--refresh-reference",
            help="Rewrite if_common.dim_dates and dim_products from SLUICE_HOLIDAYS_FILE / SLUICE_PRODUCTS_FILE "
            "and build the day again (default: existing reference tables are only read; an absent one is created).",
        ),
    ] = False,
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """Build agg_public_holiday, agg_shipments, best_performing_product for one day; export them as CSV."""
    day: dt.date | None = None
    if as_of:
        try:
            day = dt.date.fromisoformat(as_of)
        except ValueError:
            raise fail(f"--as-of must be a date YYYY-MM-DD, not {as_of!r}", code=2) from None
    # on a terminal: the run's stage and rows so far (it showed nothing while it ran), from the start: the first
    # command in a new home starts its services (about 12 s)
    with showing("analytics", quiet=as_json or verbose):  # -v: the logs say it
        prepare(verbose)
        # after prepare: the flows import Prefect, which reads its environment once, at import
        from sluice.cli.runner import run_data2bots

        report = run_data2bots(day, force, refresh_reference)
    if as_json:
        print_json(report.model_dump(exclude={"failures", "flow_run_id"}))
    else:
        print_analytics(report, console)
    if report.status == "failed":
        raise typer.Exit(1)


def print_analytics(report: Any, console: Any) -> None:
    # kept off `sluice --help` (pandas)
    from sluice.adapters.warehouse import get_engine
    from sluice.data2bots import ANALYTICS, read_table

    if report.status == "failed":
        err.print(
            f"[bold red]error[/]{where(report)}: {escape(str(report.error))}", highlight=False, soft_wrap=True
        )
        return
    if report.status == "skipped":
        console.print(f"[yellow]analytics[/]: {escape(str(report.error))}", highlight=False, soft_wrap=True)
    for note in getattr(report, "notes", None) or []:
        console.print(f"[yellow]note[/]: {escape(note)}", highlight=False, soft_wrap=True)
    engine = get_engine()
    day = getattr(report, "as_of", None)
    for name in ANALYTICS:
        frame = read_table(engine, name)
        if day is not None:
            frame = frame[frame["ingestion_date"] == day]
        table = Table(title=f"analytics.{name}")
        table.add_column("column")
        for row in frame.itertuples(index=False):
            table.add_column(str(row.ingestion_date), justify="right")
        for column in frame.columns[1:]:
            table.add_row(str(column), *[cell(v) for v in frame[column]])
        console.print(table)
    for name, uri in (getattr(report, "exports", {}) or {}).items():
        console.print(f"exported {name}: {uri}", highlight=False, soft_wrap=True)


def cell(value: Any) -> str:
    """A value as the analytics tables show it: counts with thousands separators (the CSV exports keep them bare),
    an empty cell for no value."""
    if value is None:
        return ""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{int(value):,}"
    return str(value)
