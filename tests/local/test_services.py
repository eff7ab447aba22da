"""Local mode as a service: one Prefect server per SLUICE_HOME, shared by every command, replaced when stale,
stopped by ``sluice services stop``; backfill with concurrency on the default set-up; lean imports.

These run ``sluice`` in subprocesses with a fresh ``SLUICE_HOME`` and no ``PREFECT_API_URL``, as a new user
would; each test stops what it started (even when it fails) and checks that no process is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sluice import services

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLUICE_"))}
    env.update(
        SLUICE_HOME=str(home), SLUICE_RETRY_DELAY_SECONDS="0.05", PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    return env


def sluice(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def processes_of(home: Path) -> list[str]:
    """Processes started for ``home``: anything whose command line, working folder or PREFECT_HOME/SLUICE_HOME
    is in it (its Prefect server, its PostgreSQL, an ephemeral server a command would have started)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if proc.pid == os.getpid():
            continue
        try:
            env = proc.environ()
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except (psutil.Error, TypeError):
            continue
        homes = (env.get("PREFECT_HOME", ""), env.get("SLUICE_HOME", ""))
        if str(home) in text or any(h.startswith(str(home)) for h in homes):
            found.append(f"{proc.pid}: {text.strip()[:200]}")
    return found


def gone(pid: int) -> bool:
    """The process has exited: no such pid, or a zombie its parent has not reaped yet (the services are orphans:
    PID 1 reaps them, on this machine every ~2 s)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh SLUICE_HOME with nothing configured; whatever ran in it is stopped afterwards."""
    path = tmp_path_factory.mktemp("home")
    yield path
    services.stop(path, path / "pg")


def _landed(folder: Path, n: int, rows: int = 20) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        body = "".join(f"u{i}_{j},2019-03-{1 + j % 28:02d} 00:00:00 UTC,{j % 9},p{i}\n" for j in range(rows))
        (folder / f"dailycheckins-{i:03d}.csv").write_text(
            "user,timestamp,hours,project\n" + body, encoding="utf-8"
        )


def test_backfill_with_concurrency_on_the_default_setup(home: Path) -> None:
    """Used to crash (AssertionError: Server process did not start) with orphaned ephemeral servers."""
    folder = home / "landing" / "tm" / "dailycheckins"
    _landed(folder, 12)
    (folder / "dailycheckins-bad.csv").write_text("not,a,checkin\n1,2,3\n", encoding="utf-8")

    first = sluice(
        home, "backfill", str(folder), "--dataset", "dailycheckins", "--concurrency", "4", "--json"
    )
    assert "Traceback" not in first.stdout + first.stderr, first.stderr[-3000:]
    body = json.loads(first.stdout)
    assert first.returncode == 1  # the bad file
    assert (body["files"], body["success"], body["failed"]) == (13, 12, 1)
    by_name = {Path(r["source"]).name: r for r in body["results"]}
    assert (
        by_name["dailycheckins-bad.csv"]["status"] == "failed" and by_name["dailycheckins-bad.csv"]["error"]
    )
    assert all(r["rows_loaded"] == 20 for n, r in by_name.items() if n != "dailycheckins-bad.csv")

    # One server for the home, recorded; every run went to it (none started its own).
    server = services.running_prefect_server(
        home, timeout=30
    )  # busy recording 13 runs' events on a loaded machine
    assert server is not None
    assert [p for p in processes_of(home) if "uvicorn" in p] == []

    # The second pass skips the loaded files in bulk: one ledger row each, no flow run.
    (folder / "dailycheckins-bad.csv").unlink()
    started = time.monotonic()
    second = sluice(
        home, "backfill", str(folder), "--dataset", "dailycheckins", "--concurrency", "4", "--json"
    )
    body = json.loads(second.stdout)
    assert second.returncode == 0 and (body["files"], body["skipped"]) == (12, 12), second.stderr[-2000:]
    assert all("already loaded" in r["error"] for r in body["results"])
    assert time.monotonic() - started < 60
    ledger = json.loads(sluice(home, "ledger", "--json", "--limit", "100").stdout)
    assert sum(1 for r in ledger if r["status"] == "skipped") == 12

    status = json.loads(sluice(home, "services", "status", "--json").stdout)
    assert status["prefect"]["running"] and status["prefect"]["pid"] == server.pid
    assert status["postgres"]["running"]
    stopped = sluice(home, "services", "stop")
    assert stopped.returncode == 0, stopped.stderr
    time.sleep(1)
    assert processes_of(home) == []
    status = json.loads(sluice(home, "services", "status", "--json").stdout)
    assert not status["prefect"]["running"] and not status["postgres"]["running"]


