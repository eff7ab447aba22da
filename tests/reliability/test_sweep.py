"""Spools on local disk belong to a live process: a sweep removes those of processes that died, never a live one's.

Real processes and real locks: a child Python process claims a spool and is SIGKILLed (no cleanup runs), as a
killed run would be; the sweep that follows removes it, while spools of live owners (another process, or this
one) stay. A lock-less folder (an older Sluice's) goes once untouched for a day, not before.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sluice.adapters import scratch

ROOT = Path(__file__).resolve().parents[2]
OWNER = """
import sys, time
from pathlib import Path
from sluice.adapters import scratch
folder = Path(sys.argv[1])
claim = scratch.claim(folder)
folder.mkdir()
(folder / "part-00000.arrow").write_bytes(b"x" * 1_000_000)
print("ready", flush=True)
time.sleep(600)
"""


def owner(folder: Path) -> subprocess.Popen[str]:
    """A process that owns ``folder`` (a spool of 1 MB) until it is killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def test_a_killed_owners_spool_is_swept_a_live_ones_never(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    work = tmp_path / "work"
    other, mine = work / "other-run", work / "my-run"
    child = owner(other)
    try:
        claim = scratch.claim(mine)  # this process's own run (a backfill's other file, in another thread)
        mine.mkdir()
        (mine / "part-00000.arrow").write_bytes(b"y" * 10)

        assert scratch.sweep(work) == scratch.Swept()  # both owners live: nothing goes
        assert (other / "part-00000.arrow").exists() and (mine / "part-00000.arrow").exists()

        child.send_signal(signal.SIGKILL)
        child.wait(30)
        with caplog.at_level(logging.INFO, logger="sluice.adapters.scratch"):
            swept = scratch.sweep(work)
        assert swept == scratch.Swept(spools=1, bytes=1_000_000)
        assert not other.exists() and not scratch.lock_path(other).exists()
        assert [r.getMessage() for r in caplog.records] == [
            f"removed 1 spool of runs that died from {work}: 1.0 MB"
        ]
        assert (mine / "part-00000.arrow").exists()  # its owner still lives

        claim.release()
        assert sorted(os.listdir(work)) == []  # a run's end removes its spool and its lock file
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)


def test_a_retried_extract_empties_its_spool_and_still_owns_it(tmp_path: Path) -> None:
    """The lock is beside the spool: a run that removes and remakes its spool folder keeps its claim."""
    work = tmp_path / "work"
    claim = scratch.claim(work / "run")
    (work / "run").mkdir()
    os.rmdir(work / "run")  # what ``shutil.rmtree(work)`` at a retried extract does
    (work / "run").mkdir()
    (work / "run" / "batch.csv").write_text("a\n")
    assert scratch.sweep(work) == scratch.Swept()
    assert (work / "run" / "batch.csv").exists()
    claim.release()


def test_a_lockless_spool_goes_once_untouched_for_a_day(tmp_path: Path) -> None:
    work = tmp_path / "work"
    stale, fresh = work / "0123abcd", work / "silver-old"
    for folder in (stale, fresh):
        (folder / "source").mkdir(parents=True)
        (folder / "source" / "file.csv").write_bytes(b"z" * 100)
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in (stale / "source" / "file.csv", stale / "source", stale):
        os.utime(path, (two_days_ago, two_days_ago))
    os.utime(fresh, (two_days_ago, two_days_ago))  # the folder is old, its ``source`` was made just now

    assert scratch.sweep(work) == scratch.Swept(spools=1, bytes=100)
    assert not stale.exists()
    assert (fresh / "source" / "file.csv").exists()


def test_a_sweep_of_no_work_dir_does_nothing(tmp_path: Path) -> None:
    assert scratch.sweep(tmp_path / "never-made") == scratch.Swept()
