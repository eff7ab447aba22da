"""The README's settings table ("All settings live in one pydantic-settings object") lists every setting."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