#: Starts the home's Prefect server (argv[1]) in its own process, as a command would, and prints its API URL.
ENSURE_SERVER = (
    "import sys; from pathlib import Path; from sluice.services import ensure_prefect_server as e; "
    "print(e(Path(sys.argv[1])))"
)


def test_one_server_for_concurrent_first_starts_and_a_dead_one_is_replaced(home: Path) -> None:
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", ENSURE_SERVER, str(home)],
            env=_env(home),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    urls = {p.communicate(timeout=300)[0].strip() for p in starters}
    assert len(urls) == 1 and all(p.returncode == 0 for p in starters)
    server = services.running_prefect_server(home)
    assert server is not None and server.api_url in urls
    assert len([p for p in processes_of(home) if "prefect_server" in p]) == 1

    # Killed: detected (the pid is gone) and replaced by the next command that needs it.
    psutil.Process(server.pid).kill()
    psutil.Process(server.pid).wait(10)
    assert services.running_prefect_server(home) is None
    url = services.ensure_prefect_server(home)
    replaced = services.running_prefect_server(home)
    assert replaced is not None and replaced.pid != server.pid and replaced.api_url == url

    # The recorded port answers, but not as this home's server (another process, stale record): replaced.
    services.stop_prefect_server(home)
    import http.server
    import threading

    impostor = http.server.HTTPServer(("127.0.0.1", replaced.port), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        state = services.prefect_dir(home) / services.STATE_FILE
        state.write_text(json.dumps({**replaced.__dict__, "pid": replaced.pid}), encoding="utf-8")
        url = services.ensure_prefect_server(home)
        assert not url.startswith(f"http://127.0.0.1:{replaced.port}/")
        assert services.healthy(url)
    finally:
        impostor.shutdown()
        impostor.server_close()
    assert services.stop_prefect_server(home) is not None
    assert processes_of(home) == []


def test_the_homes_server_runs_on_uvloop_and_httptools(home: Path) -> None:
    # uvicorn's "auto" loop and HTTP parser, with the embedded group's two packages installed: ~12% less server CPU
    # per backfilled file than asyncio's loop and h11 (benchmarks/server_loop.py).
    subprocess.run(
        [sys.executable, "-c", ENSURE_SERVER, str(home)],
        env=_env(home),
        capture_output=True,
        timeout=300,
        check=True,
    )
    server = services.running_prefect_server(home)
    assert server is not None
    extensions = [m.path for m in psutil.Process(server.pid).memory_maps() if m.path.endswith(".so")]
    for package in ("uvloop", "httptools"):
        assert any(f"{os.sep}{package}{os.sep}" in path for path in extensions), package


def test_two_homes_starting_at_once_on_the_same_port_get_a_server_each(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Two homes whose servers start at the same moment on the same free port (here: each remembers it from a server
    that is gone; on a fresh machine: the preferred port 4200). One binds it; the other's server fails to. Before,
    the other home saw the winner's server answer on the port, recorded it as its own, and its runs went to the
    other home's Prefect database. Now each home gets a server of its own, which is the process on its port."""
    homes = [tmp_path_factory.mktemp("twin") for _ in range(2)]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    port = services._any_free_port()
    for home in homes:
        services.prefect_dir(home).mkdir(parents=True)
        stale = services.PrefectServer(pid=gone.pid, port=port, create_time=0.0, home=str(home))
        services._write_state(home, stale)
    code = "import sys; from pathlib import Path; from sluice.services import ensure_prefect_server as e; print(e(Path(sys.argv[1])))"
    try:
        starters = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(home)], env=_env(home), stdout=subprocess.PIPE, text=True
            )
            for home in homes
        ]
        urls = [p.communicate(timeout=300)[0].strip() for p in starters]
        assert all(p.returncode == 0 for p in starters)
        assert len(set(urls)) == 2, urls
        for home, url in zip(homes, urls, strict=True):
            server = services.running_prefect_server(home)
            assert server is not None and server.api_url == url
            assert services._listens(server.pid, server.port), (
                f"{home}: pid {server.pid} is not on {server.port}"
            )
    finally:
        for home in homes:
            services.stop(home, home / "pg")
    assert [processes_of(home) for home in homes] == [[], []]


