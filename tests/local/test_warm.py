"""The warm runner (sluice.warm): a flow-running ``sluice`` command is served by a fork of a process that has already
imported everything, with the same output, exit code and ledger as in-process; never on stale code or settings;
signals forwarded; a dead runner gives one readable line; ``services stop`` leaves nothing behind.

Real parts: ``python -m sluice`` (the console script's thin client) in subprocesses, the home's Prefect server
and embedded PostgreSQL. One home for the module (its Prefect server's first start migrates a database).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice import services, warm
from tests.local.test_services import _env, gone, loaded_modules, processes_of, run_probe

pytestmark = pytest.mark.slow


def client(home: Path, *args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sluice", *args],
        env=env or _env(home),
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[arg-type]
    )


def sluice(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = client(home, *args, env=env)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def in_process(home: Path) -> dict[str, str]:
    return {**_env(home), "SLUICE_WARM": "0"}


def runner_log(home: Path) -> str:
    path = warm.runner_dir(home) / warm.LOG_FILE
    return path.read_text(encoding="utf-8") if path.exists() else ""


def served(home: Path, name: str) -> bool:
    """Whether the runner forked a child for a command naming ``name``."""
    return any(": ingest " in line and name in line for line in runner_log(home).splitlines())


def checkins(folder: Path, name: str, rows: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"{name}_{j},2019-03-{1 + j % 28:02d} 00:{j % 60:02d}:00 UTC,{j % 9},p\n" for j in range(rows)
    )
    path = folder / f"dailycheckins-{name}.csv"
    path.write_text("user,timestamp,hours,project\n" + body, encoding="utf-8")
    return path


def ingest_json(home: Path, path: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    result = sluice(home, "ingest", str(path), "--dataset", "dailycheckins", "--json", env=env)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


def runner_pid(home: Path) -> int:
    state = warm.read_state(home)
    assert state is not None
    return int(state["pid"])


def runner_status(home: Path) -> dict[str, object]:
    """``sluice services status --json``'s runner (is it running, does it match the tests' environment)."""
    result = sluice(home, "services", "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["runner"]


def wait_for(predicate: object, timeout: float = 180.0, home: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("timed out; runner log:\n" + (runner_log(home)[-3000:] if home else ""))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh SLUICE_HOME with its services (runner included) started; stopped afterwards."""
    path = tmp_path_factory.mktemp("warm")
    started = sluice(path, "services", "start")
    try:
        assert started.returncode == 0, started.stderr
        assert "runner    running" in started.stdout
        # what a worker or Prefect's own CLI must be given to reach this server: the one `services status` names
        api_url = json.loads(sluice(path, "services", "status", "--json").stdout)["prefect"]["api_url"]
        assert f"(PREFECT_API_URL={api_url})" in started.stdout
        yield path
    finally:
        services.stop(path, path / "pg")


@pytest.fixture
def warm_runner(home: Path) -> int:
    """The home's runner, (re)started for the tests' environment if a previous test replaced or stopped it."""
    result = sluice(home, "services", "start")
    assert result.returncode == 0, result.stderr
    status = runner_status(home)
    assert status["running"] and status["current"], status
    return int(status["pid"])


def test_ingest_through_the_runner_is_the_in_process_ingest(home: Path, warm_runner: int) -> None:
    files = home / "files"
    a, b = checkins(files, "same-a"), checkins(files, "same-b")
    code_warm, warm_report = ingest_json(home, a)
    code_cold, cold_report = ingest_json(home, b, env=in_process(home))
    assert served(home, a.name) and not served(home, b.name)
    assert code_warm == code_cold == 0
    strip = {"run_id", "source"}
    assert {k: v for k, v in warm_report.items() if k not in strip} == {
        k: v for k, v in cold_report.items() if k not in strip
    }
    assert warm_report["rows_loaded"] == 10

    ledger = json.loads(sluice(home, "ledger", "--json", "--limit", "50").stdout)
    states = {r["run_id"]: [s["state"] + ":" + s["status"] for s in r["states"]] for r in ledger}
    assert states[warm_report["run_id"]] == states[cold_report["run_id"]]
    assert states[warm_report["run_id"]]  # the run is in the ledger, with its states

    # Text output and a failing ingest (hard mode, bad rows): same message and exit code either way.
    bad = files / "dailycheckins-bad.csv"
    bad.write_text("user,timestamp,hours,project\nx,not a date,1,p\n", encoding="utf-8")
    args = ("ingest", str(bad), "--dataset", "dailycheckins", "--mode", "hard")
    through = sluice(home, *args)
    direct = sluice(home, *args, env=in_process(home))
    assert through.returncode == direct.returncode == 1

    def same(text: str) -> str:  # a quarantine file is named after its run
        return re.sub(r"\.[0-9a-f]{12}\.", ".<run>.", text)

    assert same(through.stderr) == same(direct.stderr) and "error" in through.stderr
    assert same(through.stdout) == same(direct.stdout) and "failed" in through.stdout
    assert runner_log(home).count(f"ingest {bad}") == 1
    assert runner_pid(home) == warm_runner


