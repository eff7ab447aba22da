"""A reader that stops reading (``sluice ledger | head``) is not a failed command.

Click answers ``EPIPE`` with exit 1, which is what a failed run exits with: ``sluice analytics --force | head -1``
exited 1, said nothing, and its ledger said success. The command now exits 141 (128 + SIGPIPE), as a shell
reports a producer that a closed pipe stopped (``yes | head -1`` under ``pipefail``), and prints nothing more."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("args", [("services", "status"), ("--help",), ("services", "status", "--json")])
def test_a_closed_stdout_exits_141_without_a_word(tmp_path: Path, args: tuple[str, ...]) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write is EPIPE
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLUICE_"))}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sluice.cli", *args],
            stdout=write, stderr=subprocess.PIPE, env={**env, "SLUICE_HOME": str(tmp_path / "home")},
            text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


def test_a_reader_that_takes_everything_still_gets_exit_0(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLUICE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "services", "status"],
        capture_output=True, env={**env, "SLUICE_HOME": str(tmp_path / "home")}, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "prefect" in done.stdout, done.stderr
