"""The warm runner of one ``SLUICE_HOME``: a long-lived process that has already imported what a command needs.

A flow-running command (``sluice ingest``, ``backfill``, ``totesys``, ``analytics``, ``customers``, ``demo``) spends
most of a small run importing Prefect, pandas, pandera and SQLAlchemy (~1.2 CPU-s here). The runner
(``sluice.warm_server``) imports them once and forks one child per command; the ``sluice`` console script
(``sluice.launch``, standard library only) hands the child its stdin/stdout/stderr (``SCM_RIGHTS``), argv, working
folder and environment over a Unix socket in the home, and exits with the child's status.

Like the home's Prefect server (``sluice.services``) it is started on first need, in the background, recorded in
``$SLUICE_HOME/warm/runner.json`` (pid, process start time, socket, fingerprint), shown and stopped by ``sluice
services status|stop``, and replaced when stale. Stale means the fingerprint differs: Prefect reads its settings
once, at import (``prefect.context.GLOBAL_SETTINGS_CONTEXT = root_settings_context()``: environment, profile,
``.env``/``prefect.toml`` of the working folder), and the runner holds the code it imported. So the fingerprint
covers the environment (minus per-terminal variables, ``volatile``), the working folder and its Prefect files, the Prefect profile,
the interpreter and ``sys.path``, and the size and mtime of every file of Sluice's packages, ``uv.lock``,
``pyproject.toml`` and the site-packages folders. A client whose fingerprint differs runs in-process (correct,
slower) and starts a replacement in the background: the user never gets a result from old code or settings.

This module is imported by the thin client: standard library only (psutil is imported inside the functions that
inspect processes, which the client's fast path never calls). Over 350 lines: the state file, the start lock
hand-over, the fingerprint, the wire messages and start/status/stop are one protocol shared by client and runner.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sluice.files import write_whole

#: Bumped when the client/runner messages change: a runner of another protocol is stale.
PROTOCOL = 1
RUNNER_DIR = "warm"
STATE_FILE = "runner.json"
LOCK_FILE = "runner.lock"
SPAWN_LOCK_FILE = "spawn.lock"
LOG_FILE = "runner.log"
SOCKET_FILE = "runner.sock"
#: The commands that run flows and so pay the heavy imports; everything else (``--help``, ``ledger``, ``services``,
#: ``db``, ``notify``, ``aws``, ``api``) runs in-process: it imports neither Prefect's engine nor pandas.
WARM_COMMANDS = frozenset({"ingest", "backfill", "totesys", "analytics", "customers", "demo"})
#: Environment variables left out of the fingerprint: per shell/terminal/test, read by nothing that is imported
#: before the fork (the child gets the client's whole environment, and rich's consoles are re-created in it).
VOLATILE_ENV = frozenset(
    {
        "_",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "COLUMNS",
        "LINES",
        "TERM",
        "COLORTERM",
        "TERM_PROGRAM",
        "TERM_PROGRAM_VERSION",
        "NO_COLOR",
        "FORCE_COLOR",
        "PS1",
        "PS2",
        "PROMPT_COMMAND",
        "HISTFILE",
        "LS_COLORS",
        "SSH_TTY",
        "SSH_CLIENT",
        "SSH_CONNECTION",
        "SSH_AUTH_SOCK",
        "GPG_TTY",
        "WINDOWID",
        "TMUX",
        "TMUX_PANE",
        "STY",
        "DISPLAY",
        "XDG_SESSION_ID",
        "PYTEST_CURRENT_TEST",
        # One value per terminal window or tab (Windows Terminal/WSL, macOS Terminal, GNOME Terminal, Konsole):
        # fingerprinted, two tabs of one user replaced each other's runner at every command, and ran in-process.
        "WT_SESSION",
        "WT_PROFILE_ID",
        "TERM_SESSION_ID",
        "GNOME_TERMINAL_SCREEN",
        "GNOME_TERMINAL_SERVICE",
        "KONSOLE_DBUS_SESSION",
        "KONSOLE_DBUS_WINDOW",
        "SHELL_SESSION_ID",
    }
)
#: Prefixes of the same kind (iTerm2, kitty, WezTerm, Alacritty, VS Code's integrated terminal per window).
VOLATILE_PREFIXES = ("ITERM_", "KITTY_", "WEZTERM_", "ALACRITTY_", "VSCODE_", "LC_TERMINAL")


def volatile(name: str) -> bool:
    """Whether ``name`` is a per-shell/terminal variable that the fingerprint leaves out."""
    return name in VOLATILE_ENV or name.startswith(VOLATILE_PREFIXES)


#: What the project's code is: these packages' files (any type: schemas, datasets and SQL are read at import too).
PACKAGES = ("sluice", "flows", "tasks", "schemas")
START_TIMEOUT_SECONDS = 180.0
_HEADER = struct.Struct("!I")


def enabled(env: Mapping[str, str]) -> bool:
    """``SLUICE_WARM=0`` (or false/no/off) keeps every command in-process."""
    return env.get("SLUICE_WARM", "1").strip().lower() not in ("0", "false", "no", "off")


def wants_warm(args: list[str]) -> bool:
    """Whether the command line (without the program name) is a flow-running command that should go warm.
    ``--help`` and ``--verbose`` stay in-process: they are cheap, or need Prefect's console set up differently."""
    if not args or args[0] not in WARM_COMMANDS:
        return False
    return not any(a in ("--help", "-h", "--verbose", "-v") for a in args)