def test_the_runner_log_keeps_no_password_of_a_served_command_line(home: Path, warm_runner: int) -> None:
    """The runner logs every command it serves to a file in the home (mode 0644): a ``--source-url`` password must
    not be in it, nor in what the command prints."""
    password = (
        "Sluice-S3cr3t-Canary"  # the embedded server trusts its socket: the login itself is refused below
    )
    url = f"postgresql://postgres:{password}@/no_such_db?host={home / 'pg'}"
    result = sluice(home, "totesys", "--source-url", url, "--json")
    assert result.returncode == 1 and "no_such_db" in result.stdout, result.stdout + result.stderr
    log = runner_log(home)
    assert "totesys --source-url postgresql://postgres:***@/no_such_db" in log  # served, and logged
    assert password not in log + result.stdout + result.stderr
    assert runner_pid(home) == warm_runner


def served_ingest_probe(home: Path, name: str, marker: str, body: str) -> str:
    """A 10-row ingest in a process set up as the runner sets up a child (``prepare``, ``preload``), with ``body``
    run between the preload and the command (it reports at exit, after ``marker``); returns that report."""
    path = checkins(home / "files", name)
    probe = (
        "import sys, atexit, json\n"
        "from sluice.runtime import prepare\n"
        "prepare(verbose=False, server=True)\n"
        "from sluice import warm_server\n"
        "warm_server.preload()\n"
        f"{body}"
        "sys.argv = ['sluice', *sys.argv[1:]]\n"
        "warm_server._run_cli('sluice')\n"
    )
    result, last = run_probe(
        probe,
        marker,
        "ingest",
        str(path),
        "--dataset",
        "dailycheckins",
        "--json",
        env=in_process(home),
        cwd=home,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["rows_loaded"] == 10
    return last.removeprefix(marker)


def test_a_served_command_imports_nothing_the_runner_could_have_preloaded(
    home: Path, warm_runner: int
) -> None:
    """A child pays only its run: every Sluice module and heavy library an ingest needs is in the runner already.

    (An edit once dropped the CLI and the flows from the preload: each served command re-imported them, 0.4 CPU-s.)
    """
    body = (
        "before = set(sys.modules)\n"
        "atexit.register(lambda: sys.stderr.write('\\nNEW ' + json.dumps(sorted(set(sys.modules) - before))))\n"
    )
    new = json.loads(served_ingest_probe(home, "preloaded", "NEW ", body))
    heavy = ("sluice", "flows", "tasks", "schemas", "prefect", "pandas", "pandera", "pyarrow", "sqlalchemy")
    late = [m for m in new if m.split(".")[0] in heavy]
    assert late == []


def test_a_served_command_builds_no_model_or_command_the_runner_could_have_built(
    home: Path, warm_runner: int
) -> None:
    """Prefect's API schemas defer their validators to first use and typer derives the click command from the
    commands' signatures on every call: both are built in the runner, before the fork, not in every child."""
    body = (
        "from pydantic import BaseModel\n"
        "from pydantic._internal._mock_val_ser import MockValSer\n"
        "import sluice.cli\n"
        "def models():\n"
        "    seen, stack = set(), list(BaseModel.__subclasses__())\n"
        "    while stack:\n"
        "        model = stack.pop()\n"
        "        if model not in seen:\n"
        "            seen.add(model)\n"
        "            stack.extend(model.__subclasses__())\n"
        "    return seen\n"
        "deferred = {m for m in models() if isinstance(m.__dict__.get('__pydantic_validator__'), MockValSer)}\n"
        "builds = sluice.cli.command.cache_info().misses\n"
        "def report():\n"
        "    built = [m.__qualname__ for m in deferred\n"
        "             if not isinstance(m.__dict__.get('__pydantic_validator__'), MockValSer)]\n"
        "    late = sluice.cli.command.cache_info().misses - builds\n"
        "    sys.stderr.write('\\nBUILT ' + json.dumps({'models': sorted(built), 'commands': late}))\n"
        "atexit.register(report)\n"
    )
    assert json.loads(served_ingest_probe(home, "built", "BUILT ", body)) == {"models": [], "commands": 0}


def test_the_client_is_thin_and_never_runs_stale_code_or_settings(home: Path, warm_runner: int) -> None:
    files = home / "files"
    thin = checkins(files, "thin")
    result, loaded = loaded_modules(
        home, "sluice.launch", ("typer", "prefect", "pandas", "sqlalchemy"), "ingest", str(thin),
        "--dataset", "dailycheckins", cwd=home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert loaded == []
    assert served(home, thin.name) and "success" in result.stdout

    # Another environment: Prefect and Sluice read theirs at import, so the runner must not serve it.
    other = checkins(files, "other-env")
    code, report = ingest_json(home, other, env={**_env(home), "SLUICE_CHUNK_ROWS": "5000"})
    assert code == 0 and report["status"] == "success"
    assert not served(home, other.name)
    # ... and the command started a runner for its environment in the background, which replaces the old one.
    wait_for(lambda: warm.read_state(home) is not None and runner_pid(home) != warm_runner, home=home)
    replaced = runner_pid(home)
    wait_for(lambda: gone(warm_runner))

    # Edited code: the runner's imports are stale, so the next command runs in-process. Edited in a copy of the
    # code: touching the checkout's own files would make every other test worker's runner stale meanwhile.
    copy = home / "code-copy"
    for package in warm.PACKAGES:
        shutil.copytree(
            warm.project_root() / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    from_copy = {**_env(home), "PYTHONPATH": str(copy)}  # the client and the runner it starts import the copy
    back = sluice(home, "services", "start", env=from_copy)
    assert back.returncode == 0, back.stderr
    assert runner_pid(home) != replaced
    before_edit = checkins(files, "before-edit")
    code, report = ingest_json(home, before_edit, env=from_copy)
    assert code == 0 and report["status"] == "success"
    assert served(home, before_edit.name)  # the copy's runner serves the copy's commands
    stale_before = runner_log(home).count("stale for a client")
    os.utime(copy / "sluice" / "errors.py")  # as an editor saving it would
    edited = checkins(files, "edited")
    code, report = ingest_json(home, edited, env=from_copy)
    assert code == 0 and report["status"] == "success"
    assert not served(home, edited.name)
    assert runner_log(home).count("stale for a client") == stale_before + 1


def _big(home: Path, name: str) -> Path:
    """A file that takes a few seconds to ingest."""
    folder = home / "big"
    folder.mkdir(exist_ok=True)
    path = folder / f"dailycheckins-{name}.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("user,timestamp,hours,project\n")
        for j in range(1_000_000):
            f.write(f"u{j},2019-03-{1 + j % 28:02d} 00:{j % 60:02d}:00 UTC,{j % 9},p\n")
    return path


def _child_of(home: Path, path: Path) -> int:
    """The pid of the runner's child serving ``path`` (from the runner's log, once it forked)."""
    found: list[int] = []

    def forked() -> bool:
        found[:] = [
            int(line.split("child ")[1].split(":")[0])
            for line in runner_log(home).splitlines()
            if f"ingest {path}" in line
        ]
        return bool(found)

    wait_for(forked, timeout=60)
    return found[-1]


def test_ctrl_c_is_forwarded_and_a_dead_runner_is_one_readable_line(home: Path, warm_runner: int) -> None:
    big = _big(home, "interrupted")
    proc = client(home, "ingest", str(big), "--dataset", "dailycheckins")
    child = _child_of(home, big)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    wait_for(lambda: gone(child), timeout=30)

    # The runner dies mid-command: the client stops the orphaned command and says so in one line.
    big2 = _big(home, "orphaned")
    proc = client(home, "ingest", str(big2), "--dataset", "dailycheckins")
    child = _child_of(home, big2)
    os.kill(warm_runner, signal.SIGKILL)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = [x for x in err.splitlines() if x.strip()]
    # Its last line says what happened (before it, the stopped run's own one-line error, as in-process on SIGTERM).
    assert "warm runner" in lines[-1] and "Traceback" not in err and len(lines) <= 2, err
    assert sum("warm runner" in x for x in lines) == 1
    wait_for(lambda: gone(child), timeout=30)

    # The next command finds no runner: it runs in-process (correct) and starts a new one.
    after = checkins(home / "files", "after-death")
    code, report = ingest_json(home, after)
    assert code == 0 and report["rows_loaded"] == 10
    wait_for(lambda: runner_status(home)["current"])


def test_twelve_concurrent_ingests_through_the_runner(home: Path, warm_runner: int) -> None:
    files = [checkins(home / "conc", f"c{i:02d}") for i in range(12)]
    procs = [client(home, "ingest", str(p), "--dataset", "dailycheckins", "--json") for p in files]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 12, [e[-500:] for _, e in outs]
    reports = [json.loads(out) for out, _ in outs]
    assert all(r["status"] == "success" and r["rows_loaded"] == 10 for r in reports)
    assert sorted(Path(str(r["source"])).name for r in reports) == sorted(p.name for p in files)
    assert all(served(home, p.name) for p in files)
    assert runner_pid(home) == warm_runner


def test_a_backfill_runs_four_files_at_once_by_default(home: Path, warm_runner: int) -> None:
    """The default ``--concurrency`` is 4 (was 2): on 2 cores, 17-22% more small files a second, and the same time
    for large ones (``benchmarks/local.py``'s backfill runs at 4). Read from the home's Prefect server: at some moment
    more than two of the backfill's flow runs were running, and never more than four. (Not observable under the
    tests' Prefect harness: its SQLite server takes concurrent runs' state changes one at a time.)"""
    from datetime import datetime

    import httpx

    folder = home / "four-at-once"
    for n in range(8):
        checkins(folder, f"four{n}", rows=200)
    result = sluice(home, "backfill", str(folder), "--dataset", "dailycheckins", "--json")
    body = json.loads(result.stdout)
    assert result.returncode == 0 and body["success"] == 8, result.stdout + result.stderr
    server = services.running_prefect_server(home)
    assert server is not None
    runs = [
        httpx.get(f"{server.url}/api/flow_runs/{r['run_id']}", timeout=30).json() for r in body["results"]
    ]
    assert all(run["start_time"] and run["end_time"] for run in runs), runs
    spans = [
        (datetime.fromisoformat(run["start_time"]), datetime.fromisoformat(run["end_time"])) for run in runs
    ]
    in_flight = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    assert 3 <= in_flight <= 4, sorted(spans)


def test_services_stop_leaves_no_runner_and_no_child(home: Path, warm_runner: int) -> None:
    big = _big(home, "stopped")
    proc = client(home, "ingest", str(big), "--dataset", "dailycheckins")
    child = _child_of(home, big)
    stopped = sluice(home, "services", "stop")
    assert stopped.returncode == 0 and "runner    stopped" in stopped.stdout, stopped.stderr
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert gone(child) and gone(warm_runner)
    time.sleep(1)
    assert processes_of(home) == []
    assert not warm.status(home)["running"]


def test_services_stop_lets_an_idle_runner_exit_by_itself(home: Path, warm_runner: int) -> None:
    """SIGTERM drains the runner, which exits on its own and says so; no SIGKILL after a 20-second wait."""
    started = time.monotonic()
    stopped = sluice(home, "services", "stop")
    took = time.monotonic() - started
    assert stopped.returncode == 0 and "runner    stopped" in stopped.stdout, stopped.stderr
    assert gone(warm_runner)
    assert f"[{warm_runner}] stopped" in runner_log(home), runner_log(home)[-2000:]
    assert took < 15, f"services stop took {took:.1f} s"


def test_one_home_written_two_ways_is_one_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`./run demo` leaves SLUICE_HOME unset (`.sluice` of the checkout) and `./run sluice` passes the same folder
    absolute: the two fingerprints differed, so each replaced the other's runner and ran in-process (3-5 s instead of
    0.4 s). Another home is still another environment."""
    from sluice.warm import fingerprint

    env = {k: v for k, v in os.environ.items() if k != "SLUICE_HOME"}
    monkeypatch.chdir(tmp_path)  # a client's fingerprint is taken in its working folder
    cwd = str(tmp_path)
    unset = fingerprint(env, cwd)
    assert fingerprint({**env, "SLUICE_HOME": str(tmp_path / ".sluice")}, cwd) == unset
    assert fingerprint({**env, "SLUICE_HOME": ".sluice"}, cwd) == unset
    assert fingerprint({**env, "SLUICE_HOME": str(tmp_path / "other")}, cwd) != unset
