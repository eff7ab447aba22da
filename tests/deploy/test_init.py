"""The image's entrypoint (``sluice.init``): a stop reaches the flow's own process, as ECS's SIGTERM must.

A stand-in for ``prefect flow-run execute``: a command with no SIGTERM handler whose child (the flow's engine)
handles it, takes a moment to record its state, then exits. Outside a container the init is a child subreaper, so
the same orphan reaping as PID 1 is exercised here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ENGINE = """
import pathlib, signal, sys, time
marker = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    time.sleep(0.5)  # the engine reports the run's final state, the ledger records the stop
    marker.write_text(str(signum))
    sys.exit(1)
signal.signal(signal.SIGTERM, stop)
marker.with_suffix(".pid").write_text(str(__import__("os").getpid()))
time.sleep(60)
"""
COMMAND = """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]]).wait()
"""


def start(tmp_path: Path, *command: str) -> tuple[subprocess.Popen[bytes], Path]:
    marker = tmp_path / "stopped"
    init = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice.init",
            *(command or (sys.executable, "-c", COMMAND, ENGINE, str(marker))),
        ]
    )
    deadline = time.monotonic() + 30
    while not marker.with_suffix(".pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.with_suffix(".pid").exists(), "the stand-in engine did not start"
    return init, marker


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_a_sigterm_reaches_the_flows_process_and_the_init_waits_for_it(tmp_path: Path) -> None:
    """`docker stop` during a flow run (ECS: StopTask, a cancellation) waited its whole timeout, then SIGKILL: the
    run stayed `Running`. The flow's process now gets the signal, ends its run, and the init ends after it."""
    init, marker = start(tmp_path)
    engine = int(marker.with_suffix(".pid").read_text())

    started = time.monotonic()
    init.send_signal(signal.SIGTERM)
    code = init.wait(timeout=20)

    assert marker.read_text() == str(int(signal.SIGTERM))  # it got the signal and finished its handler
    assert code == 128 + signal.SIGTERM  # the command's status: killed by SIGTERM, as a shell says it
    assert time.monotonic() - started < 10
    assert not alive(engine)


def test_a_command_that_ends_takes_what_it_left_running_with_it(tmp_path: Path) -> None:
    """Its exit status is the command's; a process it left behind is stopped, not waited for forever."""
    marker = tmp_path / "stopped"
    leaves = (
        "import pathlib, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {ENGINE!r}, {str(marker)!r}])\n"
        f"while not pathlib.Path({str(marker.with_suffix('.pid'))!r}).exists(): time.sleep(0.05)\n"
        "sys.exit(3)\n"
    )
    init, _ = start(tmp_path, sys.executable, "-c", leaves)
    assert init.wait(timeout=20) == 3
    assert marker.read_text() == str(int(signal.SIGTERM))
    assert not alive(int(marker.with_suffix(".pid").read_text()))


def test_a_command_that_cannot_start_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice.init", "no-such-command-here"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (
        127,
        "error: cannot run no-such-command-here: No such file or directory\n",
    )
