"""Ingest throughput and memory against the table's own COPY floor and dlt, in one run on one PostgreSQL.

    .venv/bin/python -m benchmarks.ingest [--rows 2000000] [--rows-big 10000000] [--skip-dlt]

One run measures, on the same rows and the same PostgreSQL (issue 17):

1. the floor: ``COPY`` of the same rows, already normalised as CSV (lineage columns included), into a table
   of the target's shape (identity PK, ``(username, timestamp)`` index built after), in one transaction;
2. dlt 1.x as a whole process: pyarrow reads the normalised CSV typed, ``pipeline.run(...,
   loader_file_format="csv")`` into the same PostgreSQL (after a warm-up run);
3. ``sluice ingest --mode hard`` as a whole process (fresh interpreter, CLI, flow, ledger), talking to a Prefect
   server this benchmark starts for the run (so the figure is the engine, not Prefect's ephemeral-server
   start-up), after a warm-up run;
4. ``sluice ingest`` in a warm process (the flow called in-process), with the seconds of every ledger state, the
   busy seconds of read / transform / validate inside the fused pass, and peak RSS;
5. the encoders side by side on the real load path (advisory lock, COPY, index built after, registry row, one
   transaction): ``sluice.pgbinary`` binary COPY, CSV COPY, and ADBC's ``cursor.adbc_ingest`` (on its own
   connection: ADBC cannot join psycopg2's transaction, so lock and registry row go through ADBC too);
6. peak RSS of an in-process run at ``--rows-big`` rows (flat in file size?).

It prints the ratios the issue sets targets for: sluice whole process vs dlt whole process (target >= 2.0x) and
vs the floor (target >= 0.6x). Uses its own ``SLUICE_HOME`` (``.sluice-bench``) unless set.

Over 350 lines: six measurements that must share one run, one data set and one PostgreSQL to be comparable (the
floor, dlt, Sluice three ways, three encoders), each with its own set-up; not imported by Sluice.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY_COLUMNS = ["username", "project", "hours", "timestamp", "_ingestion_id", "_source_row"]
BENCH_ID = "0d7b6b1c-5c55-4f8e-9b7e-6c1a5a2f1e17"
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its descendants, live or already reaped (from /proc)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (
                int(fields[1]),
                sum(int(f) for f in fields[11:13]),
                sum(int(f) for f in fields[13:15]),
            )
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid not in stats:
            continue
        _, own, reaped = stats[pid]
        total += own + reaped
        todo.extend(child for child, (parent, _, _) in stats.items() if parent == pid)
    return total / TICK


def pg_cpu() -> float | None:
    """CPU seconds used so far by the embedded PostgreSQL (postmaster, backends, parallel workers, WAL)."""
    from sluice.adapters.warehouse import embedded_pgdata

    pgdata = embedded_pgdata()
    if pgdata is None or not (pgdata / "postmaster.pid").exists():
        return None
    return tree_cpu(int((pgdata / "postmaster.pid").read_text().split()[0]))


class Cpu:
    """CPU seconds spent during a ``with`` block: this process (or its waited-for children), PostgreSQL."""

    def __init__(self, children: bool = False, server: int | None = None) -> None:
        import resource

        self.who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
        self.server = server

    def _client(self) -> float:
        import resource

        usage = resource.getrusage(self.who)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self) -> Cpu:
        self.start = time.perf_counter()
        self.c0, self.p0 = self._client(), pg_cpu()
        self.s0 = tree_cpu(self.server) if self.server else None
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.start
        self.client = self._client() - self.c0
        p1 = pg_cpu()
        self.pg = p1 - self.p0 if p1 is not None and self.p0 is not None else None
        self.prefect = tree_cpu(self.server) - self.s0 if self.server and self.s0 is not None else None

    def as_dict(self) -> dict[str, float | None]:
        return {"wall": self.wall, "client": self.client, "pg": self.pg, "prefect": self.prefect}


def generate(path: Path, rows: int) -> None:
    """A check-in-like file in the three timestamp formats (valid rows only: hard mode must pass)."""
    from sluice.transforms.tm import RUSSIAN_MONTHS

    months = {v: k for k, v in RUSSIAN_MONTHS.items()}
    rng = random.Random(7)
    users = [f"user{i:03d}" for i in range(300)]
    projects = [f"project-{i:02d}" for i in range(40)]
    block = []
    for i in range(10_000):
        d, h, m = 1 + i % 28, i % 24, i % 60
        style = i % 10
        if style < 7:
            stamp = f"2019-{1 + i % 12:02d}-{d:02d} {h:02d}:{m:02d}:{i % 60:02d}.{i:04d} UTC"
        elif style < 9:
            stamp = f"{1 + i % 12:02d}/{d:02d}/2019 {1 + h % 12:02d}:{m:02d} {'AM' if h < 12 else 'PM'}"
        else:
            stamp = f"{d} {months[1 + i % 12]} 2019 {h:02d}:{m:02d}"
        block.append(
            f"{rng.choice(users)},{stamp},{rng.choice([0.5, 1.0, 1.5, 2.0, 8.0])},{rng.choice(projects)}\n"
        )
    text = "".join(block)
    with path.open("w", encoding="utf-8") as out:
        out.write("user,timestamp,hours,project\n")
        for _ in range(rows // 10_000):
            out.write(text)
        out.write("".join(block[: rows % 10_000]))


def normalise(source: Path, target: Path) -> None:
    """The same rows as Sluice loads them (trimmed, typed, UTC, lineage), as CSV with a header."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from sluice import ingest
    from sluice.datasets import get_dataset

    dataset = get_dataset("dailycheckins")
    with target.open("wb") as out:
        first = True
        for raw in ingest.read_chunks(source, dataset, str(source), 200_000, reader="arrow"):
            frame = dataset.transform(raw)
            frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)  # naive UTC text, as Sluice's CSV
            frame["_ingestion_id"] = BENCH_ID
            frame["_source_row"] = raw.index.to_numpy()
            table = pa.Table.from_pandas(frame[COPY_COLUMNS], preserve_index=False)
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=first))
            first = False


