"""What a user's machine does to a command while it runs: Ctrl-C during an ingest or a backfill, a command's process
killed by someone else (``kill -9``, the OOM killer), a second terminal tab. Each ends with one readable line, the
right exit status, nothing half loaded, and a re-run that loads exactly what was missing.

Real parts: ``python -m sluice`` (the console script's thin client) in subprocesses, served by the home's warm
runner (the default) or in-process (``SLUICE_WARM=0``), the home's Prefect server and embedded PostgreSQL; the rows
are counted in the warehouse itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from sluice import services
from sluice.errors import stopped_by
from tests.local.test_services import _env, gone, processes_of
from tests.local.test_warm import (  # noqa: F401 (`home` and `warm_runner` are fixtures)
    _child_of,
    checkins,
    client,
    home,
    runner_pid,
    served,
    sluice,
    wait_for,
    warm_runner,
)

pytestmark = pytest.mark.slow

WARM = pytest.mark.parametrize("warm", ["default", "0"])


def environment(home: Path, warm: str) -> dict[str, str]:  # noqa: F811 (the fixture)
    env = _env(home)
    if warm != "default":
        env["SLUICE_WARM"] = warm
    return env


def rows(home: Path, project: str) -> int:  # noqa: F811 (the fixture)
    """Check-in rows of ``project`` in the home's warehouse."""
    pg = services.running_postgres(home / "pg")
    assert pg is not None
    engine = sa.create_engine(pg.url)
    try:
        with engine.connect() as conn:
            if conn.execute(sa.text("select to_regclass('tm.daily_checkins')")).scalar() is None:
                return 0  # before the first load made it
            query = sa.text("select count(*) from tm.daily_checkins where project = :p")
            return int(conn.execute(query, {"p": project}).scalar_one())
    finally:
        engine.dispose()


def landed(folder: Path, n: int, project: str, per_file: int = 200) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        body = "".join(
            f"{project}-{i}-{j},2019-03-{1 + j % 28:02d} 00:00:00 UTC,{j % 9},{project}\n"
            for j in range(per_file)
        )
        (folder / f"dailycheckins-{i:03d}.csv").write_text(
            "user,timestamp,hours,project\n" + body, encoding="utf-8"
        )


@WARM
def test_ctrl_c_during_a_backfill_starts_no_more_files_and_a_rerun_loads_the_rest(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
    warm: str,
) -> None:
    """Used to go on loading every remaining file after Ctrl-C, then exit 130 with nothing on stderr (and, with
    ``--json``, ``"failed (see stderr)"``)."""
    project = f"ctrl-c-{warm}"
    folder = home / "interrupt" / project
    landed(folder, 40, project)
    args = ("backfill", str(folder), "--dataset", "dailycheckins", "--concurrency", "2", "--json")
    proc = client(home, *args, env=environment(home, warm))
    wait_for(lambda: rows(home, project) >= 200 or proc.poll() is not None, timeout=120)
    proc.send_signal(signal.SIGINT)
    interrupted_at = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - interrupted_at < 60  # the runs in flight, not the 38 files still to go
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    doc = json.loads(out)
    assert doc["interrupted"] is True and doc["files"] == 40
    loaded = [r for r in doc["results"] if r["status"] == "success"]
    not_started = [r for r in doc["results"] if (r["error"] or "").startswith("not started: ")]
    assert loaded and not_started and len(loaded) + len(not_started) == 40, doc
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[-1].startswith("error: interrupted:") and f"{len(not_started)} of 40" in lines[-1], err
    assert rows(home, project) == 200 * len(loaded)  # nothing half loaded, nothing more after the Ctrl-C

    again = sluice(home, *args, env=environment(home, warm))
    assert again.returncode == 0, again.stderr[-3000:]
    doc = json.loads(again.stdout)
    assert (doc["success"], doc["skipped"], doc["interrupted"]) == (len(not_started), len(loaded), False)
    assert rows(home, project) == 200 * 40


