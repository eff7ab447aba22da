"""The warm runner's process (``python -m sluice.warm_server [LOCK_FD]``; see ``sluice.warm``).

It sets Prefect's environment exactly as a command would (``runtime.prepare``), imports the CLI, the flows, the
tasks, Prefect, pandas, pandera and SQLAlchemy, and then only serves: a single-threaded selector loop on its Unix
socket that forks one child per command and sends each child's exit status back when ``SIGCHLD`` says it ended.
Nothing before the fork starts a thread, an event loop, a database pool or an HTTP client (checked at each
fork: ``threading.active_count() == 1``, else the command is refused and runs in-process).

``SIGHUP``: stop accepting, let running commands finish, exit (a replacement took over). ``SIGTERM``
(``sluice services stop``): the same, and the running commands get ``SIGTERM`` too. Its home's runner folder
removed (``rm -rf .sluice`` to start again: no state file is left for ``services stop`` to find it by): the same as
``SIGHUP``, noticed within ``WATCH_SECONDS``.

Over 350 lines: the preload list, the serve loop and the child's set-up (descriptors, environment, consoles,
exit) are one mechanism, each part only safe with the others (fork safety, exit status, signals).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import os
import re
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from sluice import warm
from sluice.files import identity

#: How often the serve loop wakes without a request: to notice that its home's folder was removed.
WATCH_SECONDS = 5.0

# The password of a URL in a command line (`totesys --source-url postgresql://user:pw@host/db`): up to the last '@'
# of the word, so a password holding a raw '@' is hidden whole too.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]*:)[^\s]*@")


def _shown(argv: list[str]) -> str:
    """A command line for the runner's log (a file other users may read): at most 200 characters, URL passwords
    hidden."""
    return _URL_PASSWORD.sub(r"\1***@", " ".join(argv))[:200]


def _log(message: str) -> None:
    sys.stdout.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {message}\n")
    sys.stdout.flush()


def preload() -> None:
    """Import everything the warm commands import, in the order a command would (after ``prepare``)."""
    import sluice.adapters.warehouse
    import sluice.cli
    import sluice.cli.backfill
    import sluice.cli.data2bots
    import sluice.cli.fanout
    import sluice.cli.runner
    import sluice.cli.sertis
    import sluice.cli.totesys
    import sluice.demo
    import sluice.ledger
    import sluice.settings  # (imported for its side effect: loaded before the fork)

    with contextlib.suppress(ImportError):  # the image leaves the embedded PostgreSQL out
        import pgserver  # noqa: F401
    # What a command's first flow run imports on the way (measured: 248 modules, 0.29 of the first run's 0.56
    # CPU-s in a child forked without them; Prefect's engines, fastapi's encoder for parameters, pandera's
    # backends and hypothesis, anyio's asyncio backend, graphviz for Prefect's visualisation).
    for name in FIRST_RUN_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # after the preload, as a command derives it after its imports
    from sluice.runtime import no_heartbeat_settings

    no_heartbeat_settings()  # a settings object, derived once (no thread, no I/O beyond the environment)
    _complete_pydantic_models()
    sluice.cli.command()  # the click command typer derives from the commands' signatures
    from sluice.datasets import all_datasets

    for dataset in all_datasets():  # Pandera builds a model's schema on first use (3 ms each), then keeps it
        dataset.model.to_schema()


def _complete_pydantic_models() -> None:
    """Build the validators of the pydantic models whose build was deferred.

    Prefect defines its API schemas with ``defer_build``: a model gets its validator on first use, in every
    process. Without this, every forked command built the dozen a flow run uses; built here, before the fork,
    the children share them (with the click command built below: a warm 10-row ingest's child 0.23 → 0.21 CPU-s,
    interleaved runs on one machine). A model that cannot be built yet (an unresolved
    forward reference) is left to build on first use, as before.
    """
    from pydantic import BaseModel
    from pydantic._internal._mock_val_ser import MockValSer

    seen, stack = set(), list(BaseModel.__subclasses__())
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        stack.extend(model.__subclasses__())
        if isinstance(model.__dict__.get("__pydantic_validator__"), MockValSer):
            with contextlib.suppress(Exception):
                model.model_rebuild()


FIRST_RUN_MODULES = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.telemetry.run_telemetry",
    "prefect.utilities.visualization",
    "prefect._internal.control_listener",
    "prefect._internal.attempt_control",
    "prefect.concurrency.v1.context",
    "fastapi",
    "fastapi.encoders",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "http.cookies",
    "encodings.utf_8_sig",
    "opentelemetry.metrics",
    "opentelemetry._logs",
    "pandas.io.formats.string",
    "pandera.backends.pandas.register",
    "pandera.accessors.pandas_accessor",
    "pandera.typing.dask",
    "pandera.typing.geopandas",
    "pandera.typing.modin",
    "pandera.typing.pyspark",
    "pandera.strategies.pandas_strategies",
    "pandera.strategies.pandas_constraints",
    "pandera.api.geopandas.model",
    "pandera.backends.pandas.builtin_checks",
    "pandera.backends.pandas.builtin_hypotheses",
    "pandera.backends.register_checks",
    "pyarrow.vendored.version",
    "psycopg2.extras",
    "pyarrow.pandas_compat",
    "pydantic.color",
    "sluice.pgbinary",
)


class Runner:
    def __init__(self, home: Path, fp: str, api_url: str | None) -> None:
        self.home = home
        self.fingerprint = fp
        self.api_url = api_url
        self.children: dict[int, socket.socket] = {}
        self.draining = False
        self.terminating = False
        self.folder = warm.runner_dir(home)
        #: (device, inode) of the runner folder and of the socket as bound; the home removed: None
        self.folder_id: tuple[int, int] | None = None
        self.socket_id: tuple[int, int] | None = None
        self.orphaned = False
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.wake_r, self.wake_w = socket.socketpair()

    # --- the loop ---------------------------------------------------------------------------------------------

    def bind(self) -> None:
        path = warm.socket_path(self.home)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.folder_id, self.socket_id = identity(self.folder), identity(path)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")

    def serve(self) -> None:
        for sock in (self.wake_r, self.wake_w):
            sock.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through the wakeup fd
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            if self.draining and self.listener is not None:
                self.selector.unregister(self.listener)
                self.listener.close()  # the path may be the replacement's by now: never unlinked here
                self.listener = None
            self._reap()
            if not self.draining and identity(self.folder) != self.folder_id:
                _log(f"{self.folder} was removed: stopping once the running commands end")
                self.draining = self.orphaned = True
                continue
            if self.draining and not self.children:
                return
            for key, _events in self.selector.select(timeout=WATCH_SECONDS):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        while self.wake_r.recv(4096):
                            pass
                else:  # a client's connection: readable means it hung up before its command ended
                    pid = key.data
                    self.selector.unregister(key.fileobj)
                    _log(f"client of child {pid} went away: SIGTERM to it")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)

    def _on_hup(self, *_: Any) -> None:
        self.draining = True

    def _on_term(self, *_: Any) -> None:
        self.draining = True
        self.terminating = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue  # not a command (the Prefect server this runner started, say)
            code = os.waitstatus_to_exitcode(status)
            killed = -code if code < 0 else None
            code = 128 - code if code < 0 else code  # killed by signal n: the shell's 128 + n
            _log(f"child {pid} exited {code}")
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn)
            # "stopped": ended by the SIGTERM of `sluice services stop` (_on_term), not by a stranger's signal
            stopped = self.terminating and killed == signal.SIGTERM
            with contextlib.suppress(OSError):
                warm.send_line(conn, {"exit": code, "signal": killed, "stopped": stopped})
            conn.close()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        fds: list[int] = []
        try:
            conn.setblocking(True)
            conn.settimeout(10.0)
            request, fds = warm.recv_message(conn)
            current = request.get("fingerprint") == self.fingerprint
            if request.get("ping"):
                warm.send_line(conn, {"pid": os.getpid(), "current": current, "children": len(self.children)})
            elif not current:
                _log("stale for a client (fingerprint differs): it runs in-process and replaces this runner")
                warm.send_line(conn, {"stale": "the environment or the code changed"})
            elif self.draining:
                warm.send_line(conn, {"stale": "this runner is being replaced"})
            elif threading.active_count() != 1 or len(fds) != 3:
                _log(f"refused: {threading.active_count()} threads, {len(fds)} descriptors")
                warm.send_line(conn, {"refused": "not safe to fork"})
            else:
                conn.settimeout(None)
                self._fork(conn, request, fds)
                return
        except (OSError, ValueError, ConnectionError) as exc:
            _log(f"bad request: {exc!r}")
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        conn.close()

    def _fork(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        pid = os.fork()
        if pid == 0:
            self._child(conn, request, fds)  # never returns
        self.children[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ, pid)
        _log(f"child {pid}: {_shown(request['argv'][1:])}")

    # --- the child --------------------------------------------------------------------------------------------

    def _child(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            # The runner's descriptors: a child holding another client's connection would hide the runner's death.
            self.selector.close()
            for sock in (self.listener, self.wake_r, self.wake_w, *self.children.values()):
                if sock is not None:
                    sock.close()
            for target, fd in zip((0, 1, 2), fds, strict=True):
                os.dup2(fd, target)
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = list(request["argv"])
            _reopen_std_streams()
            if not self._server_unchanged():
                warm.send_line(conn, {"stale": "the local Prefect server moved"})
                os.kill(os.getppid(), signal.SIGHUP)  # replaced by the next command
                os._exit(0)
            warm.send_line(conn, {"pid": os.getpid()})
            conn.close()
            code = _run_cli(request.get("prog") or "sluice")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                atexit._run_exitfuncs()  # Prefect flushes its logs and events to the API here
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def _server_unchanged(self) -> bool:
        """Prefect captured the API URL when the runner imported it: the home's server must still be there."""
        if self.api_url is None or "PREFECT_API_URL" in os.environ:
            return True  # an explicit PREFECT_API_URL is part of the fingerprint
        from sluice import services

        return services.ensure_prefect_server(self.home) == self.api_url


