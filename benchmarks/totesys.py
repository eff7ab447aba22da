"""Totesys load before → after, in one run: the same star schema loaded by this checkout and by another one.

    .venv/bin/python -m benchmarks.totesys [--orders 50000] [--repeat 3] [--before <checkout of an earlier Sluice>]

The OLTP is seeded once (``--orders`` generated sales orders, half as many purchase orders, a transaction and a
payment each). Each side runs in its own process, importing Sluice from its checkout (``--before``: e.g.
``git archive <commit> | tar -x -C /tmp/before``), interleaved ``--repeat`` times: it empties the warehouse's
star schema and the cycle's bookkeeping, extracts every row, builds the star schema (untimed), then times
``sluice.totesys.load`` (one transaction: every table's upsert plus the watermarks, recent versions and lookups).
Reported: wall seconds, client CPU and PostgreSQL CPU seconds (ratios within one run hold under contention; wall
times do not), and how many COPY chunks went binary and how many as CSV. Uses ``.sluice-bench`` unless
``SLUICE_HOME`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]


def child() -> None:
    """One side's load, in this process, with Sluice imported from the checkout on PYTHONPATH."""
    import importlib.util

    import pyarrow.compute  # noqa: F401  imported before the clock starts, as a warm process has it
    import sqlalchemy as sa

    from sluice import pgbinary, totesys
    from sluice.adapters.totesys_source import source_engine, source_url
    from sluice.adapters.warehouse import get_engine
    from sluice.settings import get_settings

    settings = get_settings()
    engine = get_engine(settings)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS warehouse CASCADE"))
        for table in ("totesys_watermarks", "totesys_recent", "totesys_lookups", "totesys_max_ids"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS sluice.{table}"))
    totesys.ensure_warehouse(engine)
    source = source_engine(source_url(settings))
    extracted = totesys.extract(source, engine, settings, datetime.now(UTC), uuid.uuid4())
    star = totesys.build(extracted, totesys.read_lookups(engine)).tables
    with engine.begin() as conn:
        conn.execute(sa.text("CHECKPOINT"))  # no checkpoint left over from the drop lands in the timed load

    formats = {"binary": 0, "csv": 0}
    encode = pgbinary.encode

    def counted(frame, columns):  # copy_frames looks pgbinary.encode up on every chunk
        payload = encode(frame, columns)
        formats["binary" if payload is not None else "csv"] += 1
        return payload

    pgbinary.encode = counted
    # This checkout's CPU meter (the side's own benchmarks/ may predate it): loaded by path, not as a package.
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "benchmarks" / "ingest.py")
    assert spec is not None and spec.loader is not None
    meter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(meter)
    with meter.Cpu() as cpu:
        loaded = totesys.load(engine, star, extracted, settings)
    print(
        json.dumps(
            {
                **cpu.as_dict(),
                **formats,
                "rows": sum(len(f) for f in star.values()),
                "written": sum(loaded.values()),
                "source_rows": extracted.rows,
            }
        )
    )


def side(code: Path) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child"],
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"the load from {code} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=50_000, help="generated sales orders in the OLTP")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side, interleaved (best is kept)")
    parser.add_argument("--before", type=Path, help="a checkout of an earlier Sluice, loaded in the same run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("SLUICE_HOME", str(ROOT / ".sluice-bench"))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # children reuse bytecode, as an installed Python does
    if args.child:
        child()
        return

    from sluice import services
    from sluice.adapters.totesys_source import source_engine, source_url
    from sluice.adapters.warehouse import embedded_pgdata
    from sluice.settings import get_settings

    pgdata = embedded_pgdata()
    ours = pgdata is not None and services.running_postgres(pgdata) is None
    try:
        measure(args, source_engine(source_url(get_settings())))
    finally:
        if ours:  # started by this run: stopped by it (one already running is left as it was)
            services.stop_postgres(pgdata)


def measure(args: argparse.Namespace, source: sa.Engine) -> None:
    from sluice.fakes.totesys import generate, seed

    print(f"seeding the OLTP with {args.orders:,} sales orders ...", flush=True)
    seeded = seed(source, generate(args.orders, random.Random(17)))
    print(f"  {sum(seeded.values()):,} source rows in {len(seeded)} tables", flush=True)
    sides = {"now": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for i in range(args.repeat):
        for name, code in sides.items():
            print(f"load {i + 1}/{args.repeat}: {name} ({code}) ...", flush=True)
            runs[name].append(side(code))
    best = {name: min(results, key=lambda r: r["wall"]) for name, results in runs.items()}
    print()
    print(
        "| side | wall s | client CPU s | PostgreSQL CPU s | COPY chunks binary / CSV | star rows | rows written |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, m in best.items():
        print(
            f"| {name} | {m['wall']:.2f} | {m['client']:.2f} | {m['pg']:.2f} | {m['binary']} / {m['csv']} "
            f"| {m['rows']:,} | {m['written']:,} |"
        )
    if "before" in best:
        now, then = best["now"], best["before"]
        print(
            f"\nnow vs before (best of {args.repeat}): wall {then['wall'] / now['wall']:.2f}x, client CPU "
            f"{then['client'] / now['client']:.2f}x, PostgreSQL CPU {then['pg'] / now['pg']:.2f}x "
            "(> 1: now is faster)"
        )
        print("every run (wall / client / pg):")
        for name, results in runs.items():
            print(
                f"  {name}: " + ", ".join(f"{r['wall']:.2f}/{r['client']:.2f}/{r['pg']:.2f}" for r in results)
            )


if __name__ == "__main__":
    main()
