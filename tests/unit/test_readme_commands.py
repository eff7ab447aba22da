"""Every `sluice …` command line the README shows (`./run sluice …` in its code blocks, `sluice …` in its text) is
one Sluice's CLI takes: each command and option exists (values are not checked: `--help` is appended, so nothing
runs)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
#: README placeholders → a value of the option's type.
PLACEHOLDERS = {
    "N": "2",
    "DATE": "2022-08-23",
    "URL": "postgresql://u@h/db",
    "PREFIX": "landing",
    "DIR": "data",
}


def readme_sluice_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = re.sub(r"\\\n\s*", " ", "\n".join(blocks)).splitlines() + re.findall(r"`([^`\n]+)`", text)
    found = []
    for line in lines:
        for match in re.finditer(
            r"(?:^|[\s(])(?:\./run |\.venv/bin/)?sluice( [a-z](?:[^|;&#`]|(?<! )\|(?! ))*)", line
        ):
            found.append("sluice" + match.group(1).split("  ")[0].rstrip())
    return found


def tokens(command: str) -> list[str]:
    """The command as a user would type it: optional parts in, the first of alternatives, placeholders filled."""
    plain = command.replace("[", " ").replace("]", " ").replace("…", "x")
    words = shlex.split(plain)[1:]
    return [PLACEHOLDERS.get(w, w.split("|")[0] if "|" in w and not w.startswith("-") else w) for w in words]


def parses(words: list[str]) -> tuple[int, str]:
    from sluice.cli import app

    result = CliRunner().invoke(app, [*words, "--help"])
    return result.exit_code, result.output


def test_every_sluice_command_line_in_the_readme_parses() -> None:
    commands = readme_sluice_commands()
    assert len(commands) >= 20, commands
    for expected in (
        "sluice aws setup --stack sluice",
        "sluice ledger [--json]",
        "sluice ingest path/or/s3://bucket/key.csv --dataset dailycheckins [--mode hard|soft]",
        "sluice db url",
    ):
        assert any(c.startswith(expected) for c in commands), expected
    results = {c: parses(tokens(c)) for c in commands}
    # A mention in the text (`sluice backfill --deployment`) may leave out an argument or an option's value.
    mention = re.compile(r"Missing argument|requires an argument")
    assert not {c: out for c, (code, out) in results.items() if code != 0 and not mention.search(out)}


def test_the_check_fails_on_an_option_sluice_does_not_take() -> None:
    assert parses(tokens("sluice ingest x.csv [--mode hard|soft] [--forse]"))[0] == 2
    assert parses(tokens("sluice servics status"))[0] == 2


def test_every_setting_is_in_the_readme_settings_table() -> None:
    """ "All settings live in one pydantic-settings object": each of its variables has a row in the README's table."""
    from sluice.settings import Settings

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("### Settings") : text.index("All settings live in one")]
    rows = " ".join(line.split("|")[1] for line in table.splitlines() if line.startswith("| `"))
    named = set(re.findall(r"`(SLUICE_[A-Z0-9_]+)`", rows))
    # `SLUICE_TOTESYS_SOURCE_URL` / `_SECRET_ARN`: the second is the first with that suffix instead of _URL
    named |= {f"{n}_SECRET_ARN" for n in re.findall(r"`(SLUICE_[A-Z0-9_]+?)_URL` / `_SECRET_ARN`", rows)}
    missing = sorted(
        f"SLUICE_{name.upper()}" for name in Settings.model_fields if f"SLUICE_{name.upper()}" not in named
    )
    assert not missing, missing
