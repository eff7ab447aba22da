"""The layers contract names every module of Sluice: a new module must take its place in a layer."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    names: set[str] = set()
    for layer in contract["layers"]:
        names.update(part.strip() for part in layer.replace("|", ":").split(":"))
    return names


def test_every_sluice_module_is_in_a_layer() -> None:
    modules = {
        f"sluice.{p.stem if p.suffix == '.py' else p.name}"
        for p in (ROOT / "sluice").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    assert modules - _layered() == set(), "add these modules to a layer in pyproject.toml [tool.importlinter]"


def test_the_top_level_packages_are_layers() -> None:
    assert {"flows", "tasks", "schemas"} <= _layered()


def test_docs_architecture_places_every_layered_module() -> None:
    """docs/architecture.md's table names each module of the contract (as a path, or by file name in its row)."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = []
    for name in sorted(_layered()):
        parts = name.split(".")
        path, last = "/".join(parts), parts[-1]
        forms = (f"{path}.py", f"{path}/", f"`{last}.py`", f"`{last}/`", f"`{last}*.py`", f"({last}.py")
        if not any(form in doc for form in forms):
            missing.append(name)
    assert missing == [], "say where these are in docs/architecture.md's table"
