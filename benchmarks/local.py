"""Local mode as a service, measured: start-up tax, concurrent commands, backfill, skip pass, clean stop.

    .venv/bin/python -m benchmarks.local [--files 300] [--rows 200] [--before main] [--skip-before]

Everything runs ``sluice`` in fresh processes with a fresh ``SLUICE_HOME`` (under a temporary folder) and no
``PREFECT_API_URL``, as a new user would. "before" runs the same commands on the code of ``--before`` (a git ref,
extracted with ``git archive``; same interpreter and packages), in the same run, so that the figures are ratios
on the same (shared, noisy) machine. Prints one line per figure as it is measured, then a JSON summary.
The heavy "before" figures (12 concurrent commands, each starting its own server) are taken from the issue
unless ``--before-heavy``. "after" runs ``python -m sluice`` (the console script's thin client: through the home's
warm runner) and, in the same run, the same commands with ``SLUICE_WARM=0`` (in-process, the path before the
runner), and the CPU seconds of one run in every process it uses (client, runner's child, Prefect server,
PostgreSQL). Not a test: nothing here fails, it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
#: Issue 15's figures for "before" that are too heavy to re-measure by default (2 cores, default set-up).
ISSUE_BEFORE = {
    "concurrent_12_each_s": "130-160",
    "backfill_300x200_c4": "crashes 3/3 (AssertionError: Server process did not start), 152/300 loaded",
    "backfill_files_per_s_with_server": 1.9,
    "skip_pass_300_s": "102-107",
}


def log(message: str) -> None:
    print(message, flush=True)


def extract(ref: str, into: Path) -> Path:
    """The source tree of git ``ref`` in ``into`` (``git archive``: no worktree, no checkout)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    tar_path = into / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    tar_path.unlink()
    return into


