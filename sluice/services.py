"""Local services of one ``SLUICE_HOME``: a Prefect server and the embedded PostgreSQL, started on first need
(and the warm runner, ``sluice.warm``, shown and stopped with them).

Without ``PREFECT_API_URL`` every Sluice process would start its own ephemeral Prefect server (~12 s each,
on a random port that concurrent processes can both draw). Instead the first command that needs Prefect
starts ONE server for the home, detached (its own session, so it outlives the command), on a port that is
recorded in ``$SLUICE_HOME/prefect/server.json`` together with the process id and start time; its SQLite
database and log live in ``$SLUICE_HOME/prefect``. Every later command, worker and flow run of that home
reads the file and uses the same server. A server whose process is gone, whose process id now belongs to
another process, or that stops answering its health check is replaced. Starts are serialised by a file
lock in the home, so concurrent first commands start one server, not several.

This module is imported before Prefect by every command: it uses the standard library and psutil only.
Over 350 lines: two services' whole life cycle (start on first need under a lock, health, stale detection,
stop, status), which share the state-file and process helpers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sluice import warm  # the home's third service (standard library only; it imports this module lazily)
from sluice.errors import SluiceError
from sluice.files import identity, write_whole

STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
LOG_FILE = "server.log"
#: The UI's usual address; taken when free so the first home keeps a familiar URL, else any free port.
PREFERRED_PORT = 4200
#: First start migrates the SQLite database: slow on 2 cores.
START_TIMEOUT_SECONDS = 180.0
#: The name of the plain alias (a symbolic link in the temp folder) of a data folder whose path a shell would
#: split: ``sluice.adapters.warehouse`` starts the embedded PostgreSQL through it, ``stop_postgres`` removes it.
PG_ALIAS_PREFIX = "sluice-pg-"

logger = logging.getLogger(__name__)


def pg_alias(pgdata: Path) -> Path:
    """Where the plain alias of ``pgdata`` goes: ``<temp>/sluice-pg-<hash of the real path>``."""
    return (
        Path(tempfile.gettempdir())
        / f"{PG_ALIAS_PREFIX}{hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]}"
    )


class ServiceError(SluiceError):
    """A local service could not be started or reached."""


@dataclass(frozen=True)
class PrefectServer:
    """The recorded Prefect server of one home."""

    pid: int
    port: int
    create_time: float
    home: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def prefect_dir(home: Path) -> Path:
    """Where the home's Prefect server keeps its database, state file, lock and log."""
    return (home / "prefect").resolve()


