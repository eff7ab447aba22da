"""``sluice totesys``: one cycle of the OLTP → star-schema pipeline; ``sluice totesys seed-source``."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sluice.cli.output import Verbose, console, err, escape, fail, print_json, showing, warn, where
from sluice.errors import SluiceError
from sluice.runtime import prepare

totesys_app = typer.Typer(
    help="Totesys: incremental OLTP extraction into the star-schema warehouse.",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(totesys_app, name="totesys")


#: Said when ``--source-url`` carries a password: a command line is no place for one.
ON_COMMAND_LINE_WARNING = (
    "the password in --source-url can be read by other users in `ps` and stays in your shell's "
    "history; leave it out of the URL and keep it in ~/.pgpass (or PGPASSWORD), as psql takes it, or set the "
    "whole URL in SLUICE_TOTESYS_SOURCE_URL"
)


def _use_source(source_url: str | None) -> None:
    if source_url:
        if _has_password(source_url):
            warn(ON_COMMAND_LINE_WARNING)
        os.environ["SLUICE_TOTESYS_SOURCE_URL"] = source_url
        from sluice.settings import reload_settings  # kept off `sluice --help` (pydantic-settings)

        reload_settings()


def _has_password(url: str) -> bool:
    import sqlalchemy as sa  # kept off `sluice --help`

    try:
        return bool(sa.make_url(url).password)
    except (sa.exc.ArgumentError, ValueError):
        return False  # not a URL: the run says so


@totesys_app.callback()
def cycle(
    ctx: typer.Context,
    source_url: Annotated[
        str | None,
        typer.Option(
            help="OLTP PostgreSQL URL, best without its password (libpq reads ~/.pgpass or PGPASSWORD). "
            "Default: SLUICE_TOTESYS_SOURCE_URL or embedded."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Per-table rows extracted and loaded, as JSON.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Run one cycle: extract what changed since the watermarks, transform, validate, load. Exit 1 on failure."""
    if ctx.invoked_subcommand is not None:
        _use_source(source_url)
        return
    _use_source(source_url)
    # on a terminal: the cycle's stage and rows so far (a first cycle of 1M orders took minutes behind a spinner),
    # from the start: the first command in a new home starts its services (about 12 s)
    with showing("totesys", starting="totesys: one cycle...", quiet=as_json or verbose):
        prepare(verbose)
        # after prepare: the flows import Prefect, which reads its environment once, at import
        from sluice.cli.runner import run_totesys

        report = run_totesys()
    if as_json:
        print_json(
            report.model_dump(
                include={"run_id", "dataset", "status", "state", "extracted", "loaded", "seconds", "error"}
            )
        )
    else:
        print_cycle(report)
    if report.status == "failed":
        raise typer.Exit(1)


def print_cycle(report: Any) -> None:
    extracted: dict[str, int] = getattr(report, "extracted", {}) or {}
    loaded: dict[str, int] = getattr(report, "loaded", {}) or {}
    if report.status == "skipped":
        console.print(
            f"[yellow]totesys[/]: {escape(str(report.error))} ({getattr(report, 'seconds', 0)} s)",
            highlight=False,
            soft_wrap=True,  # "another totesys cycle is running: …" is longer than 80 columns: one line when piped
        )
        return
    if extracted or loaded:
        from sluice.transforms.totesys import lineage  # pandas: kept off `sluice totesys --help`

        table = Table(title=f"totesys cycle: {report.status} in {getattr(report, 'seconds', 0)} s")
        table.add_column("warehouse table")
        table.add_column("rows loaded", justify="right")
        table.add_column("built from (rows extracted)")
        for name, rows, built_from in lineage(extracted, loaded):
            table.add_row(name, f"{rows:,}", built_from)
        console.print(table)
    if report.status == "failed":
        err.print(
            f"[bold red]error[/]{where(report)}: {escape(str(report.error))}", highlight=False, soft_wrap=True
        )
        if report.quarantine_uri and report.quarantine_uri not in str(report.error):  # said once, not twice
            err.print(f"  failures: {report.quarantine_uri}", highlight=False, soft_wrap=True, markup=False)


@totesys_app.command("seed-source")
def seed_source(
    from_dir: Annotated[
        Path | None,
        typer.Option(
            "--from",
            exists=True,  # a mistyped folder was "missing address.csv, counterparty.csv, …" (all eleven)
            file_okay=False,
            help="Folder with one CSV per OLTP table (address.csv …); default: generated.",
        ),
    ] = None,
    orders: Annotated[int, typer.Option(min=0, help="Sales orders to generate (without --from).")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed of the generator.")] = 20221103,
) -> None:
    """(Re)create the Totesys OLTP source: its real DDL, seeded from CSVs or the generator. Replaces its rows."""
    # kept off `sluice --help` (pandas, SQLAlchemy)
    from sluice.adapters.totesys_source import source_engine, source_url
    from sluice.adapters.warehouse import redact
    from sluice.fakes.totesys import generate, newest, seed_from_folder
    from sluice.fakes.totesys import seed as seed_tables

    # on a terminal: the file read or the table copied (a big folder was silent until its last line)
    first = f"reading {from_dir}" if from_dir is not None else f"generating {orders:,} sales orders"
    try:
        with showing("seed-source", starting=f"seed-source: {first}..."):
            url = source_url()
            engine = source_engine(url)
            if from_dir is not None:
                counts = seed_from_folder(engine, from_dir)
            else:
                counts = seed_tables(engine, generate(orders, random.Random(seed)))
            seeded, top_ids = newest(engine)
            engine.dispose()
    except SluiceError as exc:
        raise fail(str(exc)) from None
    total = sum(counts.values())
    console.print(
        f"seeded {redact(url)}: {total:,} rows in {len(counts)} tables", highlight=False, soft_wrap=True
    )
    for name, count in counts.items():
        console.print(f"  {name:<15} {count:>8,}", highlight=False)
    if (note := _behind_the_warehouse(seeded, top_ids)) is not None:
        err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)


def _behind_the_warehouse(seeded: dict[str, Any], top_ids: dict[str, int]) -> str | None:
    """``totesys.behind_watermarks`` against the warehouse, when it has loaded Totesys (else nothing to say).
    ``top_ids``: the source's greatest id per table; one above the greatest loaded is extracted by its id."""
    import sqlalchemy as sa

    from sluice.adapters.warehouse import get_engine
    from sluice.totesys import behind_watermarks, read_max_ids, read_watermarks

    try:
        engine = get_engine()
        inspector = sa.inspect(engine)
        if not inspector.has_table("totesys_watermarks", schema="sluice"):
            return None
        loaded = read_max_ids(engine) if inspector.has_table("totesys_max_ids", schema="sluice") else {}
        new_ids = {t for t, top in top_ids.items() if t in loaded and top > loaded[t]}
        return behind_watermarks(seeded, read_watermarks(engine), new_ids)
    except (sa.exc.SQLAlchemyError, SluiceError):  # the source is seeded either way: the note is a nicety
        return None
