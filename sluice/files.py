"""Small files written whole: the services' state files and the home's generated files.

Standard library only: the thin client (``sluice.launch``, through ``sluice.warm``) imports it.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_whole(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` whole or not at all.

    The text goes to a file beside ``path`` named for this process, then is renamed over it: a reader sees the old
    file or the whole new one, and two processes writing it at once never mix their bytes. A failed write (a full
    disk) removes the partial file and raises.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        partial.write_text(text, encoding=encoding)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