_RUNNER_STREAMS: list[tuple[Any, ...]] = []


def _reopen_std_streams() -> None:
    """New ``sys.std*`` on descriptors 0/1/2 (now the client's), buffered as Python would for them, and rich's
    consoles re-created (they detect colour, size and terminal at creation)."""
    encoding, errors = sys.stdout.encoding, sys.stdout.errors
    # Kept alive: the old objects own descriptors 0/1/2 (closefd) and would close the client's on collection.
    _RUNNER_STREAMS.append((sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__))
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=encoding)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding=encoding, errors=errors, line_buffering=os.isatty(1)
    )
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding=encoding, errors="backslashreplace", line_buffering=True
    )
    # already imported by the preload: binding them here costs nothing and keeps the fork's set-up local
    from sluice.cli import output

    output.reset_consoles()


def _run_cli(prog: str) -> int:
    # already imported by the preload; the runner sits above the CLI in the layers, so no cycle either
    from sluice.cli import main
    from sluice.settings import get_settings

    get_settings.cache_clear()  # read from the client's environment and folder, never the runner's
    main(prog_name=prog, served=True)  # a signal kills it: the client, which forwarded or saw it, says so
    return 0


def main() -> None:
    lock_fd = int(sys.argv[1]) if len(sys.argv) > 1 else None
    env = dict(os.environ)
    cwd = os.getcwd()
    fp = warm.fingerprint(
        env, cwd
    )  # before importing: a file edited meanwhile makes this runner stale, not wrong
    home = warm.home_of(env)
    _log(f"starting in {cwd}")
    try:
        # after the fingerprint and the first log line: prepare() sets Prefect's environment before Prefect loads
        from sluice.runtime import prepare

        prepare(verbose=False, server=True)
        preload()
        _log("imported")
        threads = threading.active_count()
        if threads != 1:
            _log(f"not starting: {threads} threads after the imports (forking would be unsafe)")
            sys.exit(1)
        # only after prepare(): Prefect reads its settings once, at import
        from prefect.settings import get_current_settings

        runner = Runner(home, fp, get_current_settings().api.url)
        import psutil  # process start times for the state file; not needed before the imports succeeded

        with warm.state_lock(home):
            old = warm.read_state(home)
            old_proc = warm._alive(old)
            if old is not None and old_proc is not None and old_proc.pid != os.getpid():
                if old["fingerprint"] == fp and (warm.ping(home, fp) or {}).get("current"):
                    _log(f"runner {old['pid']} already serves this environment")
                    return
                _log(f"replacing runner {old['pid']}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(old["pid"]), signal.SIGHUP)
            runner.bind()
            warm.write_state(
                home,
                {
                    "pid": os.getpid(),
                    "create_time": psutil.Process().create_time(),
                    "fingerprint": fp,
                    "socket": warm.socket_path(home),
                    "cwd": cwd,
                    "prefect_api_url": runner.api_url,
                },
            )
    finally:
        if lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock_fd)
    _log(f"serving {warm.socket_path(home)}")
    # The preload's objects (~2,000 modules) move to the permanent generation: a forked command's collections
    # never walk them. Otherwise a child whose allocations crossed gen2's threshold walked the whole inherited
    # heap, touching (copying) its pages: a warm 10-row ingest took 0.45-0.50 s instead of 0.28, depending on
    # how much the command allocated (Python's gc.freeze, "for a process that will fork() without exec()").
    gc.collect()
    gc.freeze()
    try:
        runner.serve()
    finally:
        if runner.orphaned:  # no state to forget (the lock would make the folder again); a socket outside it
            path = warm.socket_path(home)
            if identity(path) == runner.socket_id:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        else:
            with warm.state_lock(home):
                warm.forget(home, os.getpid())
        _log("stopped")
    # Out at once: the commands ran in forked children and this process holds nothing to finalize (one thread,
    # checked above; its log is flushed line by line); tearing down the ~2,000 modules of the preload took 1.4 s
    # of every `services stop`.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
