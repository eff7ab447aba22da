"""README "Adding a dataset", run as written: its code blocks go into a copy of the code, its commands run there.

Each ```python block of the section whose first line is ``# <path>`` is that file: a new module, or (``# <path>: add
the module to this line``) the import line of ``<path>`` that starts the same way, replaced. Each ``./run sluice``
line of its bash block runs as ``python -m sluice.cli`` in the copy, on this session's PostgreSQL and Prefect.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sluice", "flows", "tasks", "schemas")


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of one language, dedented (the section's blocks sit inside a numbered list)."""
    found = []
    for match in re.finditer(rf"^( *)```{language}\n(.*?)^\1```$", text, flags=re.M | re.S):
        indent = len(match.group(1))
        found.append("\n".join(line[indent:] for line in match.group(2).splitlines()) + "\n")
    return found


def apply_python_block(copy: Path, block: str) -> str:
    """Write one README block into the copy; returns the path it names."""
    first, _, body = block.partition("\n")
    assert first.startswith("# "), f"a block of 'Adding a dataset' must start with '# <path>': {first!r}"
    path, _, note = first[2:].partition(":")
    target = copy / path.strip()
    if not note:
        assert not target.exists(), f"{path} is a new module in the README but exists already"
        if not target.parent.exists():  # a new test folder: with its empty __init__.py, as the README says
            target.parent.mkdir(parents=True)
            (target.parent / "__init__.py").write_text("", encoding="utf-8")
        target.write_text(f'"""{path.strip()} (README "Adding a dataset")."""\n\n{body}', encoding="utf-8")
        return path
    assert "add the module to this line" in note, first
    [line] = [line for line in body.splitlines() if line.strip()]
    head = line.split(" import ")[0] + " import "
    source = target.read_text(encoding="utf-8").splitlines(keepends=True)
    matching = [i for i, old in enumerate(source) if old.startswith(head)]
    assert len(matching) == 1, f"{path}: one line starting {head!r} expected, found {len(matching)}"
    # the README's line, and any module a user has added to it already (theirs stays imported)
    names = [n.strip() for n in line.split(" import ", 1)[1].split(",")]
    had = [n.strip() for n in source[matching[0]].split(" import ", 1)[1].split(",")]
    source[matching[0]] = head + ", ".join(sorted(set(names) | set(had))) + "\n"
    target.write_text("".join(source), encoding="utf-8")
    return path


def run(copy: Path, env: dict[str, str], line: str) -> subprocess.CompletedProcess[str]:
    command = line.split("  #")[0].strip()
    if command.startswith("./run sluice "):
        argv = [sys.executable, "-m", "sluice.cli", *shlex.split(command.removeprefix("./run sluice "))]
        return subprocess.run(
            argv, cwd=copy, env=env, capture_output=True, text=True, timeout=300, check=False
        )
    return subprocess.run(
        ["bash", "-c", command], cwd=copy, env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.usefixtures("prefect_harness")
def test_adding_a_dataset_as_the_readme_says(sluice_env: Path, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    from sluice.adapters.warehouse import get_engine

    text = section("Adding a dataset")
    copy = tmp_path / "checkout"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    (copy / "tests").mkdir()
    for name in ("__init__.py", "conftest.py"):  # the fixtures the README's test takes
        shutil.copy(ROOT / "tests" / name, copy / "tests" / name)
    written = [apply_python_block(copy, block) for block in blocks(text, "python")]
    # schema, transform, table, its import, dataset, its import, the tests
    assert len(written) >= 7, written

    # What `./run test` checks first: the README's code, added as it says, passes ruff (the lint and the format).
    # Adding a name to the catalogues' import lines failed F401 (unused import) while the built-in ones were also
    # listed elsewhere.
    for ruff in (["check"], ["format", "--check"]):
        linted = subprocess.run(
            [sys.executable, "-m", "ruff", *ruff, "--no-cache", "."],
            cwd=copy, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert linted.returncode == 0, linted.stdout + linted.stderr

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(copy)}
    # The copy, not this checkout, is what runs (the editable install would otherwise win for `sluice`).
    check = "import sluice, sluice.datasets as d; print(sluice.__file__); print(d.get_dataset('pageviews').target)"
    where = subprocess.run([sys.executable, "-c", check], cwd=copy, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(copy / "sluice" / "__init__.py"), "web.pageviews"]
    # tests/unit/test_table_declarations.py's rule, in the copy: every module of sluice/tables is imported by it.
    declared = (
        "import importlib, pkgutil, sys; from sluice import tables; before = set(tables.metadata.tables); "
        "[importlib.import_module(f'sluice.tables.{m.name}') for m in pkgutil.iter_modules(tables.__path__)]; "
        "sys.exit(sorted(set(tables.metadata.tables) - before) or None)"
    )
    tables = subprocess.run(
        [sys.executable, "-c", declared], cwd=copy, env=env, capture_output=True, text=True
    )
    assert tables.returncode == 0, tables.stderr

    engine = get_engine()
    try:
        [commands] = blocks(text, "bash")
        lines = [line for line in commands.splitlines() if line.strip()]
        results = [run(copy, env, line) for line in lines]
        for line, result in zip(lines[:2], results[:2], strict=True):  # mkdir, printf
            assert result.returncode == 0, (line, result.stderr)
        hard, soft, ledger = results[2:]
        assert hard.returncode == 1, hard.stdout + hard.stderr
        assert "row 2, column views: greater_than_or_equal_to(0) (value '-3')" in hard.stderr
        assert "nothing loaded" in hard.stderr and "Traceback" not in hard.stderr
        assert soft.returncode == 0, soft.stdout + soft.stderr
        assert "1 loaded into web.pageviews, 1 quarantined" in soft.stdout
        assert soft.stderr == ""
        assert ledger.returncode == 0 and "pagevi" in ledger.stdout, ledger.stdout + ledger.stderr

        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT page, day::text, views FROM web.pageviews")).all()
        assert [tuple(row) for row in rows] == [("/home", "2026-11-01", 10)]
        # step 6: the README's tests pass, run in the copy as `./run test tests/web` runs them (their own session)
        [tests] = [path for path in written if path.startswith("tests/")]
        clean = {k: v for k, v in env.items() if not k.startswith(("PREFECT_", "SLUICE_"))}
        ran = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", tests],
            cwd=copy, env=clean, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert ran.returncode == 0 and "2 passed" in ran.stdout, ran.stdout[-3000:] + ran.stderr[-2000:]
        as_json = run(copy, env, "./run sluice ledger --json")
        runs = [r for r in json.loads(as_json.stdout) if r["dataset"] == "pageviews"]
        assert sorted((r["status"], r["state"]) for r in runs) == [
            ("failed", "validate"),
            ("success", "load"),
        ]
        # the file as the README names it, relative to the checkout; a run records it absolute (one file, one source)
        landed = Path(copy).resolve() / ".sluice/landing/web/pageviews/2026-11-01.csv"
        assert all(r["source"] == str(landed) for r in runs), [r["source"] for r in runs]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS web CASCADE"))