def home_of(env: Mapping[str, str]) -> Path:
    """The home the command uses (``SLUICE_HOME``, default ``.sluice`` in the working folder; ``~`` is the user's
    home folder, as an env file that no shell expanded writes it)."""
    return Path(env.get("SLUICE_HOME", ".sluice")).expanduser().resolve()


def runner_dir(home: Path) -> Path:
    return home / RUNNER_DIR


def socket_path(home: Path) -> str:
    """The runner's socket: in the home, or in the temp folder when that path is too long for ``AF_UNIX``."""
    path = str(runner_dir(home) / SOCKET_FILE)
    if len(path.encode()) < 100:
        return path
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:20]
    return str(Path(tempfile.gettempdir()) / f"sluice-warm-{digest}.sock")


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def _stat_line(path: Path | str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\0-\n"
    return f"{path}\0{st.st_mtime_ns}\0{st.st_size}\n"


def _code_files(root: Path) -> Iterator[str]:
    for package in PACKAGES:
        for folder, dirs, files in os.walk(root / package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if not name.endswith((".pyc", ".pyo")):
                    yield os.path.join(folder, name)


def fingerprint(env: Mapping[str, str], cwd: str) -> str:
    """What a runner must share with a command for the command's result to be the one in-process would give."""
    home = home_of(env)
    root = project_root()
    profiles = env.get("PREFECT_PROFILES_PATH") or str(
        Path(env["PREFECT_HOME"]) / "profiles.toml"
        if "PREFECT_HOME" in env
        else (Path.home() / ".prefect" if "PREFECT_API_URL" in env else home / "prefect") / "profiles.toml"
    )
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "protocol": PROTOCOL,
                "python": [sys.executable, sys.version],
                # Without the entry Python prepends (the script's folder, or the working folder for -m/-c: the
                # runner runs with -P and the working folder is in the fingerprint anyway).
                "path": sys.path if sys.flags.safe_path else sys.path[1:],
                "cwd": cwd,
                "home": str(home),
                # SLUICE_HOME as the resolved home above: `./run demo` (unset: .sluice) and `./run sluice` (the
                # same folder, absolute) replaced each other's runner at every switch, and ran in-process (3-5 s)
                "env": sorted((k, v) for k, v in env.items() if not volatile(k) and k != "SLUICE_HOME"),
            }
        ).encode()
    )
    for path in _code_files(root):
        h.update(_stat_line(path).encode())
    extras = [root / "uv.lock", root / "pyproject.toml", profiles]
    extras += [Path(cwd) / name for name in (".env", "prefect.toml", "pyproject.toml")]
    extras += [p for p in sys.path if p.endswith("site-packages")]
    for path in extras:
        h.update(_stat_line(path).encode())
    return h.hexdigest()


