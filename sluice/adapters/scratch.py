"""Spool folders on local disk (``settings.work_dir``): each owned by the live process that made it, and swept
once its owner is dead.

A run's spool ``<work_dir>/<name>/`` has a lock file beside it, ``<name>.lock``, on which the owning process holds
an exclusive ``flock`` for the spool's whole life (``claim`` … ``Claim.release``). The kernel drops the lock when
the process ends, however it ends (SIGKILL, the OOM killer, a Ctrl-C past the cleanup), so a lock that another
process *can* take means the owner is gone and its spool is garbage. ``sweep``, at the start of every run that
spools (one listing of ``work_dir``), removes those spools, and never one whose owner lives: a concurrent run, the
other files of a backfill in the same process (``flock`` locks belong to the open file, not the process), a warm
runner's children. A folder without a lock file (spooled by an older Sluice, or a stray) is removed only once it
has not been touched for ``STALE_AFTER``.

The lock file is beside the spool, not in it: a retried extract empties its spool (``rmtree``) and starts again
while the run, and its lock, go on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK = ".lock"
#: A spool without a lock file (an older Sluice's) is removed once untouched for this long.
STALE_AFTER = 24 * 3600.0


def lock_path(folder: Path) -> Path:
    """The lock file of a spool folder (beside it)."""
    return folder.with_name(folder.name + LOCK)


@dataclass
class Claim:
    """A spool folder this process owns: the open lock file's descriptor holds the ``flock``."""

    folder: Path
    fd: int | None

    def release(self) -> None:
        """Remove the spool, then its lock file, then let go of the lock (once; later calls do nothing)."""
        if self.fd is None:
            return
        try:
            shutil.rmtree(self.folder, ignore_errors=True)
            lock_path(self.folder).unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


def claim(folder: Path) -> Claim:
    """Own ``folder`` (made by the caller, as it spools): its lock file created and locked for this process."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(
                fd, fcntl.LOCK_EX
            )  # a sweep may hold it for a moment, between our create and our lock
            if _same_file(fd, path):
                return Claim(folder, fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a sweep took the lock first and removed the file: make it again


@contextlib.contextmanager
def owned(folder: Path) -> Iterator[Path]:
    """``folder`` claimed for the body (a scratch folder of its own), removed with its lock file after it."""
    held = claim(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
    finally:
        held.release()


@dataclass(frozen=True)
class Swept:
    """What a sweep removed: spool folders of dead runs, and their bytes."""

    spools: int = 0
    bytes: int = 0


def sweep(work_dir: Path, *, stale_after: float = STALE_AFTER) -> Swept:
    """Remove every spool in ``work_dir`` whose owner is dead (its lock can be taken), and every lock-less entry
    untouched for ``stale_after`` seconds; one INFO line when it removed something. Never raises for a spool it
    cannot inspect or remove (a run must not fail for its predecessors' litter): that one is left."""
    try:
        names = os.listdir(work_dir)
    except FileNotFoundError:
        return Swept()
    except OSError as exc:
        logger.debug("cannot list %s to sweep it: %s", work_dir, exc)
        return Swept()
    present = set(names)
    spools = 0
    removed = 0
    now = time.time()
    for name in names:
        entry = work_dir / name
        try:
            if name.endswith(LOCK):
                size = _take_dead(entry, work_dir / name.removesuffix(LOCK))
            elif name + LOCK in present:
                continue  # the lock decides (above)
            else:
                size = _remove_stale(entry, now - stale_after)
        except OSError as exc:
            logger.debug("cannot sweep %s: %s", entry, exc)
            continue
        if size is not None:
            spools += 1
            removed += size
    if spools:
        logger.info(
            "removed %d spool%s of runs that died from %s: %s",
            spools,
            "" if spools == 1 else "s",
            work_dir,
            _human(removed),
        )
    return Swept(spools, removed)


def _take_dead(lock: Path, folder: Path) -> int | None:
    """Remove ``folder`` and its ``lock`` if the lock's owner is dead; the bytes removed (None: nothing was a
    spool, as when the owner lives or never spooled)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return None  # released meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # its owner lives
        if not _same_file(fd, lock):
            return None  # released (and perhaps claimed anew) meanwhile
        size = _size(folder) if folder.exists() else None
        _remove(folder)
        lock.unlink(missing_ok=True)
        return size
    finally:
        os.close(fd)


def _remove_stale(entry: Path, before: float) -> int | None:
    """Remove a lock-less ``entry`` untouched (itself and what it holds directly) since ``before``."""
    newest = entry.lstat().st_mtime
    if entry.is_dir() and not entry.is_symlink():
        with os.scandir(entry) as children:
            for child in children:
                newest = max(newest, child.stat(follow_symlinks=False).st_mtime)
    if newest >= before:
        return None
    size = _size(entry)
    _remove(entry)
    return size


def _same_file(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _size(entry: Path) -> int:
    if not entry.is_dir() or entry.is_symlink():
        return entry.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(entry):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover (the loop returns)