def clone_target(conn, name: str) -> list[str]:
    """A fresh empty table shaped like ``tm.daily_checkins``; its non-unique indexes dropped (to build after)."""
    import sqlalchemy as sa

    from sluice.loading import defer_indexes

    conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    conn.execute(sa.text(f"CREATE TABLE {name} (LIKE tm.daily_checkins INCLUDING ALL)"))
    return defer_indexes(conn, name, 1)


def read_normalised(normalised: Path):
    """The normalised CSV, typed by pyarrow (timestamps are naive UTC text: made UTC-aware)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        normalised,
        convert_options=pacsv.ConvertOptions(
            column_types={
                "username": pa.string(),
                "project": pa.string(),
                "hours": pa.float64(),
                "timestamp": pa.timestamp("us"),
                "_ingestion_id": pa.string(),
                "_source_row": pa.int64(),
            }
        ),
    )
    index = table.schema.get_field_index("timestamp")
    return table.set_column(index, "timestamp", table["timestamp"].cast(pa.timestamp("us", tz="UTC")))


def floor(engine, normalised: Path) -> dict:
    """CSV COPY of the normalised rows into the target's shape, index built after, one transaction."""
    from sluice.loading import rebuild_indexes

    with engine.begin() as conn:
        indexes = clone_target(conn, "bench_floor")
    columns = ", ".join(f'"{c}"' for c in COPY_COLUMNS)
    with Cpu() as cpu, engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("SET LOCAL TIME ZONE 'UTC'")
        with normalised.open("rb") as handle:
            cursor.copy_expert(
                f"COPY bench_floor ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)", handle
            )
        rebuild_indexes(conn, indexes)
    return cpu.as_dict()