def _read_state(home: Path) -> PrefectServer | None:
    try:
        data = json.loads((prefect_dir(home) / STATE_FILE).read_text(encoding="utf-8"))
        return PrefectServer(
            pid=int(data["pid"]),
            port=int(data["port"]),
            create_time=float(data["create_time"]),
            home=str(data["home"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(home: Path, server: PrefectServer) -> None:
    write_whole(prefect_dir(home) / STATE_FILE, json.dumps(asdict(server)))


def _forget(home: Path) -> None:
    (prefect_dir(home) / STATE_FILE).unlink(missing_ok=True)


def _process(pid: int, create_time: float | None = None) -> Any:
    """The live process ``pid`` (a psutil.Process), or None; with ``create_time``, only if it is that process."""
    import psutil  # process inspection only when services are started/stopped; kept off `sluice --help`

    if pid <= 0:  # a state file's nonsense, or postmaster.pid's negative pid (initdb's single-user backend)
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if create_time is not None and abs(proc.create_time() - create_time) > 0.5:
            return None  # the pid was reused by another process
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def wait_gone(procs: list[Any], timeout: float) -> list[Any]:
    """Wait until every one of ``procs`` (psutil processes) has exited, at most ``timeout`` seconds; returns those
    still running. A process that exited is gone even before its parent reaps it: psutil's own wait counts such a
    zombie as running, and where nothing reaps orphans soon (a container whose PID 1 is ``sleep infinity`` or
    ``tail -f /dev/null``; this machine's PID 1 every ~2 s) ``services stop`` waited out its timeouts."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        procs = [proc for proc in procs if _running(proc)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _running(proc: Any) -> bool:
    import psutil  # see _process

    try:
        proc.wait(0)  # exited: reaped here if it is this process's child
        return False
    except psutil.TimeoutExpired:
        pass
    except psutil.Error:
        return False
    try:
        return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def healthy(api_url: str, timeout: float = 5.0) -> bool:
    """True when ``api_url`` answers Prefect's health check (``GET /health`` → ``true``)."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status == 200 and response.read().strip() == b"true"
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _locked(home: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the home's service lock (blocking): one process at a time starts or stops its services."""
    return warm.held_lock(prefect_dir(home) / LOCK_FILE)


def running_prefect_server(home: Path, timeout: float = 5.0) -> PrefectServer | None:
    """The home's recorded server if its process is alive and it answers its health check."""
    server = _read_state(home)
    if server is None or _process(server.pid, server.create_time) is None:
        return None
    return server if healthy(server.api_url, timeout) else None


def ensure_prefect_server(home: Path, starting: Callable[[], None] | None = None) -> str:
    """The API URL of the home's Prefect server, starting (or replacing) it when needed; ``starting`` is called
    first when none answers (this process starts one, or waits while another process starts it)."""
    server = running_prefect_server(home)
    if server is not None:
        return server.api_url
    if starting is not None:
        starting()
    with _locked(home):
        server = _read_state(home)  # another process may have started it while we waited for the lock
        if server is not None and _process(server.pid, server.create_time) is not None:
            if _wait_healthy(server, None, 30.0):  # alive: maybe only busy
                return server.api_url
            _terminate(server.pid)  # alive but not answering: hung, replace it
        _forget(home)
        return _start(home, previous_port=server.port if server else _stopped_port(home)).api_url


def _stopped_port(home: Path) -> int | None:
    """The port of the server `services stop` stopped last (its marker): taken again when free, so the UI keeps its
    address across a stop while 4200 belongs to something else (it moved at every start)."""
    try:
        return int((prefect_dir(home) / PREFECT_STOPPED).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _wait_healthy(server: PrefectServer, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    """Wait until ``server`` answers; with ``proc`` (the server being started), until it answers from ``proc``.

    A server that answers on the port is not proof enough: two homes starting at once may both find the preferred
    port free, and the one that loses the bind would see the other's server answer and take it for its own (its
    runs then land in the other home's Prefect database)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if healthy(server.api_url, timeout=5.0) and (proc is None or _listens(proc.pid, server.port)):
            return True
        time.sleep(0.2)
    return False


def _listens(pid: int, port: int) -> bool:
    """True when process ``pid`` (or one of its children) listens on TCP ``port``."""
    import psutil  # see _process

    try:
        root = psutil.Process(pid)
        for proc in (root, *root.children(recursive=True)):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return False


def _candidate_ports(previous: int | None) -> Iterator[int]:
    for port in (previous, PREFERRED_PORT):
        if port and (_port_free(port) or _freed(port)):
            yield port
    while True:
        yield _any_free_port()


#: How long a new server waits for the server of a removed home to leave the port it wants (that server checks
#: its home every ``prefect_server.WATCH_SECONDS``, 5 s, then shuts down).
ORPHAN_WAIT_SECONDS = 10.0


def _freed(port: int) -> bool:
    """Whether ``port`` is free after waiting for its holder to leave, when that holder is the Prefect server of a
    home that was removed (``rm -rf .sluice && ./run demo``: the new home's server took another port, and the
    UI's address changed for good, while the old server was still seconds from noticing)."""
    import psutil  # see _process

    try:
        holders = {
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        }
    except (psutil.Error, OSError):  # not allowed to list sockets (another OS, another user)
        return False
    for pid in holders - {None}:
        try:
            proc = psutil.Process(pid)
            if "sluice.prefect_server" not in proc.cmdline():
                return False
            folder, cwd = proc.environ().get("PREFECT_HOME"), identity(f"/proc/{pid}/cwd")
            # its working folder is its home's Prefect folder (services._start): gone, or made anew since
            if not folder or cwd is None or cwd == identity(folder):
                return False  # a live home's server (or, without /proc, one we cannot tell)
            proc.wait(ORPHAN_WAIT_SECONDS)
        except (psutil.Error, OSError):
            continue  # gone already, or not ours to inspect
    return _port_free(port)


#: What the home's server must not take from the caller's environment: another server's address and key, the
#: UI's API address (derived from the port below), the caller's logging set-up.
_NOT_FOR_THE_SERVER = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_LOGGING_SETTINGS_PATH",
    "PREFECT_UI_API_URL",
    "PREFECT_SERVER_UI_API_URL",
)


def _server_env(home: Path, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _NOT_FOR_THE_SERVER and not k.startswith("PREFECT_LOGGING_HANDLERS_")
    }
    env["PREFECT_HOME"] = str(prefect_dir(home))
    # The UI asks its server where the API is (/ui-settings): Prefect derives it from these, not from --port, so
    # a server on another port than 4200 sent its UI to whatever answered on 4200 (another home's server).
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    env.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", "60")  # SQLite under many concurrent runs
    # Task-run events written in batches (Prefect's default is one SQLite transaction per event, ~9 per ingest);
    # the UI shows a task run at most a second later. Server CPU per 10-row ingest: 0.10 -> 0.07 s.
    env.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE", "100")
    env.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL", "1")
    return env


def _start(home: Path, previous_port: int | None) -> PrefectServer:
    folder = prefect_dir(home)
    log_path = folder / LOG_FILE
    ports = _candidate_ports(previous_port)
    for _attempt in range(3):
        port = next(ports)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 (our interpreter, fixed arguments)
                [
                    sys.executable,
                    "-m",
                    "sluice.prefect_server",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=_server_env(home, port),
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command; its own process group for stop()
            )
        proc_info = _process(proc.pid)
        server = PrefectServer(
            pid=proc.pid,
            port=port,
            create_time=proc_info.create_time() if proc_info is not None else 0.0,
            home=str(home.resolve()),
        )
        if _wait_healthy(server, proc, START_TIMEOUT_SECONDS):
            _write_state(home, server)
            proc.returncode = 0  # detached on purpose: no "still running" warning from this handle
            close_orphaned_runs(server.api_url)
            return server
        if proc.poll() is None:
            _terminate(proc.pid)
        proc.wait()
        tail = _log_tail(log_path)
        if "already in use" not in tail and "address in use" not in tail.lower():
            raise ServiceError(
                f"the local Prefect server did not start ({tail.splitlines()[-1] if tail else 'no output'}); "
                f"see {log_path}"
            )
    raise ServiceError(f"the local Prefect server found no free port to listen on; see {log_path}")


#: What a run a worker started, whose process is gone, is closed as when the home's server starts again
ORPHANED = (
    "its process ended without telling the Prefect server (the worker was stopped or killed, or the server was "
    "down); closed when the home's server started again"
)


def close_orphaned_runs(api_url: str) -> int:
    """Close the runs a process worker started whose process is gone: ``Crashed`` (``Cancelled`` for one being
    cancelled); returns how many.

    A worker stopped with Ctrl-C kills its runs' processes: they stayed ``Running`` (or ``Cancelling``, once
    ``prefect flow-run cancel`` asked) for good, each holding its deployment's concurrency slot. A running server
    frees the slot when the slot's lease expires (about five minutes), but it keeps leases in memory: after
    ``services stop`` and a new start, nothing freed them, and every new run of the deployment waited for a slot
    forever. Closing such a run frees its slot (Prefect's release falls back to the deployment's limit when the
    lease is gone). Checked when the home's server starts, by the run's ``infrastructure_pid`` (the worker's
    process id of the run), on this machine; a run without one (``sluice ingest``, in-process) is left as it is.
    Best effort: a failure here never stops the start."""
    try:
        found = _api(
            api_url,
            "/flow_runs/filter",
            {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "CANCELLING"]}}}, "limit": 200},
        )
        closed = 0
        for run in found if isinstance(found, list) else []:
            pid = str(run.get("infrastructure_pid") or "").rpartition(":")[2]
            if not pid.isdigit() or _process(int(pid)) is not None:
                continue  # not a worker's run, or its process lives
            cancelling = (run.get("state") or {}).get("type") == "CANCELLING"
            state = (
                {"type": "CANCELLED", "name": "Cancelled"}
                if cancelling
                else {"type": "CRASHED", "name": "Crashed"}
            )
            _api(
                api_url,
                f"/flow_runs/{run['id']}/set_state",
                {"state": {**state, "message": ORPHANED}, "force": True},
            )
            closed += 1
        return closed
    except (OSError, ValueError, KeyError) as exc:
        logger.debug("orphaned runs not closed: %s", exc)
        return 0


def _api(api_url: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310 (the home's own loopback server)
        f"{api_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def _log_tail(path: Path, size: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _terminate(pid: int, timeout: float = 15.0) -> None:
    """Stop a server we started: SIGTERM to its process group, SIGKILL if it lingers."""
    import psutil  # process inspection only when services are started/stopped; kept off `sluice --help`

    proc = _process(pid)
    if proc is None:
        return
    members = [proc, *proc.children(recursive=True)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)  # start_new_session made the server its group's leader
    for member in members:
        with contextlib.suppress(psutil.Error):
            member.terminate()
    alive = wait_gone(members, timeout)
    for member in alive:
        with contextlib.suppress(psutil.Error):
            member.kill()
    wait_gone(alive, 5)


#: Written in the home's Prefect folder by `services stop`, holding the stopped server's port: a command whose
#: requests to that server fail afterwards says the stop ended its run (``cli.output.unreachable``), not "is the
#: Prefect server running?" after its retries.
PREFECT_STOPPED = "sluice-stopped"


def stop_prefect_server(home: Path) -> PrefectServer | None:
    """Stop the home's Prefect server; returns what was stopped (None if nothing ran)."""
    with _locked(home):
        server = _read_state(home)
        _forget(home)
        if server is None or _process(server.pid, server.create_time) is None:
            return None
        _terminate(server.pid)
        with contextlib.suppress(OSError):
            write_whole(prefect_dir(home) / PREFECT_STOPPED, str(server.port))
        return server


def prefect_stopped_since(home: Path, port: int | None, since: float) -> bool:
    """Whether `services stop` stopped the home's Prefect server on ``port`` after ``since`` (a Unix time)."""
    marker = prefect_dir(home) / PREFECT_STOPPED
    try:
        return marker.stat().st_mtime >= since and marker.read_text(encoding="utf-8").strip() == str(port)
    except OSError:
        return False


# --- the embedded PostgreSQL (pgserver) -------------------------------------------------------------


#: Written in the data folder by `services stop`: a command that saw the server die after this stops, it does not
#: start it again behind the user's back (``sluice.adapters.warehouse``).
POSTGRES_STOPPED = "sluice-stopped"


def postgres_stopped_since(pgdata: Path, since: float) -> bool:
    """Whether `services stop` stopped the embedded PostgreSQL of ``pgdata`` after ``since`` (a Unix time)."""
    try:
        return (pgdata / POSTGRES_STOPPED).stat().st_mtime >= since
    except OSError:
        return False


@dataclass(frozen=True)
class Postgres:
    """A running embedded PostgreSQL: its postmaster, data folder and Unix-socket folder."""

    pid: int
    pgdata: str
    socket_dir: str

    @property
    def url(self) -> str:
        """The SQLAlchemy URL, its socket folder percent-encoded: a home's space, ``%`` or ``ü`` read back as
        written (``services status`` printed it raw, ``db url`` encoded)."""
        return (
            f"postgresql+psycopg2://postgres:@/postgres?host={urllib.parse.quote(self.socket_dir, safe='/')}"
        )


def running_postgres(pgdata: Path) -> Postgres | None:
    """The embedded PostgreSQL of ``pgdata`` if its postmaster runs (read from ``postmaster.pid``): a live postgres
    process whose working folder is ``pgdata`` (a postmaster works in its data folder). A pid the system gave to
    another process since (a reboot, a container's low pids), even another home's postmaster, is not it: `services
    stop` of one home stopped another home's database."""
    pid, lines = _postmaster_pid(pgdata)
    proc = _process(pid) if pid is not None else None
    if proc is None or not _works_in(proc, pgdata):
        return None
    return Postgres(pid=pid, pgdata=str(pgdata), socket_dir=lines[4] if len(lines) > 4 else str(pgdata))


def _postmaster_pid(pgdata: Path) -> tuple[int | None, list[str]]:
    try:
        lines = (pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        return int(lines[0]), lines
    except (OSError, ValueError, IndexError):
        return None, []


def _works_in(proc: Any, pgdata: Path) -> bool:
    """Whether the live process ``proc`` (psutil) is ``pgdata``'s postmaster: a postgres working in that folder."""
    import psutil  # see _process

    try:
        if not proc.name().startswith("postgres"):
            return False
        return os.path.realpath(proc.cwd()) == os.path.realpath(pgdata)
    except psutil.AccessDenied:
        return True  # not ours to inspect (another user's): the name is all there is to go by
    except psutil.Error:
        return False


def stale_postmaster_pid(pgdata: Path) -> int | None:
    """The pid ``postmaster.pid`` names when it is a live process other than ``pgdata``'s postmaster, else None
    (no file, initdb's negative pid, a dead pid: PostgreSQL's own check copes with those)."""
    pid, _ = _postmaster_pid(pgdata)
    proc = _process(pid) if pid is not None else None
    if proc is None or _works_in(proc, pgdata):
        return None
    return pid


def zombie_postmaster(pgdata: Path) -> bool:
    """Whether the pid in ``postmaster.pid`` or in the socket's lock file is a zombie: a killed postmaster its parent
    (PID 1, for a server that outlived its command) has not reaped yet. PostgreSQL refuses to start beside it."""
    import psutil  # see _process

    pids = [_postmaster_pid(pgdata)[0]]
    for lock in pgdata.glob(".s.PGSQL.*.lock"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int(lock.read_text(encoding="utf-8").splitlines()[0]))
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if pid is not None and pid > 0 and psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
    return False


def clear_stale_postmaster_pid(pgdata: Path) -> bool:
    """Remove ``postmaster.pid`` when it names a live process that is not ``pgdata``'s postmaster (its pid reused
    since the server died: after a reboot, or in a container, where pids start low again). PostgreSQL refuses to
    start beside it ("is another postmaster running?") and pgserver, which trusts any live pid, hands out a socket
    nobody listens on: every command then failed with "cannot connect to the warehouse". Call it holding
    pgserver's start lock (no concurrent start then writes the file). Returns whether it removed the file."""
    pid = stale_postmaster_pid(pgdata)
    if pid is None:
        return False
    logger.warning(
        "%s names process %s, which is not this folder's PostgreSQL (the server stopped and the pid was reused); "
        "removed it",
        pgdata / "postmaster.pid",
        pid,
    )
    (pgdata / "postmaster.pid").unlink(missing_ok=True)
    return True


def stop_postgres(pgdata: Path, timeout: float = 30.0) -> Postgres | None:
    """Stop the embedded PostgreSQL (SIGINT = PostgreSQL's fast shutdown: transactions roll back)."""
    import psutil  # process inspection only when services are started/stopped; kept off `sluice --help`

    running = running_postgres(pgdata)
    if running is None:
        return None
    proc = _process(running.pid)
    if proc is None:
        return None
    with contextlib.suppress(OSError):  # read by a command running meanwhile: stopped on purpose, not crashed
        (pgdata / POSTGRES_STOPPED).write_text(str(time.time()), encoding="utf-8")
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGINT)
    wait_gone([proc], timeout)
    if _process(running.pid) is not None:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _remove_alias(Path(running.socket_dir), pgdata)
    return running


def _remove_alias(socket_dir: Path, pgdata: Path) -> None:
    """Remove the plain alias a data folder with a space in its path was started through (``pg_alias``, made by
    ``sluice.adapters.warehouse``), once its server has stopped."""
    if socket_dir.name.startswith(PG_ALIAS_PREFIX) and socket_dir.is_symlink():
        with contextlib.suppress(OSError):
            if Path(os.readlink(socket_dir)).resolve() == pgdata.resolve():
                socket_dir.unlink()


# --- both -------------------------------------------------------------------------------------------


def status(
    home: Path, pgdata: Path | None, env: dict[str, str] | None = None, cwd: str | None = None
) -> dict[str, Any]:
    """What runs for ``home``: the warm runner (and whether it matches ``env``), the Prefect server (URL, UI,
    pid) and the embedded PostgreSQL."""
    server = _read_state(home)
    alive = server is not None and _process(server.pid, server.create_time) is not None
    answering = alive and server is not None and healthy(server.api_url)
    pg = running_postgres(pgdata) if pgdata is not None else None

    return {
        "home": str(home.resolve()),
        "runner": warm.status(home.resolve(), env, cwd),
        "prefect": {
            "running": bool(answering),
            "state": "running" if answering else ("not answering" if alive else "stopped"),
            "pid": server.pid if alive and server else None,
            "ui": server.url if answering and server else None,
            "api_url": server.api_url if answering and server else None,
            "database": str(prefect_dir(home) / "prefect.db"),
            "log": str(prefect_dir(home) / LOG_FILE),
        },
        "postgres": {
            "running": pg is not None,
            "state": "running" if pg is not None else ("external" if pgdata is None else "stopped"),
            "pid": pg.pid if pg else None,
            "url": pg.url if pg else None,
            "pgdata": str(pgdata) if pgdata is not None else None,
        },
    }


def stop(home: Path, pgdata: Path | None) -> dict[str, bool]:
    """Stop the home's warm runner (and the commands it runs), Prefect server and embedded PostgreSQL; says
    which were running. A home that is no folder (not made yet, or a path that cannot be one: under a file, under
    /proc) holds no runner, server or data folder: nothing was running, and nothing is created to find that out."""
    if not home.is_dir():
        return {"runner": False, "prefect": False, "postgres": False}
    stopped_runner = warm.stop(home.resolve())
    stopped_prefect = stop_prefect_server(home) is not None
    stopped_pg = stop_postgres(pgdata) is not None if pgdata is not None else False
    return {"runner": stopped_runner, "prefect": stopped_prefect, "postgres": stopped_pg}
