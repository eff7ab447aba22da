"""The README's "Using it" block names commands and options that exist (a helper checked them by hand)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def usage_lines() -> list[tuple[list[str], list[str]]]:
    """(command path, options) of each ``./run sluice …`` line of the block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Using it") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    lines = []
    for line in block.splitlines():
        if not line.startswith("./run sluice "):
            continue
        words = line.split("#", 1)[0].split()[2:]
        path = []
        for word in words:  # subcommands: lowercase words, up to a placeholder, an option or an argument
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            path.append(word)
        lines.append((path, re.findall(r"--[a-z][a-z-]*", line.split("#", 1)[0])))
    return lines


def test_the_block_is_read() -> None:
    paths = [" ".join(path) for path, _ in usage_lines()]
    assert {"ingest", "ledger", "backfill", "services status", "totesys seed-source", "api"} <= set(paths), (
        paths
    )


@pytest.mark.parametrize(
    ("path", "options"), usage_lines(), ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_each_command_of_the_block_has_the_options_it_names(path: list[str], options: list[str]) -> None:
    from sluice.cli import app

    shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert shown.exit_code == 0, (path, shown.output)
    missing = [option for option in options if not re.search(rf"{re.escape(option)}\b", shown.output)]
    assert not missing, (path, missing)