def encoders(engine, url: str, normalised: Path) -> dict[str, dict]:
    """The same typed rows through each encoder on the real load path: advisory lock, COPY into the target's
    shape, index built after, a registry row, commit. pgbinary and CSV share psycopg2's transaction (as the
    load does); ADBC runs the whole transaction on its own connection, the only way it can hold the lock."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import sqlalchemy as sa

    from sluice.adapters.warehouse import copy_frames
    from sluice.loading import rebuild_indexes

    table = read_normalised(normalised)
    chunks = [table.slice(i, 200_000) for i in range(0, table.num_rows, 200_000)]
    frames = [c.to_pandas() for c in chunks]
    results: dict[str, dict] = {}
    for label, binary in (("pgbinary (binary COPY, psycopg2)", True), ("CSV COPY (pyarrow writer)", False)):
        with engine.begin() as conn:
            indexes = clone_target(conn, "bench_enc")
        with Cpu() as cpu, engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('bench.enc'))"))
            copy_frames(conn, "bench_enc", COPY_COLUMNS, iter(frames), binary=binary)
            rebuild_indexes(conn, indexes)
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_registry (k text)"))
            conn.execute(sa.text("INSERT INTO bench_registry VALUES ('x')"))
        results[label] = cpu.as_dict()
    del frames
    try:
        import adbc_driver_postgresql.dbapi as adbc
    except ImportError:
        return results
    u = sa.make_url(url)
    host = u.query.get("host")
    uri = (
        f"postgresql://{u.username}@/{u.database}?host={host}"
        if host
        else u.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    typed = [
        pa.table(
            {
                "username": c["username"],
                "project": c["project"],
                "hours": pc.cast(c["hours"], pa.decimal128(18, 12)),  # float64 -> numeric: not in ADBC
                "timestamp": c["timestamp"],
                "_ingestion_id": pa.ExtensionArray.from_storage(
                    pa.uuid(), pa.array([uuid.UUID(BENCH_ID).bytes] * c.num_rows, pa.binary(16))
                ),
                "_source_row": c["_source_row"],
            }
        )
        for c in chunks
    ]
    with engine.begin() as conn:
        indexes = clone_target(conn, "bench_enc")
    cpu = Cpu().__enter__()
    connection = adbc.connect(uri)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('bench.enc'))")
        cursor.fetchall()
        for part in typed:
            cursor.adbc_ingest("bench_enc", part, mode="append")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for definition in indexes:
            cursor.execute(definition)
        cursor.execute("INSERT INTO bench_registry VALUES ('x')")
        connection.commit()
    finally:
        connection.close()
    cpu.__exit__()
    results["ADBC adbc_ingest (own connection)"] = cpu.as_dict()
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM bench_enc")).scalar()
        same = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT username, project, hours, timestamp, _source_row FROM bench_enc "
                "EXCEPT SELECT username, project, hours, timestamp, _source_row FROM bench_floor) d"
            )
        ).scalar()
        conn.execute(sa.text("DROP TABLE bench_enc"))
    assert rows == table.num_rows and same == 0, f"ADBC loaded {rows} rows, {same} differ from the floor's"
    del typed, pd
    return results


# --- dlt ------------------------------------------------------------------------------------------------


def dlt_child(normalised: str, url: str, pipelines: str) -> None:
    """In its own process: read the normalised CSV typed with pyarrow, load it with dlt (CSV loader files)."""
    started = time.perf_counter()
    import dlt
    import sqlalchemy as sa

    u = sa.make_url(url)
    credentials = {
        "database": u.database,
        "username": u.username,
        "password": u.password or "",
        "host": u.host or "localhost",  # the embedded server's Unix socket is in query.host (FACTS.md)
        "port": u.port or 5432,
        "query": dict(u.query),
    }
    table = read_normalised(normalised)
    pipeline = dlt.pipeline(
        "bench",
        destination=dlt.destinations.postgres(credentials=credentials),
        dataset_name="bench_dlt",
        pipelines_dir=pipelines,
    )
    info = pipeline.run(table, table_name="checkins", loader_file_format="csv", write_disposition="replace")
    info.raise_on_failed_jobs()
    print(json.dumps({"seconds_in_process": time.perf_counter() - started}))


def dlt_whole_process(normalised: Path, url: str, repeat: int) -> dict | None:
    try:
        import dlt  # noqa: F401
    except ImportError:
        return None
    with tempfile.TemporaryDirectory(prefix="sluice-bench-dlt-") as pipelines:
        runs = []
        for _ in range(1 + repeat):  # the first run is the warm-up (schema, dlt's state tables)
            with Cpu(children=True) as cpu:
                subprocess.run(
                    [sys.executable, "-m", "benchmarks.ingest", "--dlt-child", str(normalised), "--url", url],
                    cwd=ROOT,
                    env={**os.environ, "BENCH_DLT_PIPELINES": pipelines, "RUNTIME__LOG_LEVEL": "WARNING"},
                    check=True,
                    capture_output=True,
                    text=True,
                )
            runs.append(cpu.as_dict())
    return min(runs[1:], key=lambda m: m["wall"])


# --- sluice -----------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's own peak RSS: ``VmHWM`` (reset at exec). ``ru_maxrss`` is not: on Linux it keeps the peak of
    the process that forked this one, so it reported the benchmark's own peak (672 MB at 2M and at 10M rows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(path: str, warm: str) -> None:
    """In one process: a 10-row ingest (pays Prefect's start-up), then the file, timed, with busy seconds."""
    import logging

    from sluice.runtime import prepare

    prepare()
    try:
        from sluice.cli.runner import run_ingest
    except ModuleNotFoundError:  # a --before checkout from before the entry points moved into sluice.cli
        from sluice.runner import run_ingest  # type: ignore[no-redef]

    busy: dict[str, float] = {}

    class Busy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            busy.update(getattr(record, "stage_seconds", {}))

    handler = Busy(logging.INFO)
    logging.getLogger("tasks.ingest").addHandler(handler)
    logging.getLogger("tasks.ingest").setLevel(logging.INFO)
    timings = {}
    for label, source in (("warm_10", warm), ("file", path)):
        with Cpu() as cpu:
            report = run_ingest(source, dataset="dailycheckins", mode="hard", force=True)
        timings[label] = cpu.wall
        if report.status not in ("success", "skipped"):
            raise SystemExit(f"{source}: {report.status}: {report.error}")
    rss_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                **timings,
                "rows": report.rows_loaded,
                "rss_mb": rss_mb,
                "states": states(report.run_id),
                "busy": busy,
                "cpu": cpu.as_dict(),
            }
        )
    )