# --- messages -------------------------------------------------------------------------------------------------


def send_message(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """One length-prefixed JSON message, with ``fds`` passed along (``SCM_RIGHTS``)."""
    body = json.dumps(message).encode()
    data = _HEADER.pack(len(body)) + body
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        if sent < len(data):  # never an empty send: once the peer has read it all and closed, that is EPIPE
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def recv_message(sock: socket.socket, maxfds: int = 3) -> tuple[dict[str, Any], list[int]]:
    """The next message and the descriptors that came with it; ``ConnectionError`` when the peer is gone."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 65536, maxfds)
    if not data:
        raise ConnectionError("peer closed")
    while len(data) < _HEADER.size:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("peer closed")
        data += more
    (size,) = _HEADER.unpack_from(data)
    while len(data) < _HEADER.size + size:
        more = sock.recv(max(65536, _HEADER.size + size - len(data)))
        if not more:
            raise ConnectionError("peer closed")
        data += more
    return json.loads(data[_HEADER.size : _HEADER.size + size]), list(fds)


def send_line(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


# --- state ----------------------------------------------------------------------------------------------------


def read_state(home: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((runner_dir(home) / STATE_FILE).read_text(encoding="utf-8"))
        int(data["pid"]), float(data["create_time"]), str(data["fingerprint"])
        return data
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(home: Path, state: dict[str, Any]) -> None:
    write_whole(runner_dir(home) / STATE_FILE, json.dumps(state))


def forget(home: Path, pid: int) -> None:
    """Remove the state (and socket) if they still describe runner ``pid`` (not its replacement)."""
    state = read_state(home)
    if state is not None and int(state["pid"]) == pid:
        (runner_dir(home) / STATE_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.unlink(state.get("socket") or socket_path(home))


@contextlib.contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder, if absent) until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def state_lock(home: Path) -> contextlib.AbstractContextManager[None]:
    """One process at a time records, replaces or stops the home's runner (held briefly)."""
    return held_lock(runner_dir(home) / LOCK_FILE)


def _alive(state: dict[str, Any] | None) -> Any:
    """The runner's live process (psutil) if ``state`` describes one that still runs."""
    if state is None:
        return None
    from sluice.services import _process  # psutil: only when inspecting processes, never on the fast path

    return _process(int(state["pid"]), float(state["create_time"]))


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def ping(home: Path, fp: str | None = None, timeout: float = 5.0) -> dict[str, Any] | None:
    """The runner's answer (pid, fingerprint, whether it matches ``fp``), or None if nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path(home))
            send_message(sock, {"ping": True, "fingerprint": fp})
            line = sock.makefile("rb").readline()
            return json.loads(line) if line else None
    except (OSError, ValueError):
        return None


# --- start, status, stop --------------------------------------------------------------------------------------


def start(home: Path, env: Mapping[str, str], cwd: str, wait: bool) -> bool:
    """Start a runner for this environment in the background (detached, its own session).

    Concurrent callers start one: the starter holds ``spawn.lock`` and hands it to the runner, which keeps it until
    it serves. Without ``wait``, returns False at once if a start is already under way; with ``wait``, returns once
    a runner with this fingerprint answers (True) or the start failed (False).
    """
    import subprocess  # only when starting one

    folder = runner_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / SPAWN_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            with contextlib.suppress(OSError), (folder / LOG_FILE).open("a") as log:
                log.write(
                    f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] a start is under way already\n"
                )
            return False
        fp = fingerprint(env, cwd)
        if wait and (ping(home, fp) or {}).get("current"):
            return True
        with (folder / LOG_FILE).open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 (our interpreter, fixed arguments)
                [sys.executable, "-P", "-m", "sluice.warm_server", str(fd)],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the command; its own process group for stop()
                pass_fds=(fd,),
            )
        if not wait:
            proc.returncode = 0  # detached on purpose: no "still running" warning from this handle
            return True
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if (ping(home, fp) or {}).get("current"):
                proc.returncode = 0
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False
    finally:
        os.close(fd)


#: The runner a command run in-process would start (home, environment, working folder), set by the thin client
#: and started by ``start_deferred`` once the command has parsed and needs flows.
_deferred: tuple[Path, dict[str, str], str] | None = None


def defer_start(home: Path, env: Mapping[str, str], cwd: str) -> None:
    """Start a runner for this command's home once the command is known to need one (``start_deferred``).

    Started at once, a mistyped command (``sluice ingest`` without its file, ``--mode strict``) left a runner and a
    Prefect server running in the background (about 300 MB) for a command that never ran."""
    global _deferred
    _deferred = (home, dict(env), cwd)


def start_deferred() -> None:
    """Start the runner ``defer_start`` named, in the background (at most once per process)."""
    global _deferred
    if _deferred is None:
        return
    home, env, cwd = _deferred
    _deferred = None
    with contextlib.suppress(OSError):
        start(home, env, cwd, wait=False)


def status(home: Path, env: Mapping[str, str] | None = None, cwd: str | None = None) -> dict[str, Any]:
    """The home's runner: running or not, its pid, and whether it matches ``env`` (this command's environment)."""
    state = read_state(home)
    proc = _alive(state)
    answer = (
        ping(home, fingerprint(env, cwd) if env is not None and cwd is not None else None) if proc else None
    )
    running = proc is not None and answer is not None and answer.get("pid") == int(state["pid"])  # type: ignore[index]
    return {
        "running": running,
        "state": "running" if running else ("not answering" if proc is not None else "stopped"),
        "pid": int(state["pid"]) if proc is not None and state else None,
        "current": bool(answer and answer.get("current")) if running else None,
        "commands": answer.get("children") if running and answer else None,
        "socket": socket_path(home),
        "log": str(runner_dir(home) / LOG_FILE),
    }


def _wait_for_start(home: Path, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Wait (bounded) while a runner is starting: its starter holds ``spawn.lock`` and hands it to the runner, which
    keeps it until it serves. Without this, ``services stop`` right after a command had started one in the
    background found no runner yet, and the runner then registered and outlived the stop (seen after the tests)."""
    path = runner_dir(home) / SPAWN_LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return  # no start ever happened here
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
    finally:
        os.close(fd)  # releases the lock


def stop(home: Path, timeout: float = 20.0) -> bool:
    """Stop the home's runner and the commands it is running (SIGTERM, then SIGKILL to its process group)."""
    import psutil  # process inspection only when stopping

    from sluice.services import wait_gone

    _wait_for_start(home)
    with state_lock(home):
        state = read_state(home)
        proc = _alive(state)
        if state is not None:
            forget(home, int(state["pid"]))
    if proc is None:
        return False
    # Waited for outside the lock: the runner takes it on its way out (warm_server.main), so holding it here kept
    # every stop waiting the whole timeout and then SIGKILLed a runner that was exiting cleanly.
    # Its forked commands share its session; the Prefect server it may have started has a session of its own.
    members = [proc, *(c for c in proc.children(recursive=True) if _session(c.pid) == proc.pid)]
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)  # the runner forwards it to its children, reaps them, exits
    alive = wait_gone(members, timeout)
    if alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the runner leads its group
        for member in alive:
            with contextlib.suppress(psutil.Error):
                member.kill()
        wait_gone(alive, 5)
    return True
