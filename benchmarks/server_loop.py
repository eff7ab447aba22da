"""The home's Prefect server on uvloop + httptools against asyncio + h11, measured on the same backfill.

    .venv/bin/python -m benchmarks.server_loop [--rounds 6] [--files 100] [--rows 200]

Two homes in one run, same code and same interpreter. The "asyncio" home's processes cannot import uvloop or
httptools (a ``sitecustomize`` on their PYTHONPATH puts a refusing finder first), so its server's uvicorn takes
asyncio's loop and h11 for "auto", as without the ``embedded`` group's two packages; the other home's server takes
them. Each round backfills a new folder of dailycheckins files into each home at ``--concurrency 4`` (the order
alternates) and reads the CPU each process spent per file. The machine is shared and its speed drifts, so the
figure to read is the server's CPU per file against the client side's (the backfill's process and the warm
runner's child: the same work in both homes), then files/s. Not a test: nothing here fails, it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import local as L

BLOCKED = ("uvloop", "httptools")


def blocker(folder: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes ``import uvloop`` and ``import httptools`` fail: a finder put first
    on ``sys.meta_path`` by its ``sitecustomize`` (a plain shadowing package would not do: Prefect's server start
    puts site-packages first on ``sys.path``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n\n\n"
        "class Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {BLOCKED!r}:\n"
        "            raise ImportError(f'{name} blocked by benchmarks.server_loop')\n\n\n"
        "sys.meta_path.insert(0, Blocked())\n",
        encoding="utf-8",
    )
    return folder


@contextmanager
def blocking(blocked: Path | None) -> Iterator[None]:
    """``benchmarks.local``'s commands with ``blocked`` first on their PYTHONPATH, if given."""
    original = L.env_for

    def env_for(home: Path, src: Path, warm: bool = True) -> dict[str, str]:
        env = original(home, src, warm)
        if blocked is not None:
            env["PYTHONPATH"] = f"{blocked}{os.pathsep}{env['PYTHONPATH']}"
        return env

    L.env_for = env_for
    try:
        yield
    finally:
        L.env_for = original


def round_of(home: Path, folder: Path, files: int, blocked: Path | None) -> dict[str, Any]:
    """One backfill of ``folder``: files/s and the CPU milliseconds per file of the server and the client side."""
    before = L.cpu_snapshot(home)
    with blocking(blocked):
        took, body = L.backfill(home, L.ROOT, folder, 4)
    after = L.cpu_snapshot(home)
    server = (after["prefect"] - before["prefect"]) * 1000 / files
    # the backfill's own process and the warm runner's child that served it: the same client work in both homes
    client = sum(after[k] - before[k] for k in ("client", "runner")) * 1000 / files
    return {
        "files_per_s": files / took,
        "loaded": body["success"] if isinstance(body, dict) else body,
        "server_ms": server,
        "client_ms": client,
        "server_per_client": server / client if client else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-loop-"))
    prefixes: dict[str, Path | None] = {"asyncio+h11": blocker(work / "blocked"), "uvloop+httptools": None}
    homes = {label: work / f"home-{i}" for i, label in enumerate(prefixes)}
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in prefixes}
    try:
        for (
            label,
            prefix,
        ) in prefixes.items():  # services and the warm runner up, as after a user's first command
            with blocking(prefix):
                L.sluice(homes[label], L.ROOT, "services", "start")
        for i in range(args.rounds):
            order = list(prefixes) if i % 2 == 0 else list(prefixes)[::-1]
            for label in order:
                folder = work / f"round-{i}-{label}"
                L.checkins(folder, args.files, args.rows, f"r{i}{label[0]}")
                result = round_of(homes[label], folder, args.files, prefixes[label])
                results[label].append(result)
                L.log(
                    f"round {i} {label:16} {result['files_per_s']:.2f} files/s, loaded {result['loaded']}, "
                    f"server {result['server_ms']:.0f} ms/file, client {result['client_ms']:.0f} ms/file, "
                    f"server/client {result['server_per_client']:.3f}"
                )
        summary = {
            label: {
                key: round(statistics.median(r[key] for r in rows), 3)
                for key in ("files_per_s", "server_ms", "client_ms", "server_per_client")
            }
            for label, rows in results.items()
        }
        base, new = summary["asyncio+h11"], summary["uvloop+httptools"]
        summary["ratios"] = {
            "server_per_client": round(new["server_per_client"] / base["server_per_client"], 3),
            "files_per_s": round(new["files_per_s"] / base["files_per_s"], 3),
        }
        print(json.dumps(summary, indent=2))
    finally:
        for home in homes.values():
            L.kill_leftovers(home)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