def test_a_home_whose_path_has_spaces(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A checkout in "~/My Projects/sluice" (the default home is ``.sluice`` in it): ingest works on the default
    set-up, and ``services stop`` stops what it started. pgserver 0.1.4 passes the socket folder to pg_ctl unquoted."""
    home = tmp_path_factory.mktemp("spaces") / "My Projects" / "sluice home"
    landed = home.parent / "landed file.csv"
    home.mkdir(parents=True)
    landed.write_text(
        "user,timestamp,hours,project\nned,2019-09-26 10:00:00 UTC,4.0,bizdev\n", encoding="utf-8"
    )
    pg = None
    try:
        done = sluice(home, "ingest", str(landed), "--dataset", "dailycheckins", "--json")
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        doc = json.loads(done.stdout)
        assert (doc["status"], doc["rows_loaded"]) == ("success", 1), json.dumps(doc)
        assert "Traceback" not in done.stderr
        pg = services.running_postgres(home / "pg")
        assert pg is not None
    finally:
        stopped = sluice(home, "services", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert gone(pg.pid) and processes_of(home) == []
    assert (
        " " not in pg.socket_dir and not Path(pg.socket_dir).exists()
    )  # the plain alias went with the server


def loaded_modules(
    home: Path, entry: str, watched: tuple[str, ...], *args: str, cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``entry``'s ``main`` as the ``sluice`` command with ``args``; which of ``watched`` it had imported at exit."""
    probe = (
        "import sys, atexit\n"
        f"atexit.register(lambda: sys.stderr.write('\\nMODULES ' + ' '.join(m for m in {watched!r} if m in sys.modules)))\n"
        "sys.argv = ['sluice', *sys.argv[1:]]\n"
        f"from {entry} import main\n"
        "main()\n"
    )
    result, last = run_probe(probe, "MODULES", *args, env=_env(home), cwd=cwd)
    return result, last.split()[1:]


def run_probe(
    probe: str, marker: str, *args: str, env: dict[str, str], cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the Python ``probe`` with ``args``; the last line of its stderr, which must start with ``marker``."""
    result = subprocess.run(
        [sys.executable, "-c", probe, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert last.startswith(marker), result.stderr[-3000:]
    return result, last


@pytest.mark.parametrize("args", [("--help",), ("ledger", "--json")])
def test_help_and_ledger_import_neither_pandas_nor_prefect(home: Path, args: tuple[str, ...]) -> None:
    result, loaded = loaded_modules(home, "sluice.cli", ("pandas", "prefect", "prefect_aws"), *args)
    assert result.returncode == 0, result.stderr
    assert loaded == []


def test_notify_without_sns_configured_does_not_import_prefect_aws() -> None:
    probe = "import sys, flows.ingest, sluice.adapters.notify; print('prefect_aws' in sys.modules, 'SnsNotification' in dir(sluice.adapters.notify))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    assert out.split() == ["False", "True"]


def test_the_plain_alias_the_warehouse_makes_is_the_one_services_removes(tmp_path: Path) -> None:
    """One name for the alias of a data folder with a space (``services.pg_alias``): made by the warehouse's
    start, recognised and removed by ``services`` after the server stops; another folder's alias is kept."""
    from sluice.adapters.warehouse import _plain_path

    pgdata, other = tmp_path / "my data" / "pg", tmp_path / "other data" / "pg"
    pgdata.mkdir(parents=True)
    other.mkdir(parents=True)
    alias, kept = _plain_path(pgdata), _plain_path(other)
    try:
        assert alias == services.pg_alias(pgdata) and alias.name.startswith(services.PG_ALIAS_PREFIX)
        assert alias.is_symlink() and alias.resolve() == pgdata.resolve()
        services._remove_alias(alias, other)  # not this folder's alias: kept
        assert alias.is_symlink()
        services._remove_alias(alias, pgdata)
        assert not alias.exists() and not alias.is_symlink() and kept.is_symlink()
    finally:
        alias.unlink(missing_ok=True)
        kept.unlink(missing_ok=True)


#: Runs ``services start`` then ``services stop`` as the only reaper of the orphaned services, one that never
#: reaps (PR_SET_CHILD_SUBREAPER): a container whose PID 1 is ``sleep infinity`` or ``tail -f /dev/null``.
NEVER_REAPS = """
import ctypes, json, subprocess, sys, time
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
cli = [sys.executable, "-m", "sluice.cli", "services"]
subprocess.run([*cli, "start"], check=True, capture_output=True, timeout=300)
started = time.monotonic()
stop = subprocess.run([*cli, "stop"], capture_output=True, text=True, timeout=300)
print(json.dumps({"seconds": time.monotonic() - started, "stdout": stop.stdout, "code": stop.returncode}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux's")
def test_services_stop_counts_an_exited_service_whose_parent_never_reaps_it_as_stopped(home: Path) -> None:
    # Each stopped service stays a zombie. psutil's wait counted it as running, so the stop waited out every
    # timeout (runner 20 + 5 s, server 15 + 5 s, PostgreSQL 30 s) and took over a minute; it is well inside the
    # first of them now.
    probe = subprocess.run(
        [sys.executable, "-c", NEVER_REAPS], env=_env(home), capture_output=True, text=True, timeout=600
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout)
    assert result["code"] == 0
    assert [line.split()[:2] for line in result["stdout"].splitlines()] == [
        ["runner", "stopped"],
        ["prefect", "stopped"],
        ["postgres", "stopped"],
    ]
    assert result["seconds"] < 15, result
    assert processes_of(home) == []


def test_services_stop_while_a_runner_is_starting_leaves_nothing(home: Path) -> None:
    """A command with no runner runs in-process and starts one in the background; `services stop` right after it
    found no runner yet, and the runner registered a moment later and outlived the stop (left behind by the tests)."""
    import fcntl

    from sluice import warm

    assert warm.start(home.resolve(), _env(home), str(home), wait=False)
    stopped = sluice(home, "services", "stop")
    assert stopped.returncode == 0, stopped.stderr
    with (warm.runner_dir(home.resolve()) / warm.SPAWN_LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the start is over, one way or the other
    time.sleep(1)
    assert processes_of(home) == []


def test_the_services_of_a_removed_home_stop_by_themselves(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rm -rf .sluice`` to start again left the home's Prefect server and warm runner running, with no state file
    for ``services stop`` to find them by; the server kept the UI's port, so the next home's UI moved to another.
    (Here the UI's usual port is the removed home's, whichever it got: 4200 may be another home's.)"""
    started = sluice(home, "services", "start")
    assert started.returncode == 0, started.stderr
    status = json.loads(sluice(home, "services", "status", "--json").stdout)
    pids = {name: status[name]["pid"] for name in ("runner", "prefect", "postgres")}
    assert all(pids.values()), status
    procs = [psutil.Process(pid) for pid in pids.values()]
    shutil.rmtree(home)
    home.mkdir()  # made again, as the next command does: still not theirs
    removed = time.monotonic()

    def wait_gone(names: tuple[str, ...], seconds: float) -> dict[str, bool]:
        while not all(gone(pids[n]) for n in names) and time.monotonic() < removed + seconds:
            time.sleep(0.25)
        return {n: gone(pids[n]) for n in names}

    try:
        # the next home's server waits for the removed home's to leave the port it wants, not another port
        monkeypatch.setattr(services, "PREFERRED_PORT", int(status["prefect"]["ui"].rsplit(":", 1)[1]))
        assert next(services._candidate_ports(None)) == services.PREFERRED_PORT
        assert time.monotonic() - removed < services.ORPHAN_WAIT_SECONDS + 1
        # ours: checked every 5 s
        assert wait_gone(("runner", "prefect"), 30) == {"runner": True, "prefect": True}
        # PostgreSQL's own check of its lock file, once a minute
        assert wait_gone(("postgres",), 90) == {"postgres": True}
        # nothing made on the way out (the runner's lock would make warm/)
        assert list(home.iterdir()) == []
    finally:  # failed: what no `services stop` can find any more (psutil refuses a pid since reused)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()


@pytest.mark.parametrize("where", ["under a file", "under /proc"])
def test_services_on_a_home_that_cannot_exist_say_nothing_runs(tmp_path: Path, where: str) -> None:
    """A home under a regular file (or where no folder can be made): nothing can run there, so `services stop`
    says nothing was running (exit 0) and `services status` says stopped; stop printed "Not a directory" (exit 1),
    or a FileNotFoundError traceback under /proc. Neither creates anything."""
    if where == "under a file":
        (tmp_path / "a-file").write_text("", encoding="utf-8")
        home = tmp_path / "a-file" / "home"
    else:
        home = Path("/proc") / f"sluice-{os.getpid()}" / "home"
    stopped = sluice(home, "services", "stop", timeout=120)
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode == 0, said
    assert stopped.stdout.split("\n")[:3] == [
        "runner    was not running",
        "prefect   was not running",
        "postgres  was not running",
    ], said
    assert "error" not in said and "Traceback" not in said, said
    status = sluice(home, "services", "status", "--json", timeout=120)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert [info[k]["state"] for k in ("runner", "prefect", "postgres")] == ["stopped"] * 3
    assert not home.exists()


def test_services_stop_with_an_external_warehouse_says_it_left_it_alone(tmp_path: Path) -> None:
    """With SLUICE_DATABASE_URL (a shared warehouse, another home's PostgreSQL) `services stop` said "postgres was
    not running" of a database that runs (status says "external")."""
    env = {**_env(tmp_path / "home"), "SLUICE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    stopped = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "services", "stop"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.splitlines()[2] == "postgres  external (left as it is)", stopped.stdout


def test_a_mistyped_command_starts_no_service_and_the_first_real_one_starts_the_runner(home: Path) -> None:
    """The console script (``python -m sluice``: the thin client) in a fresh home. A command line that does not
    parse ran nothing, yet it started the home's warm runner, which started a Prefect server: two processes
    (about 300 MB) left running for a typo. The first command that runs flows starts them."""
    from sluice import warm

    def client(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sluice", *args],
            env=_env(home), cwd=home, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip

    _landed(home / "landing", 1)
    landed = str(home / "landing" / "dailycheckins-000.csv")
    for args in (("ingest",), ("ingest", landed, "--mode", "strict"), ("backfill",), ("totesys", "--nope")):
        typo = client(*args)
        assert typo.returncode == 2 and "Traceback" not in typo.stderr, (args, typo.stderr)
    missing = client("backfill", str(home / "no-such-folder"))  # parses, then finds nothing to run
    assert missing.returncode == 1 and "no-such-folder: no such folder" in missing.stderr, missing.stderr
    time.sleep(2)  # a runner started in the background registers within a second or two
    assert processes_of(home) == [] and warm.read_state(home.resolve()) is None
    # nor any folder of a service: the backfill left an empty prefect/ in the new home
    assert sorted(p.name for p in home.iterdir()) == ["landing"]
    ledger = client("ledger")  # reads the warehouse (pg/), runs no flow
    assert ledger.returncode == 0 and "Traceback" not in ledger.stderr, ledger.stderr
    assert sorted(p.name for p in home.iterdir()) == ["landing", "pg"]

    done = client("ingest", landed, "--dataset", "dailycheckins", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["rows_loaded"] == 20, done.stderr[-2000:]
    deadline = time.monotonic() + 120
    while not warm.status(home.resolve())["running"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert warm.status(home.resolve())["running"]
    assert (home / "prefect").is_dir() and (home / "warm").is_dir()  # made by the command that needs them


def test_prefect_clients_of_the_homes_plain_http_server_load_a_one_root_bundle(home: Path) -> None:
    """Each Prefect client builds a verifying TLS context, even for the home's plain-HTTP server: from certifi's
    (or ``SSL_CERT_FILE``'s) ~140 roots that was 21 ms CPU per client, several per command. The home's clients
    load a one-root bundle; a user's own ``PREFECT_API_SSL_CERT_FILE`` is kept."""
    import ssl

    import certifi

    _landed(home / "landing", 2)
    probe = (
        "import ssl, sys, atexit, traceback\n"
        "loaded = []\n"
        "original = ssl.SSLContext.load_verify_locations\n"
        "def recorded(self, cafile=None, *args, **kwargs):\n"
        "    if any('/prefect/client/' in f.filename for f in traceback.extract_stack()):\n"
        "        loaded.append(str(cafile))  # by a Prefect API client\n"
        "    return original(self, cafile, *args, **kwargs)\n"
        "ssl.SSLContext.load_verify_locations = recorded\n"
        "atexit.register(lambda: sys.stderr.write('\\nCAFILES ' + ' '.join(sorted(set(loaded)))))\n"
        "sys.argv = ['sluice', *sys.argv[1:]]\n"
        "from sluice.cli import main\n"
        "main()\n"
    )
    bundle, mine = str(home / "prefect" / "plain-http-ca.pem"), home / "mine.pem"
    mine.write_bytes(Path(certifi.where()).read_bytes())
    loaded = {}
    for n, own in enumerate((None, str(mine))):
        env = _env(home) | ({"PREFECT_API_SSL_CERT_FILE": own} if own else {})
        path = str(home / "landing" / f"dailycheckins-{n:03d}.csv")
        result, last = run_probe(probe, "CAFILES", "ingest", path, "--json", env=env)
        assert json.loads(result.stdout)["status"] == "success", result.stderr[-2000:]
        loaded[own] = last.split()[1:]
    assert loaded == {None: [bundle], str(mine): [str(mine)]}
    assert ssl.create_default_context(cafile=bundle).cert_store_stats()["x509_ca"] == 1


def test_a_new_homes_prefect_database_starts_from_a_copy_migrated_once(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect takes a new SQLite database through its ~110 migrations: 10 of a new home's 15 s start on 2 cores,
    for every new home (each test's, each checkout's). The first new home keeps a copy of its database as it is
    once migrated, before it serves anything; the next new home's server starts from that copy and serves it."""
    import sqlite3
    import urllib.request
    from contextlib import closing

    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # the servers' environment is this process's
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")

    def post(api: str, path: str, body: dict[str, object]) -> object:
        request = urllib.request.Request(
            f"{api}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    try:
        api = services.ensure_prefect_server(first)
        post(api, "/flows/", {"name": "made-in-the-first-home"})
        copies = sorted((cache / "sluice").iterdir())
        assert [p.name for p in copies] == [copies[0].name] and copies[0].name.startswith("prefect-"), copies
        with closing(sqlite3.connect(copies[0])) as db:
            assert db.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
            # block types: registered before the copy
            assert db.execute("SELECT count(*) FROM block_type").fetchone()[0] > 0
            assert db.execute("SELECT name FROM flow").fetchall() == []  # nothing the home did once serving
            db.execute("INSERT INTO flow (name) VALUES ('only-in-the-copy')")
            db.commit()

        api = services.ensure_prefect_server(second)
        names = [flow["name"] for flow in post(api, "/flows/filter", {})]  # type: ignore[union-attr]
        assert names == ["only-in-the-copy"], names
        assert post(api, "/flows/", {"name": "made-in-the-second-home"})
    finally:
        for home in (first, second):
            services.stop(home, home / "pg")


def test_block_types_are_registered_once_per_installation_not_checked_at_every_start(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect's check at every server start (has the block registry changed?) imported every collection to hash its
    blocks (prefect-aws, boto3 & co.): 0.9 s of a 4.9 s start, and a new home registered them all again (5.6 s).
    The block types are there from the first start on; a start with the marker of this installation imports no
    collection; a marker of another installation (an upgrade) registers them again, as Prefect would."""
    import re
    import sqlite3
    from contextlib import closing

    from sluice.prefect_server import blocks_key

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # the server's imports, in its log
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    database = second / "prefect" / "prefect.db"
    marker = database.with_name("prefect.db.sluice-blocks")

    def start(home: Path) -> str:
        """The collections the start imported (by their modules), with the home's server stopped again."""
        log = home / "prefect" / "server.log"
        log.unlink(missing_ok=True)
        services.ensure_prefect_server(home)
        services.stop_prefect_server(home)
        with closing(sqlite3.connect(home / "prefect" / "prefect.db")) as db:
            query = "SELECT count(*) FROM block_type WHERE slug = 'email-server-credentials'"
            assert db.execute(query).fetchone() == (1,)
        imported = log.read_text(encoding="utf-8")
        return " ".join(
            m for m in ("prefect_aws", "prefect_email") if re.search(rf"\|\s+{m}(\.|$)", imported, re.M)
        )

    try:
        assert start(first) == "prefect_aws prefect_email"  # a machine's first new home: kept as the template
        assert start(second) == ""  # a new home from the template: its block types are there
        assert marker.read_text(encoding="utf-8") == blocks_key()
        assert start(second) == ""  # a restart
        with closing(sqlite3.connect(database)) as db:
            db.execute("DELETE FROM block_type WHERE slug = 'email-server-credentials'")
            db.commit()
        marker.write_text("another installation", encoding="utf-8")
        assert (
            start(second) == "prefect_aws prefect_email"
        )  # registered again (start() checks the block type)
        assert marker.read_text(encoding="utf-8") == blocks_key()
    finally:
        for home in (first, second):
            services.stop(home, home / "pg")


def test_a_pid_that_names_no_server_of_ours_is_no_server(tmp_path: Path) -> None:
    """A state file's nonsense pid, initdb's negative pid in postmaster.pid (two first commands at once: one failed
    with "pid must be a positive integer"), a pid reused by a process named postgres elsewhere (`services stop` of
    one home stopped another home's database): none of them is a running service, and none is a traceback."""
    from sluice import warm

    assert services._process(-5) is None and services._process(0) is None
    assert warm._alive({"pid": -7, "create_time": 0.0}) is None
    services.prefect_dir(tmp_path).mkdir(parents=True)
    services._write_state(
        tmp_path, services.PrefectServer(pid=-5, port=1, create_time=0.0, home=str(tmp_path))
    )
    assert services.running_prefect_server(tmp_path) is None

    pgdata = tmp_path / "pg"
    pgdata.mkdir()
    (pgdata / "postmaster.pid").write_text(f"-12345\n{pgdata}\n0\n5432\n{pgdata}\n", encoding="utf-8")
    assert services.running_postgres(pgdata) is None
    assert services.clear_stale_postmaster_pid(pgdata) is False  # initdb's: never removed

    # a process named postgres: in another folder it is another server's (left alone), in this one it is ours
    fake = tmp_path / "bin" / "postgres"
    fake.parent.mkdir()
    shutil.copy("/bin/sleep", fake)
    elsewhere = subprocess.Popen([str(fake), "60"], cwd=tmp_path)
    here = subprocess.Popen([str(fake), "60"], cwd=pgdata)
    try:
        (pgdata / "postmaster.pid").write_text(f"{elsewhere.pid}\n{pgdata}\n", encoding="utf-8")
        assert services.running_postgres(pgdata) is None
        assert services.stop_postgres(pgdata, timeout=2) is None and elsewhere.poll() is None
        assert (
            services.clear_stale_postmaster_pid(pgdata) is True
        )  # PostgreSQL would refuse to start beside it
        assert not (pgdata / "postmaster.pid").exists() and elsewhere.poll() is None
        (pgdata / "postmaster.pid").write_text(f"{here.pid}\n{pgdata}\n", encoding="utf-8")
        running = services.running_postgres(pgdata)
        assert running is not None and running.pid == here.pid
        assert services.clear_stale_postmaster_pid(pgdata) is False
    finally:
        for proc in (elsewhere, here):
            proc.kill()
            proc.wait()


def test_the_embedded_postgresql_starts_past_a_postmaster_pid_whose_pid_was_reused(tmp_path: Path) -> None:
    """After a reboot (or in a container) the stopped server's pid belongs to another process: PostgreSQL refuses to
    start beside a live pid ("is another postmaster running?") and pgserver handed out a socket nobody listened on,
    so every command failed with "cannot connect to the warehouse"."""
    pgdata = tmp_path / "pg"
    start = (
        "import sys, sqlalchemy as sa; from pathlib import Path; from sluice.adapters.warehouse import _start_embedded;"
        "url = _start_embedded(Path(sys.argv[1]));"
        "print(sa.create_engine(url).connect().execute(sa.text('SELECT 1')).scalar())"
    )
    env = _env(tmp_path)

    def started() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", start, str(pgdata)], env=env, capture_output=True, text=True, timeout=120
        )

    first = started()
    assert first.stdout.strip() == "1", first.stderr[-2000:]
    assert services.stop_postgres(pgdata) is not None
    squatter = subprocess.Popen(["sleep", "60"])
    try:
        lines = (
            (pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
            if (pgdata / "postmaster.pid").exists()
            else []
        )
        lines = [str(squatter.pid), *(lines[1:] or [str(pgdata), "0", "5432", str(pgdata)])]
        (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n", encoding="utf-8")
        again = started()
        assert again.stdout.strip() == "1", again.stderr[-2000:]
        assert "Traceback" not in again.stderr and squatter.poll() is None
        running = services.running_postgres(pgdata)
        assert running is not None and running.pid != squatter.pid
    finally:
        squatter.kill()
        squatter.wait()
        services.stop_postgres(pgdata)


RESTARTED_BY_THREADS = """
import json, sys, threading, time
from pathlib import Path
import psutil, sqlalchemy as sa
from sluice import services
from sluice.adapters.warehouse import _start_embedded

pgdata = Path(sys.argv[1])
sa.create_engine(_start_embedded(pgdata)).connect().close()
psutil.Process(services.running_postgres(pgdata).pid).kill()
seen, done = [], []

def work():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            engine = sa.create_engine(_start_embedded(pgdata), poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            done.append(1)
            return
        except sa.exc.OperationalError:  # refused while it restarts: a task's retry
            time.sleep(0.2)
        except Exception as exc:
            seen.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.2)

threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"done": len(done), "seen": seen}))
"""


def test_threads_that_find_the_embedded_postgresql_dead_start_it_once(tmp_path: Path) -> None:
    """``kill -9`` of the home's PostgreSQL under a backfill: each of its threads found the server dead and
    restarted it at once, through pgserver, which is not thread-safe (a bare ``AssertionError`` from a handle
    another thread was restarting, "Unable to release an unaquired lock" from its file lock): 70 of 200 files
    failed. One thread restarts it now; the others wait for it, then connect."""
    pgdata = tmp_path / "pg"
    try:
        run = subprocess.run(
            [sys.executable, "-c", RESTARTED_BY_THREADS, str(pgdata)],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert json.loads(run.stdout.strip().splitlines()[-1]) == {"done": 8, "seen": []}
        assert services.running_postgres(pgdata) is not None
    finally:
        services.stop_postgres(pgdata)


def test_the_ui_asks_its_own_server_and_keeps_its_port_across_a_stop(home: Path) -> None:
    """With 4200 taken by something else, the home's server listens elsewhere, but Prefect told its UI the API was
    at 4200 (``/ui-settings``): the page at the printed address showed another server's runs. And each start after
    a stop took a new random port, so the UI's address changed every time."""
    import urllib.request

    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # 4200 may be another home's already: taken either way
            taken.bind(("127.0.0.1", services.PREFERRED_PORT))
            taken.listen()
        try:
            url = services.ensure_prefect_server(home)
            server = services.running_prefect_server(home)
            assert server is not None and server.port != services.PREFERRED_PORT
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/ui-settings", timeout=10) as answer:
                assert json.loads(answer.read())["api_url"] == url == f"http://127.0.0.1:{server.port}/api"
            services.stop(home, home / "pg")
            assert services.ensure_prefect_server(home) == url  # the same address again
        finally:
            services.stop(home, home / "pg")


def test_a_worker_run_whose_process_died_is_closed_and_frees_its_slot_when_the_server_starts_again(
    home: Path,
) -> None:
    """A process worker stopped with Ctrl-C kills its runs: they stayed ``Running`` for good, each holding its
    deployment's concurrency slot, which the server frees only when the slot's lease expires, and keeps leases in
    memory: after ``services stop`` and a new start every new run of that deployment waited for a slot forever.
    The home's server now closes such runs when it starts (``Crashed``), which frees their slots; a run whose
    process lives is left alone."""
    import httpx

    api = services.ensure_prefect_server(home)

    def call(method: str, path: str, body: dict[str, object]) -> dict[str, object]:
        for _ in range(5):  # a 503 (the server's SQLite busy) is retried, as Prefect's client does
            response = httpx.request(method, f"{api}{path}", json=body, timeout=10)
            if response.status_code != 503:
                break
            time.sleep(2)
        response.raise_for_status()
        return response.json() if response.content else {}

    flow = call("POST", "/flows/", {"name": "orphans"})
    one_at_a_time = call(
        "POST", "/deployments/", {"name": "one-at-a-time", "flow_id": flow["id"], "concurrency_limit": 1}
    )
    unlimited = call("POST", "/deployments/", {"name": "unlimited", "flow_id": flow["id"]})

    def run(deployment: dict[str, object], pid: int) -> str:
        created = call("POST", f"/deployments/{deployment['id']}/create_flow_run", {})
        for state in ("PENDING", "RUNNING"):
            said = call("POST", f"/flow_runs/{created['id']}/set_state", {"state": {"type": state}})
            assert said["status"] == "ACCEPT", said
        call("PATCH", f"/flow_runs/{created['id']}", {"infrastructure_pid": str(pid)})
        return str(created["id"])

    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan, alive = run(one_at_a_time, gone.pid), run(unlimited, os.getpid())
    waiting = call("POST", f"/deployments/{one_at_a_time['id']}/create_flow_run", {})
    said = call("POST", f"/flow_runs/{waiting['id']}/set_state", {"state": {"type": "PENDING"}})
    assert said["status"] != "ACCEPT"  # the orphan holds the one slot

    assert services.stop_prefect_server(home) is not None
    assert services.ensure_prefect_server(home) == api
    state = call("GET", f"/flow_runs/{orphan}", {})["state"]
    assert (state["type"], state["message"]) == ("CRASHED", services.ORPHANED)
    assert call("GET", f"/flow_runs/{alive}", {})["state"]["type"] == "RUNNING"
    said = call("POST", f"/flow_runs/{waiting['id']}/set_state", {"state": {"type": "PENDING"}})
    assert said["status"] == "ACCEPT", said  # the slot is free again
