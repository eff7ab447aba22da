"""A skipped run's reason is one line on stdout whatever the console's width (piped output is 80 columns)."""

from __future__ import annotations

from types import SimpleNamespace

from sluice.cli.output import console
from sluice.cli.totesys import print_cycle
from sluice.totesys import BUSY


def test_a_skipped_totesys_cycle_says_why_on_one_line() -> None:
    """``another totesys cycle is running: …`` was cut at 80 columns when piped (one reason, two lines)."""
    report = SimpleNamespace(status="skipped", error=BUSY, seconds=0.12)
    width = console.width
    console.width = 80  # what rich gives a pipe
    try:
        with console.capture() as captured:
            print_cycle(report)
    finally:
        console.width = width
    assert captured.get() == f"totesys: {BUSY} (0.12 s)\n"
    assert len(captured.get()) > 80  # the case at hand: longer than the width