def states(run_id: str | None) -> dict[str, float]:
    """Seconds of each ledger state of one run (transform/validate/load overlap in the fused pass)."""
    import sqlalchemy as sa

    from sluice.adapters.warehouse import get_engine

    with get_engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT state, extract(epoch FROM finished_at - started_at) FROM sluice.run_ledger "
                "WHERE ingestion_id = :id AND finished_at IS NOT NULL ORDER BY seq"
            ),
            {"id": run_id},
        ).all()
    return {state: float(seconds) for state, seconds in rows}


def fresh_target(engine) -> None:
    """A new, empty check-in table (today's shape) and file registry: every measured run is a first load."""
    import sqlalchemy as sa

    from sluice.datasets.tm import DAILY_CHECKINS
    from sluice.ledger import ensure_bookkeeping
    from sluice.loading import ensure_target

    ensure_bookkeeping(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS tm.daily_checkins"))
        conn.execute(sa.text("TRUNCATE sluice.file_loads"))
    ensure_target(engine, DAILY_CHECKINS)
    with engine.begin() as conn:
        conn.execute(sa.text("CHECKPOINT"))  # no checkpoint left over from the previous run lands in this one


def in_process(engine, path: Path, warm: Path, code: Path = ROOT) -> dict:
    """The ``child`` of this file in its own process, importing Sluice from ``code`` (this checkout or --before)."""
    fresh_target(engine)
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(path), "--warm", str(warm)],
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def whole_process(engine, path: Path, warm: Path, server: int, code: Path = ROOT) -> dict:
    """``sluice ingest --mode hard`` in a fresh process, spawn to exit (after a warm-up of the same command).

    ``code``: another checkout of Sluice to run instead (``--before``), with this environment's packages."""
    command = [sys.executable, "-m", "sluice.cli", "ingest", "--dataset", "dailycheckins", "--mode", "hard"]
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run([*command, str(warm), "--force"], cwd=code, env=env, check=True, capture_output=True)
    fresh_target(engine)
    with Cpu(children=True, server=server) as cpu:
        subprocess.run([*command, str(path)], cwd=code, env=env, check=True, capture_output=True)
    return cpu.as_dict()


