"""Loopback load check of the query API: requests/s and latency for one user's query on 20,000+ rows.

    .venv/bin/python -m benchmarks.api [--rows 50000] [--requests 2000] [--seconds 30] [--threads 4]

Loads ``--rows`` check-ins (half of them for one user) through Sluice's COPY load path, serves the API with
uvicorn on a loopback port in this process, and fires at most ``--requests`` requests (or stops after
``--seconds``) from ``--threads`` client threads. Uses its own ``SLUICE_HOME`` (``.sluice-bench``) unless set.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(rows: int) -> None:
    import pandas as pd

    from sluice.adapters.warehouse import get_engine
    from sluice.datasets.tm import DAILY_CHECKINS
    from sluice.ledger import ensure_bookkeeping
    from sluice.loading import ensure_target, load_file

    engine = get_engine()
    ensure_bookkeeping(engine)
    ensure_target(engine, DAILY_CHECKINS)
    frame = pd.DataFrame(
        {
            "username": ["bench-user" if i % 2 else f"other{i % 97}" for i in range(rows)],
            "project": "bench",
            "hours": 1.5,
            "timestamp": pd.Timestamp("2019-01-01", tz="UTC") + pd.to_timedelta(range(rows), unit="min"),
            "_source_row": range(1, rows + 1),
        }
    )
    outcome = load_file(
        engine,
        DAILY_CHECKINS,
        ingestion_id=uuid.uuid4(),
        source="benchmarks/api",
        sha256=hashlib.sha256(f"api-bench-{rows}".encode()).hexdigest(),
        frames=[frame],
    )
    state = "already loaded" if outcome.skipped else f"loaded {outcome.rows_loaded:,}"
    print(f"check-ins: {state} ({rows // 2:,} for bench-user)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--limit", type=int, default=100, help="page size of each request")
    args = parser.parse_args()
    os.environ.setdefault("SLUICE_HOME", str(ROOT / ".sluice-bench"))

    import httpx
    import uvicorn

    from sluice.api import create_app
    from sluice.settings import reload_settings

    load(args.rows)
    app = create_app(reload_settings())
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/Prod/get"

    deadline = time.monotonic() + args.seconds
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    issued = iter(range(args.requests))

    def worker() -> None:
        nonlocal errors
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < deadline:
                with lock:
                    n = next(issued, None)
                if n is None:
                    return
                started = time.perf_counter()
                r = client.get(
                    url, params={"user": "bench-user", "limit": args.limit, "offset": (n * 7) % 1000}
                )
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if r.status_code != 200 or len(r.json()["response"]) != args.limit:
                        errors += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        for _ in range(args.threads):
            pool.submit(worker)
    wall = time.perf_counter() - started
    server.should_exit = True
    thread.join(10)

    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(f"requests: {len(latencies):,} in {wall:.1f} s from {args.threads} threads, errors: {errors}")
    print(f"throughput: {len(latencies) / wall:,.0f} requests/s")
    print(
        f"latency: p50 {statistics.median(latencies) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms (page of {args.limit} rows out of {args.rows // 2:,} for the user)"
    )


if __name__ == "__main__":
    main()
