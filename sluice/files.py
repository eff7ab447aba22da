"""Small files written whole (the services' state files, the home's generated files), and a folder's identity.

Standard library only: the thin client (``sluice.launch``, through ``sluice.warm``) imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_whole(path: Path, fill: Callable[[Path], object]) -> None:
    """Make ``path`` whole or not at all: ``fill`` writes a file beside it, named for this process, which is then
    renamed over it.

    A reader sees the old file or the whole new one, and two processes writing it at once never mix their bytes. A
    failed ``fill`` (a full disk) removes the partial file and raises.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        fill(partial)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_whole(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` whole or not at all (``replace_whole``)."""
    replace_whole(path, lambda partial: partial.write_text(text, encoding=encoding))


def identity(path: Path | str | int) -> tuple[int, int] | None:
    """The file or folder at ``path`` (or open on descriptor ``path``) as (device, inode); None if nothing is there.

    A local service compares its home's folder with the identity it had at start: a folder removed (``rm -rf
    .sluice`` to start again), or removed and made anew by the next command, is no longer its home."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