@contextlib.contextmanager
def prefect_server():
    """A Prefect server of our own for the run (Sluice's managed server, in a temp home), stopped at the end."""
    from sluice import services

    home = Path(tempfile.mkdtemp(prefix="sluice-bench-prefect-"))
    previous = os.environ.get("PREFECT_API_URL")
    try:
        os.environ["PREFECT_API_URL"] = services.ensure_prefect_server(home)
        server = services.running_prefect_server(home)
        if server is None:
            raise SystemExit("the benchmark's Prefect server stopped answering")
        yield server.pid
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        services.stop_prefect_server(home)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument(
        "--rows-big",
        type=int,
        default=0,
        help="also measure peak RSS at this many rows, e.g. 8000000 (default 0: skipped)",
    )
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=2, help="whole-process runs of each side (best is kept)"
    )
    parser.add_argument(
        "--before", type=Path, help="a checkout of an earlier Sluice: its whole-process time in the same run"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--warm", help=argparse.SUPPRESS)
    parser.add_argument("--dlt-child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("SLUICE_HOME", str(ROOT / ".sluice-bench"))
    # Child processes write and reuse bytecode, as any installed Python does (this machine's shell sets
    # PYTHONDONTWRITEBYTECODE, which makes every fresh process compile Prefect & co. again: ~4 s).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.child:
        child(args.child, args.warm)
        return
    if args.dlt_child:
        dlt_child(args.dlt_child, args.url, os.environ["BENCH_DLT_PIPELINES"])
        return

    from sluice.adapters.warehouse import database_url, get_engine

    url = database_url()
    engine = get_engine()
    data = Path(os.environ["SLUICE_HOME"]) / "data"
    data.mkdir(parents=True, exist_ok=True)
    small = data / "dailycheckins-10.csv"
    generate(small, 10)
    n = args.rows
    path = data / f"dailycheckins-{n}.csv"
    normalised = data / f"normalised-{n}.csv"
    if not path.exists():
        print(f"generating {n:,} rows ...", flush=True)
        generate(path, n)
    fresh_target(engine)
    if not normalised.exists():
        normalise(path, normalised)

    print("floor: COPY of the normalised CSV into the target's shape ...", flush=True)
    floors = [floor(engine, normalised)]  # measured again before each whole-process pair: same contention
    print("encoders on the load path ...", flush=True)
    encoder_m = encoders(engine, url, normalised)
    dlt_m = None
    if not args.skip_dlt:
        print("dlt, whole process ...", flush=True)
        dlt_m = dlt_whole_process(normalised, url, args.repeat)
    with prefect_server() as server:
        print(
            f"sluice ingest, whole process (Prefect server of this run: {os.environ['PREFECT_API_URL']}) ..."
        )
        # Interleaved and repeated (best of --repeat): the other load on a shared machine moves wall times.
        runs: dict[str, list[dict]] = {"now": [], "before": []}
        for _ in range(args.repeat):
            floors.append(floor(engine, normalised))
            runs["now"].append(whole_process(engine, path, small, server))
            if args.before:
                print(f"sluice ingest from {args.before}, whole process ...", flush=True)
                runs["before"].append(whole_process(engine, path, small, server, args.before.resolve()))
        whole_m = min(runs["now"], key=lambda m: m["wall"])
        floor_m = min(floors, key=lambda m: m["wall"])
        before_m = min(runs["before"], key=lambda m: m["wall"]) if runs["before"] else None
        print("sluice ingest, in a warm process ...", flush=True)
        warm = in_process(engine, path, small)
        warm_before = None
        if args.before:
            print(f"sluice ingest from {args.before}, in a warm process ...", flush=True)
            warm_before = in_process(engine, path, small, args.before.resolve())
        big = None
        if args.rows_big:
            big_path = data / f"dailycheckins-{args.rows_big}.csv"
            if not big_path.exists():
                print(f"generating {args.rows_big:,} rows ...", flush=True)
                generate(big_path, args.rows_big)
            print(f"sluice ingest at {args.rows_big:,} rows, in a warm process ...", flush=True)
            big = in_process(engine, big_path, small)
    report(args, n, path, floor_m, encoder_m, dlt_m, whole_m, before_m, warm, warm_before, big)


def report(args, n, path, floor_m, encoder_m, dlt_m, whole_m, before_m, warm, warm_before, big) -> None:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def row(label: str, m: dict | None, note: str = "") -> None:
        if m is None:
            print(f"| {label} | - | - | - | - | - | - | {note} |")
            return
        print(
            f"| {label} | {m['wall']:.2f} | {n / m['wall']:,.0f} | {floor_m['wall'] / m['wall']:.2f} | "
            f"{cell(m['client'])} | {cell(m['pg'])} | {cell(m.get('prefect'))} | {note} |"
        )

    print(
        f"\n{n:,} check-ins ({path.stat().st_size / 1e6:.0f} MB), one run, same PostgreSQL; load average now "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        "| what | wall s | rows/s | x floor | client CPU s | PostgreSQL CPU s | Prefect server CPU s | note |"
    )
    print("|---|---|---|---|---|---|---|---|")
    row(
        "floor: CSV COPY of normalised rows, target shape, index after",
        floor_m,
        f"best of {1 + args.repeat}, interleaved",
    )
    row("dlt, whole process (pyarrow typed read, csv loader)", dlt_m, f"warm-up, then best of {args.repeat}")
    row("sluice ingest --mode hard, whole process", whole_m, f"own Prefect server; best of {args.repeat}")
    if args.before:
        row(f"before ({args.before}), whole process", before_m, f"interleaved; best of {args.repeat}")
    row("sluice ingest, in a warm process", warm["cpu"], f"peak RSS {warm['rss_mb']:.0f} MB")
    if warm_before is not None:
        row(
            f"before ({args.before}), in a warm process",
            warm_before["cpu"],
            f"peak RSS {warm_before['rss_mb']:.0f} MB",
        )
    for label, m in encoder_m.items():
        row(f"encoder: {label}", m, "lock + COPY + index after + registry row")
    print()
    whole, fl = whole_m["wall"], floor_m["wall"]
    if dlt_m:
        print(f"sluice whole process vs dlt whole process: {dlt_m['wall'] / whole:.2f}x (target >= 2.0)")
        total = {k: m["client"] + (m["pg"] or 0) for k, m in (("sluice", whole_m), ("dlt", dlt_m))}
        print(
            f"  CPU-seconds (client + PostgreSQL): sluice {total['sluice']:.2f}, dlt {total['dlt']:.2f} "
            f"({total['dlt'] / total['sluice']:.2f}x): the contention-proof comparison"
        )
    if before_m:
        print(f"sluice whole process vs before: {before_m['wall'] / whole:.2f}x")
    if warm_before is not None:
        now, then = warm["cpu"], warm_before["cpu"]
        print(
            f"sluice in a warm process vs before: {then['wall'] / now['wall']:.2f}x wall; client CPU "
            f"{then['client']:.2f} -> {now['client']:.2f} s; ledger states before: "
            + ", ".join(f"{state} {seconds:.2f} s" for state, seconds in warm_before["states"].items())
        )
    print(f"sluice whole process vs the floor: {fl / whole:.2f}x (target >= 0.6)")
    print(f"sluice in a warm process vs the floor: {fl / warm['cpu']['wall']:.2f}x")
    spent = ", ".join(f"{state} {seconds:.2f} s" for state, seconds in warm["states"].items())
    print(f"ledger states of the warm run (wall clock; transform/validate/load overlap): {spent}")
    busy = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in warm["busy"].items())
    print(f"busy seconds of the fused pass's producer thread (while COPY runs): {busy}")
    print(
        f"fixed cost of a fresh process (10-row file, warm disk, running Prefect server): "
        f"{warm['warm_10']:.2f} s in-process flow; the whole-process row pays interpreter start and imports too"
    )
    print(f"peak RSS at {n:,} rows: {warm['rss_mb']:.0f} MB")
    if big is not None:
        print(
            f"peak RSS at {args.rows_big:,} rows: {big['rss_mb']:.0f} MB "
            f"({big['rss_mb'] / warm['rss_mb']:.2f}x the {n:,}-row figure); "
            f"{args.rows_big / big['file']:,.0f} rows/s in a warm process"
        )


if __name__ == "__main__":
    main()