def big(home: Path, project: str, n: int = 1_000_000) -> Path:  # noqa: F811 (the fixture)
    """A file of ``n`` check-ins of ``project`` that takes several seconds to ingest."""
    path = home / "big" / f"dailycheckins-{project}.csv"
    path.parent.mkdir(exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write("user,timestamp,hours,project\n")
        for j in range(n):
            f.write(f"u{j},2019-03-{1 + j % 28:02d} 00:{j % 60:02d}:00 UTC,{j % 9},{project}\n")
    return path


def _ingest_then(
    home: Path,  # noqa: F811
    warm: str,
    name: str,
    stop: str,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """An ingest of a large file, stopped mid-run: ``int`` is Ctrl-C to the command, ``kill`` is SIGKILL to the
    process running it (the runner's child)."""
    path = big(home, name)
    env = environment(home, warm)
    proc = client(home, "ingest", str(path), "--dataset", "dailycheckins", "--json", env=env)
    if warm == "default":
        child = _child_of(home, path)
    # Stopped in its load state, not after a fixed sleep: on an idle machine the in-process run had finished
    # within 6 s and the Ctrl-C found nothing to stop.
    wait_loading(home, path, proc)
    if stop == "int":
        proc.send_signal(signal.SIGINT)
    else:
        psutil.Process(child).kill()
        wait_for(lambda: gone(child), timeout=30)
    out, err = proc.communicate(timeout=120)
    return path, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@WARM
def test_ctrl_c_during_an_ingest_is_one_readable_line_and_a_rerun_loads_the_file_once(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
    warm: str,
) -> None:
    """Used to exit 130 with nothing at all on stderr, and ``--json`` said ``"failed (see stderr)"``."""
    project = f"interrupt-{warm}"
    path, stopped = _ingest_then(home, warm, project, "int")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    lines = [x for x in stopped.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted:"), stopped.stderr[-3000:]
    doc = json.loads(stopped.stdout)
    assert doc["status"] == "failed" and doc["error"].startswith("interrupted:") and doc["exit_code"] == 130

    assert rows(home, project) in (0, 1_000_000)  # never half: 1,000,000 if the Ctrl-C came after the commit
    if rows(home, project) == 0:  # the ledger says what stopped the run (it said "KeyboardInterrupt")
        ledger = json.loads(sluice(home, "ledger", "--json", "--limit", "1").stdout)
        [load] = [e for e in ledger[0]["states"] if e["state"] == "load"]
        assert load["error"].startswith("interrupted by Ctrl-C (SIGINT)"), ledger
    again = sluice(home, "ingest", str(path), "--dataset", "dailycheckins", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["status"] in ("success", "skipped")
    assert rows(home, project) == 1_000_000  # loaded exactly once


def test_a_served_command_killed_by_a_signal_says_so(home: Path, warm_runner: int) -> None:  # noqa: F811
    """Used to exit 137 in silence: the shell prints "Killed" for a process it ran, not for the runner's child."""
    path, killed = _ingest_then(home, "default", "killed", "kill")
    assert killed.returncode == 137
    lines = [x for x in killed.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "was killed by SIGKILL" in lines[0] and "Traceback" not in killed.stderr, lines
    # --json: stdout is still one document (was empty: the process that would print it was killed)
    assert json.loads(killed.stdout) == {
        "status": "failed",
        "error": lines[0].removeprefix("error: "),
        "exit_code": 137,
    }

    assert rows(home, "killed") == 0
    again = sluice(home, "ingest", str(path), "--dataset", "dailycheckins", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["rows_loaded"] == 1_000_000, again.stderr[
        -3000:
    ]
    assert rows(home, "killed") == 1_000_000
    assert runner_pid(home) == warm_runner  # the runner itself was not disturbed


def test_another_terminal_tab_uses_the_same_runner(home: Path, warm_runner: int) -> None:  # noqa: F811
    """Each tab of Windows Terminal, macOS Terminal, GNOME Terminal, iTerm2... sets its own session variable: it
    used to make the runner stale, so two tabs replaced each other's runner and ran every command in-process."""
    for i, tab in enumerate(
        [
            {"WT_SESSION": "0b7f6c1e-tab-one"},
            {"TERM_SESSION_ID": "w0t1p0:tab-two", "GNOME_TERMINAL_SCREEN": "/org/gnome/Terminal/screen/2"},
            {
                "ITERM_SESSION_ID": "w0t2p0:tab-three",
                "KITTY_WINDOW_ID": "3",
                "VSCODE_GIT_IPC_HANDLE": "/tmp/v.sock",
            },
        ]
    ):
        path = checkins(home / "tabs", f"tab-{i}")
        result = sluice(
            home, "ingest", str(path), "--dataset", "dailycheckins", "--json", env={**_env(home), **tab}
        )
        assert result.returncode == 0 and json.loads(result.stdout)["rows_loaded"] == 10, result.stderr[
            -3000:
        ]
        assert served(home, path.name), tab
    assert runner_pid(home) == warm_runner


def wait_loading(home: Path, path: Path, proc: subprocess.Popen[str]) -> None:  # noqa: F811 (the fixture)
    """Until the run of ``path`` is in its load state (per the ledger), or the command has ended."""
    pg = services.running_postgres(home / "pg")
    assert pg is not None
    engine = sa.create_engine(pg.url)
    query = sa.text(
        "select count(*) from sluice.run_ledger where source = :s and state = 'load' and status = 'running'"
    )

    def loading() -> bool:
        with engine.connect() as conn:
            if conn.execute(sa.text("select to_regclass('sluice.run_ledger')")).scalar() is None:
                return proc.poll() is not None
            return bool(conn.execute(query, {"s": str(path)}).scalar_one()) or proc.poll() is not None

    try:
        wait_for(loading, timeout=120)
    finally:
        engine.dispose()


def test_the_embedded_postgresql_killed_during_a_load_is_restarted_by_the_retry(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
) -> None:
    """``kill -9`` of the home's PostgreSQL while a file loads: the load's retry starts it again and the file loads
    once. It used to fail every retry with "connection refused": pgserver hands back its handle on a dead server."""
    path = big(home, "pg-killed", 300_000)
    env = {**_env(home), "SLUICE_WARM": "0", "SLUICE_RETRY_DELAY_SECONDS": "1"}
    proc = client(home, "ingest", str(path), "--dataset", "dailycheckins", "--json", env=env)
    pg = services.running_postgres(home / "pg")
    assert pg is not None
    wait_loading(home, path, proc)
    psutil.Process(pg.pid).kill()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out)["rows_loaded"] == 300_000
    restarted = services.running_postgres(home / "pg")
    assert restarted is not None and restarted.pid != pg.pid
    assert rows(home, "pg-killed") == 300_000


def test_the_prefect_server_killed_during_an_ingest_is_one_readable_line(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
) -> None:
    """Used to flood stderr with Prefect's internal ERROR lines (its events worker) and "--- Error logging to API
    ---" around the one readable error. The next command replaces the server; the file is loaded exactly once."""
    path = big(home, "prefect-killed", 300_000)
    proc = client(home, "ingest", str(path), "--dataset", "dailycheckins", "--json")
    server = services.running_prefect_server(home, timeout=30)
    assert server is not None
    wait_loading(home, path, proc)
    psutil.Process(server.pid).kill()
    out, err = proc.communicate(timeout=300)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) <= 1 and "Error logging to API" not in err and "ERROR" not in err, err[-3000:]
    # The load needs no Prefect API: it commits, and the command says so (it said "error: the Prefect API: …
    # Connection refused", exit 1, of a file that had loaded), from the ledger, with one warning line.
    assert proc.returncode == 0, lines
    assert lines[0].startswith(
        "warning: the Prefect API went away (ConnectError) after this run's load committed"
    )
    report = json.loads(out)
    assert (report["status"], report["rows_loaded"]) == ("success", 300_000), report
    assert report["notes"] == [lines[0].removeprefix("warning: ")]

    again = sluice(home, "ingest", str(path), "--dataset", "dailycheckins", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] in ("success", "skipped"), (
        again.stderr
    )
    replaced = services.running_prefect_server(home, timeout=30)
    assert replaced is not None and replaced.pid != server.pid
    assert rows(home, "prefect-killed") == 300_000


def test_services_stop_during_an_in_process_ingest_stops_everything_and_says_so(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
) -> None:
    """`sluice services stop` while a command runs in-process (``SLUICE_WARM=0``, or a stale runner's fallback): one
    readable line, and the stopped PostgreSQL is not started again behind the user's back by the load's retry."""
    path = big(home, "stopped-meanwhile", 300_000)
    env = {**_env(home), "SLUICE_WARM": "0", "SLUICE_RETRY_DELAY_SECONDS": "1"}
    proc = client(home, "ingest", str(path), "--dataset", "dailycheckins", "--json", env=env)
    wait_loading(home, path, proc)
    stopped = sluice(home, "services", "stop")
    assert stopped.returncode == 0, stopped.stderr
    out, err = proc.communicate(timeout=300)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) <= 1 and "Traceback" not in err and "ERROR" not in err, err[-3000:]
    if proc.returncode:
        # whichever service the run reached first after the stop, the line says what happened (the Prefect
        # server's said "ConnectError ... is the Prefect server running?", after ~40 s of retries)
        assert (
            lines[0].startswith("error: ") and "(`sluice services stop`) while this command ran" in lines[0]
        ), lines
    json.loads(out)
    time.sleep(1)
    assert services.running_postgres(home / "pg") is None
    assert processes_of(home) == []


def test_services_stop_during_a_served_ingest_says_it_stopped_the_command(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
) -> None:
    """`sluice services stop` in another terminal while a command runs through the warm runner (the default): the
    command says the stop ended it (was "killed by SIGTERM", as if by a stranger), --json still prints one document,
    nothing is half loaded and the same command loads the file once."""
    path = big(home, "stopped-served", 1_000_000)
    proc = client(home, "ingest", str(path), "--dataset", "dailycheckins", "--json")
    _child_of(home, path)
    wait_loading(home, path, proc)
    stopped = sluice(home, "services", "stop")
    assert stopped.returncode == 0 and "runner    stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    out, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.strip()]
    assert proc.returncode == 143, err[-3000:]
    assert len(lines) == 1 and "Traceback" not in err, lines
    assert lines[0].startswith("error: `sluice services stop` stopped this command"), lines
    assert json.loads(out) == {
        "status": "failed",
        "error": lines[0].removeprefix("error: "),
        "exit_code": 143,
    }

    again = sluice(home, "ingest", str(path), "--dataset", "dailycheckins", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["rows_loaded"] == 1_000_000, again.stderr[
        -3000:
    ]
    assert rows(home, "stopped-served") == 1_000_000


def test_a_prefect_server_replaced_by_another_homes_during_an_ingest_is_one_readable_line(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The home's server killed mid-run and its port taken at once by another home's server (a second home, a
    second checkout): the run's next state change reached a server that does not know the run. Was Prefect's
    ``ObjectNotFound: None`` with a 180-line traceback (CI, under xdist, where the other home was another worker's)."""
    path = big(home, "prefect-replaced", 300_000)
    proc = client(home, "ingest", str(path), "--dataset", "dailycheckins", "--json")
    server = services.running_prefect_server(home, timeout=30)
    assert server is not None
    wait_loading(home, path, proc)
    killed = psutil.Process(server.pid)
    killed.kill()
    killed.wait(timeout=30)
    other = tmp_path / "other-home"
    services.prefect_dir(other).mkdir(parents=True)
    try:
        stranger = services._start(
            other, previous_port=server.port
        )  # the port, as another home would take it
        assert stranger.port == server.port
        out, err = proc.communicate(timeout=300)
    finally:
        services.stop(other, None)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) <= 1 and "Traceback" not in err and "ERROR" not in err, err[-3000:]
    if proc.returncode:
        assert lines[0].startswith("error: ") and "sluice services status" in lines[0], lines
        assert json.loads(out)["error"] in lines[0]
    else:
        json.loads(out)

    again = sluice(home, "ingest", str(path), "--dataset", "dailycheckins", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] in ("success", "skipped"), (
        again.stderr
    )
    assert rows(home, "prefect-replaced") == 300_000


def test_the_embedded_postgresql_killed_during_a_backfill_is_restarted_once_and_every_file_loads(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
) -> None:
    """``kill -9`` of the home's PostgreSQL while a backfill's four threads load: each thread found it dead and
    restarted it at once, through pgserver, which is not thread-safe: 70 of 200 files failed within seconds (a
    bare ``AssertionError``, "Unable to release an unaquired lock"). Now one thread restarts it, the others wait,
    and each load's retry goes through."""
    project = "pg-killed-backfill"
    folder = home / "interrupt" / project
    landed(folder, 120, project, per_file=10)  # small files: runs start all the time, some while it is down
    args = ("backfill", str(folder), "--dataset", "dailycheckins", "--json")
    # retries 1, 2 and 4 s apart (2, 4 and 8 by default): a restart takes 1-2 s once the kill is seen
    proc = client(home, *args, env={**_env(home), "SLUICE_RETRY_DELAY_SECONDS": "1"})
    pg = services.running_postgres(home / "pg")
    assert pg is not None
    wait_for(lambda: rows(home, project) >= 50 or proc.poll() is not None, timeout=120)
    psutil.Process(pg.pid).kill()
    out, err = proc.communicate(timeout=300)
    doc = json.loads(out)
    failed = [(r["source"], r["state"], r["error"]) for r in doc["results"] if r["status"] != "success"]
    assert (proc.returncode, failed) == (0, []), (failed[:6], len(failed), err[-3000:])
    restarted = services.running_postgres(home / "pg")
    assert restarted is not None and restarted.pid != pg.pid
    assert rows(home, project) == 10 * 120


def test_a_second_ctrl_c_stops_a_backfill_at_once_and_still_reports_every_file(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
) -> None:
    """The second Ctrl-C raised a bare KeyboardInterrupt: no line per file (``--json``: only an error), "what it
    had not committed was rolled back", and the command went on waiting for the loads in flight, which then
    committed. Now it stops at once, with a result for every file: those it stopped while loading are rolled
    back (or had just committed), and the next backfill loads what is missing, once."""
    project = "ctrl-c-twice"
    folder = home / "interrupt" / project
    landed(folder, 4, project, per_file=600_000)
    args = ("backfill", str(folder), "--dataset", "dailycheckins", "--concurrency", "2", "--json")
    proc = client(home, *args)
    wait_for(lambda: rows(home, project) >= 600_000 or proc.poll() is not None, timeout=120)
    time.sleep(0.5)  # the next file's load under way
    proc.send_signal(signal.SIGINT)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    second = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - second < 10, err[-3000:]  # not the loads in flight
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    doc = json.loads(out)
    errors = [r["error"] or "" for r in doc["results"]]
    assert doc["files"] == 4 and doc["interrupted"] is True, doc
    stopped = sum(e.startswith("stopped while loading (Ctrl-C twice)") for e in errors)
    not_started = sum(e.startswith("not started: ") for e in errors)
    loaded = sum(r["status"] == "success" for r in doc["results"])
    assert stopped >= 1 and loaded >= 1 and loaded + stopped + not_started == 4, errors
    last = [x for x in err.splitlines() if x.strip()][-1]
    assert last.startswith("error: interrupted: ") and f"{stopped} were stopped while loading" in last, last

    again = sluice(home, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert rows(home, project) == 4 * 600_000  # every file once


@WARM
def test_sigterm_to_an_ingest_says_so_and_prints_its_json(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
    warm: str,
) -> None:
    """``kill -TERM`` of ``sluice ingest`` (a container's stop, a closed terminal): Prefect closes the run as failed,
    then kills its own process with the signal, so the command ended without a word and ``--json`` printed
    nothing (through the warm runner too: the client forwarded the signal and said nothing of it either)."""
    project = f"sigterm-{warm}"
    path = big(home, project, 1_000_000)
    proc = client(
        home, "ingest", str(path), "--dataset", "dailycheckins", "--json", env=environment(home, warm)
    )
    wait_loading(home, path, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.strip()]
    assert proc.returncode == 143, err[-3000:]
    assert lines == [f"error: {stopped_by(signal.SIGTERM)}"], lines
    assert json.loads(out) == {"status": "failed", "error": stopped_by(signal.SIGTERM), "exit_code": 143}
    assert rows(home, project) == 0

    again = sluice(
        home, "ingest", str(path), "--dataset", "dailycheckins", "--json", env=environment(home, warm)
    )
    assert again.returncode == 0 and json.loads(again.stdout)["rows_loaded"] == 1_000_000, again.stderr[
        -3000:
    ]


def test_sigterm_to_an_in_process_backfill_stops_it_at_once(
    home: Path,  # noqa: F811
    warm_runner: int,  # noqa: F811
) -> None:
    """In-process, SIGTERM to a backfill waited for the loads in flight before it exited (its threads cannot be
    stopped); it now says so and exits at once, and the next backfill loads each file once."""
    project = "sigterm-backfill"
    folder = home / "interrupt" / project
    landed(folder, 4, project, per_file=600_000)
    args = ("backfill", str(folder), "--dataset", "dailycheckins", "--concurrency", "2", "--json")
    proc = client(home, *args, env=environment(home, "0"))
    wait_for(lambda: rows(home, project) >= 600_000 or proc.poll() is not None, timeout=120)
    time.sleep(0.5)  # the next file's load under way
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - sent < 10, err[-3000:]
    assert proc.returncode == 143, err[-3000:]
    assert [x for x in err.splitlines() if x.strip()][-1] == f"error: {stopped_by(signal.SIGTERM)}"
    assert json.loads(out)["exit_code"] == 143
    # one file loaded and two in flight (concurrency 2): waiting for them loaded all three, 1.8M rows
    assert rows(home, project) <= 1_200_000

    again = sluice(home, *args, env=environment(home, "0"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert rows(home, project) == 4 * 600_000
