"""The ``sluice`` console script: hand a flow-running command to the home's warm runner, or run it in-process.

Standard library only until it knows it must run in-process (tests/local/test_warm.py checks that a command
served by the runner imports neither typer, Prefect nor pandas here). See ``sluice.warm`` for the runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from typing import Any

from sluice import warm
from sluice.errors import rolled_back, signal_name, stopped_by

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _prog_name() -> str:
    """The name usage messages show: as click would detect it for this process."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name in ("sluice.__main__", "sluice"):
        return "python -m sluice"
    return os.path.basename(sys.argv[0]) or "sluice"


def through_runner(args: list[str], prog: str) -> int | None:
    """Run the command in a child of the warm runner; its exit status, or None to run it in-process."""
    env = dict(os.environ)
    cwd = os.getcwd()
    home = warm.home_of(env)
    # Everything computed before connecting: the runner reads each request as it accepts it.
    request = {
        "argv": [sys.argv[0], *args],
        "prog": prog,
        "cwd": cwd,
        "env": env,
        "fingerprint": warm.fingerprint(env, cwd),
    }
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(warm.socket_path(home))
    except OSError:
        sock.close()
        if (
            "PREFECT_API_URL" not in env
        ):  # a local service, like the home's Prefect server: started on first need,
            warm.defer_start(home, env, cwd)  # once the command has parsed and runs flows (runtime.prepare)
        return None
    child: list[int] = []
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child[0], signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        with sock:
            try:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                warm.send_message(sock, request, [0, 1, 2])
            except OSError:
                return None  # a closed descriptor, or the runner went away: nothing ran yet
            replies = sock.makefile("rb")
            while True:
                line = replies.readline()
                if not line:
                    break
                reply = json.loads(line)
                if "pid" in reply:
                    child.append(int(reply["pid"]))
                    for signum in received:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(child[0], signum)
                elif "exit" in reply:
                    code = int(reply["exit"])
                    if received and code != 0:
                        if reply.get("signal") and int(reply["signal"]) != signal.SIGINT:
                            # SIGTERM forwarded: the child died of it without a word (Ctrl-C: it says so itself)
                            _fail(args, 128 + received[0], stopped_by(int(reply["signal"])))
                        return 128 + received[0]  # interrupted: the shell's usual status
                    # killed by someone else: the shell would have said so, it cannot now
                    if reply.get("signal"):
                        pid = child[0] if child else None
                        _fail(args, code, _killed(pid, int(reply["signal"]), bool(reply.get("stopped"))))
                    return code
                else:  # stale or refused: nothing ran; in-process is correct, the runner is replaced meanwhile
                    if reply.get("stale") and "PREFECT_API_URL" not in env:
                        warm.defer_start(home, env, cwd)
                    return 128 + received[0] if received else None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not child:
        return 128 + received[0] if received else None  # the runner ended before the command started
    with contextlib.suppress(ProcessLookupError):
        os.kill(child[0], signal.SIGTERM)  # Prefect ends its run as failed; the ledger records it
    _wait_gone(child[0], 15.0)
    _fail(
        args,
        1,
        f"the warm runner of {home} stopped while running this command (process {child[0]}, now stopped); "
        f"its outcome is in `sluice ledger`, the runner's log in {home / warm.RUNNER_DIR / warm.LOG_FILE}",
    )
    return 1


def _killed(pid: int | None, signum: int, stopped: bool) -> str:
    """The line for a command whose process was killed by a signal it did not get from this client: `sluice
    services stop` (``stopped``), the OOM killer, ``kill -9``. Run in-process, the shell would print "Killed";
    served, the shell only sees a status."""
    if stopped:
        return rolled_back(
            f"`sluice services stop` stopped this command{f' (process {pid})' if pid else ''} before it finished"
        )
    return rolled_back(
        f"the command's process{f' ({pid})' if pid else ''} was killed by {signal_name(signum)} before it finished"
    )


def _fail(args: list[str], code: int, message: str) -> None:
    """A served command that ended without its last words: one ``error:`` line on stderr and, with ``--json``,
    the document the CLI prints for any failure (``cli.output.finish_json``), which its process could not."""
    sys.stderr.write(f"error: {message}\n")
    if "--json" in (args[: args.index("--")] if "--" in args else args):
        sys.stdout.write(json.dumps({"status": "failed", "error": message, "exit_code": code}) + "\n")
        sys.stdout.flush()


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait (bounded) for ``pid`` to end, so that its last words come before ours."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    return
        except OSError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
        time.sleep(0.05)


def main() -> None:
    args = sys.argv[1:]
    prog = _prog_name()
    if warm.wants_warm(args) and warm.enabled(os.environ):
        code = through_runner(args, prog)
        if code is not None:
            sys.exit(code)
    try:
        from sluice.cli import main as cli_main  # in-process, exactly as before the runner existed
    except KeyboardInterrupt:  # Ctrl-C while importing (a second or two): one line, not an import traceback
        sys.stderr.write("error: interrupted before the command started; nothing ran\n")
        sys.exit(130)
    cli_main(prog_name=prog)


if __name__ == "__main__":
    main()