def env_for(home: Path, src: Path, warm: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLUICE_"))}
    env.update(SLUICE_HOME=str(home), PYTHONPATH=str(src))
    if not warm:
        env["SLUICE_WARM"] = "0"  # every command in-process: the path before the warm runner
    return env


def command(src: Path) -> list[str]:
    """The console script's entry (the thin client) where the checkout has one, else the CLI in-process."""
    return [PY, "-m", "sluice"] if (src / "sluice" / "launch.py").exists() else [PY, "-m", "sluice.cli"]


def sluice(
    home: Path, src: Path, *args: str, timeout: float = 1800, warm: bool = True
) -> tuple[float, subprocess.CompletedProcess[str]]:
    # Output through files, not pipes: a server orphaned by the old code keeps inherited pipes open forever.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.run(
            [*command(src), *args],
            env=env_for(home, src, warm),
            cwd=src,
            stdout=out,
            stderr=err,
            text=True,
            timeout=timeout,
            check=False,
        )
        took = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return took, subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def import_prefect(n: int = 3) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run([PY, "-c", "import prefect"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def checkins(folder: Path, n: int, rows: int, tag: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        body = "".join(
            f"{tag}{i}_{j},2019-03-{1 + j % 28:02d} 00:{j % 60:02d}:00 UTC,{j % 9},p\n" for j in range(rows)
        )
        path = folder / f"dailycheckins-{tag}-{i:04d}.csv"
        path.write_text("user,timestamp,hours,project\n" + body, encoding="utf-8")
        paths.append(path)
    return paths


def ingest(home: Path, src: Path, path: Path, warm: bool = True) -> tuple[float, bool]:
    took, result = sluice(home, src, "ingest", str(path), "--dataset", "dailycheckins", "--json", warm=warm)
    try:
        ok = json.loads(result.stdout.strip().splitlines()[-1])["status"] == "success"
    except (ValueError, IndexError, KeyError):
        ok = False
    return took, ok


def leftovers(home: Path) -> list[str]:
    """Processes started for ``home`` (command line, working folder or PREFECT_HOME/SLUICE_HOME in it)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            env = proc.environ()
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except (psutil.Error, TypeError):
            continue
        if str(home) in text or any(str(home) in env.get(k, "") for k in ("PREFECT_HOME", "SLUICE_HOME")):
            found.append(f"{proc.pid} {text.strip()[:120]}")
    return found


def kill_leftovers(home: Path) -> int:
    """Stop what a run on ``home`` left behind (the old code orphans ephemeral servers); returns how many."""
    import psutil

    from sluice import services

    services.stop(home, home / "pg")
    killed = 0
    for line in leftovers(home):
        pid = int(line.split()[0])
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            proc.wait(10)
        except psutil.Error:
            continue
        killed += 1
    return killed


def _tree_cpu(pid: int | None, children_of_session: bool = False) -> float:
    """CPU seconds of process ``pid``, its live descendants and its reaped children."""
    import psutil

    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_snapshot(home: Path) -> dict[str, float]:
    """CPU seconds so far of the home's runner (with the commands it forked), Prefect server and PostgreSQL."""
    import resource

    from sluice import services, warm

    state = warm.read_state(home)
    server = services._read_state(home)
    pg = services.running_postgres(home / "pg")
    own = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "client": own.ru_utime + own.ru_stime,  # reaped children of this benchmark: the sluice processes
        "runner": _tree_cpu(int(state["pid"]) if state else None),
        "prefect": _tree_cpu(server.pid if server else None),
        "postgres": _tree_cpu(pg.pid if pg else None),
    }


def one_run_cpu(home: Path, src: Path, path: Path, warm: bool) -> dict[str, float]:
    before = cpu_snapshot(home)
    took, ok = ingest(home, src, path, warm=warm)
    after = cpu_snapshot(home)
    cpu = {k: round(after[k] - before[k], 2) for k in before}
    cpu["total"] = round(sum(cpu.values()), 2)
    cpu["wall"] = round(took, 2)
    cpu["ok"] = ok
    return cpu


def backfill(home: Path, src: Path, folder: Path, concurrency: int) -> tuple[float, dict[str, Any] | str]:
    took, result = sluice(home, src, "backfill", str(folder), "--dataset", "dailycheckins",
                          "--concurrency", str(concurrency), "--json")  # fmt: skip
    try:
        return took, json.loads(result.stdout)
    except ValueError:
        lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
        return took, f"exit {result.returncode}, no JSON; last stderr line: {lines[-1] if lines else ''}"


def measure(src: Path, work: Path, label: str, args: argparse.Namespace, heavy: bool) -> dict[str, Any]:
    home = work / f"home-{label}"
    out: dict[str, Any] = {}
    new = label == "after"
    try:
        # 1. 10-row ingest in a fresh process, services warm (before: every process starts its own server).
        if new:
            sluice(home, src, "services", "start")
        warm = checkins(work / f"warm-{label}", 1, 10, f"w{label}")
        ingest(home, src, warm[0])  # first use: database migrations, table creation
        singles = checkins(work / f"single-{label}", 5, 10, f"s{label}")
        times, imports, cold = [], [], []
        colds = checkins(work / f"single-cold-{label}", 5, 10, f"k{label}")
        for path, cold_path in zip(singles, colds, strict=True):  # interleaved: the machine's load drifts
            imports.append(import_prefect(1))
            times.append(ingest(home, src, path))
            if new:
                cold.append(ingest(home, src, cold_path, warm=False))
        if new:
            out["in_process_ingest_10_rows_s"] = round(statistics.median(t for t, _ in cold), 2)
            out["in_process_over_import_prefect"] = round(
                out["in_process_ingest_10_rows_s"] / statistics.median(imports), 2
            )
            log(f"[{label}] 10-row ingest in-process (SLUICE_WARM=0, the path before the runner): "
                f"{out['in_process_ingest_10_rows_s']} s = {out['in_process_over_import_prefect']}x `import prefect` "
                f"interleaved ({round(statistics.median(imports), 2)} s)")  # fmt: skip
        out["ingest_10_rows_s"] = round(statistics.median(t for t, _ in times), 2)
        out["ingest_10_rows_ok"] = all(ok for _, ok in times)
        out["import_prefect_s"] = round(statistics.median(imports), 2)
        out["ingest_over_import_prefect"] = round(out["ingest_10_rows_s"] / out["import_prefect_s"], 2)
        log(f"[{label}] 10-row sluice ingest, fresh process: {out['ingest_10_rows_s']} s; `import prefect` "
            f"interleaved: {out['import_prefect_s']} s; ratio {out['ingest_over_import_prefect']}x "
            "(medians of 5; target <= 2x)")  # fmt: skip
        if args.only_ingest:
            return out

        # CPU seconds of one run, every process it uses (client, runner's child, Prefect server, PostgreSQL).
        if new:
            for warm, tag in ((True, "warm"), (False, "in_process")):
                path = checkins(work / f"cpu-{tag}", 1, 10, f"u{tag}")[0]
                cpu = one_run_cpu(home, src, path, warm)
                out[f"cpu_one_run_{tag}"] = cpu
                log(f"[{label}] CPU seconds of one 10-row ingest, {tag}: {cpu} -> 12 on 2 cores take at least "
                    f"{6 * cpu['total'] / cpu['wall']:.2f}x a lone one")  # fmt: skip

        # 2. 12 concurrent ingests (after: through the runner, and in-process as before it).
        variants = [(True, "", out["ingest_10_rows_s"])] if heavy else []
        if new:
            variants.append((False, "in_process_", out["in_process_ingest_10_rows_s"]))
        for warm, tag, lone in variants:
            files = checkins(work / f"conc-{tag}{label}", 12, 10, f"c{tag}{label}")
            with ThreadPoolExecutor(12) as pool:
                results = list(pool.map(lambda p, w=warm: ingest(home, src, p, warm=w), files))
            worst = max(t for t, _ in results)
            out[f"{tag}concurrent_12_ok"] = sum(ok for _, ok in results)
            out[f"{tag}concurrent_12_max_s"] = round(worst, 2)
            out[f"{tag}concurrent_12_max_over_lone"] = round(worst / lone, 2)
            log(f"[{label}] 12 concurrent ingests{' in-process' if tag else ''}: "
                f"{out[f'{tag}concurrent_12_ok']}/12 ok, slowest {worst:.1f} s = {worst / lone:.2f}x a lone one"
                " (target <= 3x)")  # fmt: skip

        # 3. backfill, then the skip pass.
        if args.skip_backfill:
            return out
        folder = work / f"backfill-{label}"
        checkins(folder, args.files, args.rows, f"b{label}")
        took, body = backfill(home, src, folder, 4)
        if isinstance(body, dict):
            loaded = body["success"]
            out["backfill_loaded"] = loaded
            out["backfill_s"] = round(took, 1)
            out["backfill_files_per_s"] = round(args.files / took, 2)
            log(f"[{label}] backfill {args.files} files x {args.rows} rows, --concurrency 4: {loaded} loaded, "
                f"{body['failed']} failed, {took:.1f} s = {args.files / took:.2f} files/s")  # fmt: skip
            took, body = backfill(home, src, folder, 4)
            skipped = body["skipped"] if isinstance(body, dict) else 0
            out["skip_pass_s"] = round(took, 2)
            out["skip_pass_files_per_s"] = round(args.files / took, 1)
            log(f"[{label}] skip pass: {skipped} skipped in {took:.2f} s = {args.files / took:.1f} files/s")
        else:
            out["backfill"] = body
            log(f"[{label}] backfill {args.files} files, --concurrency 4: {body} after {took:.1f} s")
    finally:
        # 4. stop, then look for anything left behind.
        if new:
            took, _ = sluice(home, src, "services", "stop")
            out["services_stop_s"] = round(took, 2)
            time.sleep(1)
            left = leftovers(home)
            out["left_after_services_stop"] = len(left)
            log(f"[{label}] `sluice services stop` took {took:.2f} s; processes left: {len(left)} {left}")
        else:
            left = leftovers(home)
            out["left_behind"] = len(left)
            log(f"[{label}] processes left behind by the commands: {len(left)}")
        kill_leftovers(home)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument(
        "--before",
        default="main",
        help="git ref of the code to compare with, run the same way (default: main)",
    )
    parser.add_argument("--skip-before", action="store_true")
    parser.add_argument("--only-ingest", action="store_true", help="only the 10-row ingest vs import prefect")
    parser.add_argument("--skip-backfill", action="store_true", help="only the ingest figures (1 and 2)")
    parser.add_argument(
        "--before-heavy", action="store_true", help="also 12 concurrent commands on the old code"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-local-"))
    summary: dict[str, Any] = {"files": args.files, "rows": args.rows}
    try:
        summary["import_prefect_s"] = round(import_prefect(), 2)
        log(
            f"python -c 'import prefect': {summary['import_prefect_s']} s (median of 3, before anything runs; "
            "each ratio below uses the figure measured interleaved with its own runs)"
        )
        summary["after"] = measure(ROOT, work, "after", args, heavy=True)
        if not args.skip_before:
            old = extract(args.before, work / "before-src")
            summary["before"] = measure(old, work, "before", args, heavy=args.before_heavy)
            if not args.before_heavy:
                summary["before_from_issue"] = ISSUE_BEFORE
        print(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
