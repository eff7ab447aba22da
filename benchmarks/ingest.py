"""Ingest throughput and memory against the physical limit, in one run on one PostgreSQL.

    .venv/bin/python -m benchmarks.ingest [--rows 1000000] [--rows-big 10000000] [--sample 50000]

Prints rows/s of (1) raw COPY of the CSV into an equivalent table (the limit), (2) pandas.read_csv + to_sql on
a sample (the seeds' way, extrapolated and labelled so), (3) ``sluice ingest`` end to end in hard mode (parse,
transform, validate, load, ledger) in a child process, into an empty table (bulk path: the API index is built
after the COPY) and again with the index maintained row by row (a table already larger than the file), with the
seconds of each ledger state, (4) dlt into the same PostgreSQL if installed (``uv sync --extra bench``), each
with its ratio to the limit; peak RSS of ``sluice ingest`` at both sizes; and the wall time of a 10-row file end
to end. Uses its own ``SLUICE_HOME`` (``.sluice-bench``) unless set.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def raw_copy(engine, path: Path) -> float:
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_raw"))
        conn.execute(
            sa.text("CREATE TABLE bench_raw (username text, ts text, hours numeric(5,2), project text)")
        )
    start = time.perf_counter()
    with engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        with path.open("rb") as handle:
            cursor.copy_expert("COPY bench_raw FROM STDIN WITH (FORMAT csv, HEADER true)", handle)
    return time.perf_counter() - start


def copy_into_target_shape(engine) -> float:
    """COPY the rows Sluice just loaded, already typed and in binary, into a clone of the target (identity, API
    index built after the COPY, as Sluice's bulk path does): the floor of loading *this table*, with no parsing,
    transforming or validating at all."""
    import io

    import sqlalchemy as sa

    from sluice.loading import defer_indexes, rebuild_indexes

    columns = 'username, project, hours, "timestamp", _ingestion_id, _source_row'
    buffer = io.BytesIO()
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_target"))
        conn.execute(sa.text("CREATE TABLE bench_target (LIKE tm.daily_checkins INCLUDING ALL)"))
        indexes = defer_indexes(conn, "bench_target", 1)  # Sluice's bulk path: dropped here, built after
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.copy_expert(
            f"COPY (SELECT {columns} FROM tm.daily_checkins) TO STDOUT WITH (FORMAT binary)", buffer
        )
    buffer.seek(0)
    start = time.perf_counter()
    with engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.copy_expert(f"COPY bench_target ({columns}) FROM STDIN WITH (FORMAT binary)", buffer)
        rebuild_indexes(conn, indexes)
    seconds = time.perf_counter() - start
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE bench_target"))
    return seconds


def to_sql(engine, path: Path, sample: int) -> float:
    import pandas as pd

    frame = pd.read_csv(path, nrows=sample)
    start = time.perf_counter()
    frame.to_sql("bench_to_sql", engine, if_exists="replace", index=False)
    return time.perf_counter() - start


def dlt_run(url: str, path: Path) -> float | None:
    try:
        import dlt
        import pandas as pd
    except ImportError:
        return None
    pipeline = dlt.pipeline(
        "bench", destination=dlt.destinations.postgres(url.replace("+psycopg2", "")), dataset_name="bench_dlt"
    )
    start = time.perf_counter()
    for chunk in pd.read_csv(path, chunksize=200_000, dtype=str):
        pipeline.run(chunk, table_name="checkins", loader_file_format="csv")
    return time.perf_counter() - start


def child(path: str, warm: str) -> None:
    """In one process: a 10-row ingest (pays Prefect's start-up), another 10-row one, then the file, timed."""
    import resource

    from sluice.runtime import prepare

    prepare()
    from sluice.runner import run_ingest

    timings = {}
    for label, source in (("cold_10", warm), ("warm_10", warm), ("file", path)):
        started = time.perf_counter()
        report = run_ingest(source, dataset="dailycheckins", mode="hard")
        timings[label] = time.perf_counter() - started
        if report.status not in ("success", "skipped"):
            raise SystemExit(f"{source}: {report.status}: {report.error}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({**timings, "rows": report.rows_loaded, "rss_mb": rss_mb, "states": states(report.run_id)})
    )


def states(run_id: str | None) -> dict[str, float]:
    """Seconds spent in each ledger state of one run (where the time goes)."""
    import sqlalchemy as sa

    from sluice.warehouse import get_engine

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


def run_child(path: Path, warm: Path, **env: str) -> dict:
    fresh_target(get_engine_for_bench())
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.ingest", "--child", str(path), "--warm", str(warm)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def get_engine_for_bench():
    from sluice.warehouse import get_engine

    return get_engine()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--rows-big", type=int, default=0, help="also measure RSS at this size (e.g. 10000000)"
    )
    parser.add_argument("--sample", type=int, default=50_000, help="rows for the to_sql baseline")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--warm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("SLUICE_HOME", str(ROOT / ".sluice-bench"))
    if args.child:
        child(args.child, args.warm)
        return

    from sluice.warehouse import database_url, get_engine

    url = database_url()
    engine = get_engine()
    data = Path(os.environ["SLUICE_HOME"]) / "data"
    data.mkdir(parents=True, exist_ok=True)
    small = data / "dailycheckins-10.csv"
    generate(small, 10)
    path = data / f"dailycheckins-{args.rows}.csv"
    if not path.exists():
        print(f"generating {args.rows:,} rows ...", flush=True)
        generate(path, args.rows)
    n = args.rows

    limit = n / raw_copy(engine, path)
    seeds = args.sample / to_sql(engine, path, args.sample)
    print("sluice ingest (child process) ...", flush=True)
    sluice = run_child(path, small)
    sluice_rate = n / sluice["file"]
    print("sluice ingest, index maintained row by row (child process) ...", flush=True)
    steady = run_child(path, small, SLUICE_BULK_INDEX_ROWS="0")
    steady_rate = n / steady["file"]
    shaped = n / copy_into_target_shape(engine)
    dlt_seconds = dlt_run(url, path)

    print(f"\nrows: {n:,} (file {path.stat().st_size / 1e6:.0f} MB)")
    print(f"{'method':42} {'rows/s':>12} {'x limit':>8}")
    print(f"{'1. raw COPY of the CSV (the limit)':42} {limit:12,.0f} {1:8.2f}")
    print(f"{'1b. binary COPY of typed rows, target shape':42} {shaped:12,.0f} {shaped / limit:8.2f}")
    print(f"{'    (identity PK, API index built after)':42}")
    print(f"{'2. read_csv + to_sql (sample, extrapolated)':42} {seeds:12,.0f} {seeds / limit:8.2f}")
    print(f"{'3. sluice ingest, hard mode, end to end':42} {sluice_rate:12,.0f} {sluice_rate / limit:8.2f}")
    print(f"{'    (empty table: index built after COPY)':42}")
    print(
        f"{'3b. sluice ingest, index kept up row by row':42} {steady_rate:12,.0f} {steady_rate / limit:8.2f}"
    )
    if dlt_seconds is None:
        print(f"{'4. dlt pipeline.run (csv)':42} {'not installed (uv sync --extra bench)':>21}")
    else:
        print(f"{'4. dlt pipeline.run (csv)':42} {n / dlt_seconds:12,.0f} {n / dlt_seconds / limit:8.2f}")
    print(
        f"sluice vs to_sql: {sluice_rate / seeds:.1f}x; sluice vs COPY into the target shape: {sluice_rate / shaped:.2f}x"
    )
    print(f"sluice peak RSS at {n:,} rows: {sluice['rss_mb']:.0f} MB")
    for label, result in (("3", sluice), ("3b", steady)):
        spent = ", ".join(f"{state} {seconds:.2f} s" for state, seconds in result["states"].items())
        overhead = result["file"] - sum(result["states"].values())
        print(f"where {label}'s {result['file']:.2f} s went: {spent}; Prefect and ledger {overhead:.2f} s")
    print(
        f"10-row file end to end: {sluice['warm_10']:.2f} s in a warm process; "
        f"{sluice['cold_10']:.2f} s in a fresh one (starting Prefect's ephemeral API server dominates)"
    )
    if args.rows_big:
        big = data / f"dailycheckins-{args.rows_big}.csv"
        if not big.exists():
            print(f"generating {args.rows_big:,} rows ...", flush=True)
            generate(big, args.rows_big)
        result = run_child(big, small)
        print(
            f"sluice at {args.rows_big:,} rows: {args.rows_big / result['file']:,.0f} rows/s, "
            f"peak RSS {result['rss_mb']:.0f} MB ({result['rss_mb'] / sluice['rss_mb']:.2f}x the {n:,}-row figure)"
        )


if __name__ == "__main__":
    main()
