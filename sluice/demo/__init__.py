"""``sluice demo``: generate, land and ingest sample files for every dataset; print what happened."""

from __future__ import annotations

import contextlib
import fcntl
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa
from rich import box
from rich.console import Console
from rich.table import Table

from sluice import datasets, registry
from sluice.adapters import storage
from sluice.adapters.warehouse import database_url, get_engine, redact
from sluice.cli.runner import run_ingest
from sluice.demo import data2bots, sertis, totesys
from sluice.errors import counted
from sluice.ingest import progress as rows_read
from sluice.report import IngestReport, failure_lines
from sluice.settings import get_settings

#: The other pipelines' demo steps, run after the ingests, in this order (each ``step(console) -> bool``).
EXTRA_STEPS: tuple[Callable[[Console], bool], ...] = (
    totesys.demo_step,
    data2bots.demo_step,
    sertis.demo_step,
)

SEED = 20191126


def land_samples(rows: int) -> list[tuple[registry.Dataset, str]]:
    """Write each dataset's generated sample into the landing zone (same content every time)."""
    landing = get_settings().zone("landing")
    landed = []
    for dataset in datasets.all_datasets():
        if dataset.generate is None or dataset.demo_key is None:
            continue
        data = dataset.generate(rows, random.Random(SEED))
        uri = storage.join(landing, dataset.demo_key)
        if not storage.exists(uri) or storage.read_bytes(uri) != data:
            storage.put_bytes(data, uri)
        landed.append((dataset, uri))
    return landed


#: Held by the demo running in a home (``one_demo_at_a_time``).
LOCK_FILE = "demo.lock"


@contextlib.contextmanager
def one_demo_at_a_time(console: Console, home: Path) -> Iterator[None]:
    """Run one demo at a time per home; a second one says it waits, then runs (finding the files loaded).

    Two demos at once (two terminals, a double-click) seeded the Totesys source twice and raced to create its
    database: the second died with a traceback.
    """
    home.mkdir(parents=True, exist_ok=True)
    with (home / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(
                f"another `sluice demo` is running in {home}; waiting for it to finish...", highlight=False
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # released when the file closes (also if this process dies)


def run_demo(console: Console, rows: int = 1000) -> int:
    """Run the whole demo; returns the exit code (0 when every run succeeded or was skipped)."""
    with one_demo_at_a_time(console, get_settings().home.resolve()):
        return _run_demo(console, rows)


def _run_demo(console: Console, rows: int) -> int:
    settings = get_settings()
    console.print(f"[bold]Sluice demo[/] — home {settings.home.resolve()}")
    with console.status("starting the warehouse..."):
        url = database_url()
    console.print(f"warehouse: {redact(url)}", highlight=False, soft_wrap=True)

    landed = land_samples(rows)
    reports: list[IngestReport] = []
    for dataset, uri in landed:
        what = f"ingesting {dataset.name} ({storage.basename(uri)})"
        with (
            console.status(f"{what}...") as status,
            rows_read(
                lambda _, rows, name=dataset.name: status.update(f"ingesting {name}: {rows:,} rows read...")
            ),
        ):
            reports.append(run_ingest(uri, dataset=dataset.name, mode="soft"))

    console.print(ingestions(reports))
    for r in reports:
        if r.status == "skipped":
            console.print(f"{r.dataset}: skipped, this exact file was loaded before (nothing loads twice)")
        if r.status == "failed":
            console.print(
                f"[red]{r.dataset} failed[/] at {r.state}: {r.error}", soft_wrap=True, highlight=False
            )
        if r.failures:
            console.print(
                f"{r.dataset}: {counted(r.rows_quarantined, 'row')} quarantined in", highlight=False
            )
            console.print(f"  {r.quarantine_uri}", soft_wrap=True, highlight=False)
            for line in failure_lines(r, 4):
                console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
    ok = all(r.status in ("success", "skipped") for r in reports)
    for step in EXTRA_STEPS:
        ok = step(console) and ok
    _print_counts(console)
    ui = _ui_url()
    if ui:
        console.print(
            f"\nPrefect UI, with the runs above (Runs page):  {ui}", soft_wrap=True, highlight=False
        )
    console.print(
        "Run ledger:  ./run sluice ledger      Warehouse URL:  ./run sluice db url      "
        "Local services:  ./run sluice services status | stop",
        highlight=False,
        soft_wrap=True,
    )
    return 0 if ok else 1


def _ui_url() -> str | None:
    """The UI of the Prefect server the runs went to (the home's local one unless PREFECT_API_URL is set)."""
    try:
        from prefect.settings import get_current_settings  # inside the try: no UI line if Prefect is unset

        url = get_current_settings().ui_url
    except Exception:
        return None
    return str(url).rstrip("/") if url else None


def ingestions(reports: list[IngestReport]) -> Table:
    """One row per ingest. It fits 80 columns (a terminal's default; piped, rich draws 80) with the built-in
    datasets' names whole: no vertical rules, and a status column only when a run failed (boxed, with it,
    `staging.shipment_deliveries` was cut in three); a skipped file has its line under the table."""
    table = Table(
        title="Ingestions", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )
    statuses = any(r.status == "failed" for r in reports)
    for column in ("dataset", "status", "read", "loaded", "quarantined", "table"):
        if column == "status" and not statuses:
            continue
        wraps = column in ("dataset", "table")
        right = column in ("read", "loaded", "quarantined")
        table.add_column(column, no_wrap=not wraps, overflow="fold", justify="right" if right else "left")
    for r in reports:
        counts = (f"{r.rows_read:,}", f"{r.rows_loaded:,}", f"{r.rows_quarantined:,}")
        table.add_row(r.dataset or "?", *([r.status] if statuses else []), *counts, r.table or "")
    return table


def _print_counts(console: Console) -> None:
    table = Table(title="Warehouse tables")
    table.add_column("table")
    table.add_column("rows", justify="right")
    query = sa.text(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'sluice') AND table_type = 'BASE TABLE' "
        "ORDER BY 1"
    )
    with get_engine().connect() as conn:
        for (name,) in conn.execute(query):
            schema, _, tname = name.partition(".")
            count = conn.execute(sa.text(f'SELECT count(*) FROM "{schema}"."{tname}"')).scalar_one()
            table.add_row(name, f"{count:,}")
    console.print(table)
