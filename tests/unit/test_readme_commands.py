"""Every ``sluice …`` command the README quotes exists, with every option it shows.

Command lines of ```bash blocks are parsed as ``sluice`` would parse them (optional ``[…]`` parts dropped,
``a | b`` alternatives each checked); commands named in the text (`` `sluice analytics [--as-of DATE]` ``) must
exist with the options they show. Runs nothing: ``tests/integration/test_readme_add_dataset.py`` and the suites of
each command run them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from sluice.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block_lines() -> list[str]:
    found = []
    for block in re.findall(r"^ *```bash\n(.*?)^ *```$", README, flags=re.M | re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            for match in re.finditer(r"(?:^\s*|\./run |\.venv/bin/)sluice (.+)$", line):
                found.append(match.group(1).split("  #")[0].split(" # ")[0].strip())
    return found


def _text_mentions() -> list[str]:
    spans = re.findall(r"`((?:\./run )?sluice [^`]+)`", README)
    return [" ".join(span.split()).removeprefix("./run ").removeprefix("sluice ") for span in spans]


BLOCK_LINES = _block_lines()
MENTIONS = sorted(set(_text_mentions()))


def _walk(tokens: list[str]) -> tuple[Any, list[str], list[str]]:
    """The command the leading words name, the words that named it, and the rest."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    while tokens and hasattr(command, "commands") and tokens[0] in command.commands:
        path.append(tokens[0])
        command = command.commands[tokens.pop(0)]
    return command, path, tokens


def _options(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return names


def _alternatives(line: str) -> list[str]:
    """``services status [--json] | start | stop`` → the three commands (a ``|`` outside brackets, then a word)."""
    depth, parts, current = 0, [], ""
    for char in line:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    first = parts[0].split()
    lines = [parts[0].strip()]
    for part in parts[1:]:
        _, path, _ = _walk(first.copy())
        lines.append(" ".join([*path[:-1], part.strip()]))
    return lines


def _check_options(command: Any, path: list[str], words: list[str], where: str) -> None:
    shown = set(re.findall(r"(?<![\w-])--[\w-]+", " ".join(words)))
    missing = shown - _options(command)
    assert not missing, f"{where}: `sluice {' '.join(path)}` has no option {sorted(missing)}"


def test_the_readme_quotes_commands() -> None:
    assert len(BLOCK_LINES) >= 15 and len(MENTIONS) >= 10, (BLOCK_LINES, MENTIONS)


@pytest.mark.parametrize("line", BLOCK_LINES)
def test_each_command_line_parses(line: str) -> None:
    for alternative in _alternatives(line):
        command, path, rest = _walk(alternative.split())
        assert path, f"`sluice {alternative}`: no such command"
        _check_options(command, path, rest, f"`sluice {alternative}`")
        concrete = alternative
        while re.search(r"\[[^\[\]]*\]", concrete):  # optional parts dropped, innermost first
            concrete = re.sub(r"\[[^\[\]]*\]", "", concrete)
        _, _, args = _walk(concrete.split())
        if hasattr(command, "commands") and args and not args[0].startswith("-"):
            pytest.fail(f"`sluice {alternative}`: `sluice {' '.join(path)}` has no command {args[0]!r}")
        try:
            command.make_context(f"sluice {' '.join(path)}", args, resilient_parsing=False)
        except typer.Exit:  # --help
            pass
        except Exception as exc:  # a usage error, as the user would get it
            pytest.fail(f"`sluice {alternative}` does not parse: {exc}")


@pytest.mark.parametrize("mention", MENTIONS)
def test_each_command_named_in_the_text_exists(mention: str) -> None:
    command, path, rest = _walk(mention.replace("[", " ").replace("]", " ").split())
    if rest and not rest[0].startswith("-") and hasattr(command, "commands"):  # `services status|start|stop`
        missing = [word for word in rest[0].split("|") if word not in command.commands]
        assert not missing, f"`sluice {mention}`: `sluice {' '.join(path)}` has no {missing}"
    _check_options(command, path, rest, f"`sluice {mention}`")


def test_every_prefect_deploy_the_readme_shows_asks_no_questions() -> None:
    """On a terminal, `prefect deploy` asked twice whether to configure schedules, and Enter (the default: yes)
    started a wizard; `./run deploy` and the tests pass --no-prompt, the README's command did not."""
    blocks = "\n".join(re.findall(r"^ *```bash\n(.*?)^ *```$", README, flags=re.M | re.S))
    deploys = [line for line in blocks.splitlines() if re.search(r"\bprefect\b.* deploy\b", line)]
    assert deploys and all("--no-prompt" in line for line in deploys), deploys
