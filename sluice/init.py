"""The image's entrypoint: ``python -m sluice.init COMMAND…`` runs COMMAND as PID 1 should (standard library only).

Prefect's ECS worker starts a flow run as ``prefect flow-run execute``, which runs the flow in a child process. As
PID 1 that command ignored ECS's SIGTERM (PID 1 gets no default signal action, and it installs no handler), and the
flow's process was never sent it: a stopped or cancelled task waited out its stop timeout and was SIGKILLed, its
run left ``Running`` and its ledger without a word. Docker's ``--init`` (tini) forwards the signal to the command
only: the command died at once and its flow's process with the container, still without a word.

Here a forwarded signal reaches every process under COMMAND (the flow's own, which Prefect's engine ends as failed
and Sluice's ledger records); the init reaps them all (orphans come to it: it is PID 1, or a child subreaper
outside a container) and ends with COMMAND's status once they are gone, or once ``GRACE_SECONDS`` passed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
#: How long the processes under COMMAND have, after a forwarded signal or after COMMAND ended, to end themselves
#: before they are killed: within Fargate's default stop timeout (30 s), which ends with SIGKILL to everything.
GRACE_SECONDS = 25.0
_PR_SET_CHILD_SUBREAPER = 36


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (from ``/proc``: children, theirs, …)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid …: comm may hold spaces and parentheses, so split after its last ")"
        fields = stat.rsplit(")", 1)[-1].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found += children
        frontier += children
    return found


def _signal_all(signum: int) -> None:
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def run(command: list[str]) -> int:
    """Run ``command``; its exit status (128 + N when a signal N ended it, as a shell says it)."""
    if os.getpid() != 1:  # outside a container: orphans of the command come to this process all the same
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        _signal_all(signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    try:
        child = subprocess.Popen(command)  # noqa: S603 (the image's command, as ECS or docker run gives it)
    except OSError as exc:
        print(f"error: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    status: int | None = None
    deadline: float | None = None
    while True:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break  # nothing left under the init
        if pid == child.pid:
            status = os.waitstatus_to_exitcode(raw)
            status = 128 - status if status < 0 else status
        if pid:
            continue
        if status is not None or received:
            if deadline is None:
                deadline = time.monotonic() + GRACE_SECONDS
                if status is not None and not received:
                    _signal_all(signal.SIGTERM)  # the command ended: what it left running ends with it
            elif time.monotonic() > deadline:
                _signal_all(signal.SIGKILL)
                deadline = time.monotonic() + GRACE_SECONDS
        time.sleep(0.05)
    if status is None:
        return 128 + received[0] if received else 1
    return status


def main() -> None:
    command = sys.argv[1:]
    if not command:
        print("usage: python -m sluice.init COMMAND [ARGS...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(command))


if __name__ == "__main__":
    main()
