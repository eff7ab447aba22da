"""What ``sluice … --help`` shows, for every command: flags without a value, every option explained."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer

from sluice.cli import command


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, group
    for name, sub in sorted(getattr(group, "commands", {}).items()):
        yield from commands(sub, (*path, name))


COMMANDS = [path for path, _ in commands(command())]


def test_the_tree_has_every_command() -> None:
    assert {("ingest",), ("backfill",), ("services", "stop"), ("totesys", "seed-source")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "sluice")
def test_help_shows_flags_without_a_value_and_explains_every_option(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per option, whatever the terminal
    monkeypatch.setenv("NO_COLOR", "1")
    code = command().main([*path, "--help"], prog_name="sluice", standalone_mode=False)
    shown = capsys.readouterr().out
    assert code in (0, None) and "Usage: sluice" in shown
    # typer's rich help printed a flag's type as if it took one (`--force <bool>`): `--force true` then
    # failed with "Got unexpected extra argument (true)"
    assert "<bool>" not in shown
    target = dict(commands(command()))[path]
    # typer's rich help keeps a docstring's line breaks: a paragraph wrapped in the source is printed broken
    assert not [p for p in (target.help or "").split("\n\n") if "\n" in p.strip()], target.help
    for param in target.get_params(typer.Context(target)):
        if not isinstance(param, typer.core.TyperOption):
            continue
        line = next(x for x in shown.splitlines() if param.opts[0] in x.split()[1:3])
        assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
        assert param.help.split()[0] in line
        if not param.is_flag:  # an option that takes a value says what kind
            assert "<" in line or "|" in line or param.metavar, line
