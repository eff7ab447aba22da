"""Every warehouse table is declared in ``sluice/tables`` and reached by importing the package."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

from sluice import tables


def test_every_module_of_sluice_tables_is_imported_by_the_package() -> None:
    declared = set(tables.metadata.tables)
    for module in pkgutil.iter_modules(tables.__path__):
        importlib.import_module(f"sluice.tables.{module.name}")
    # A module the package does not import would hold tables that ensure-all and the encoder test never see.
    assert set(tables.metadata.tables) == declared


def test_the_registry_targets_are_the_declared_tables() -> None:
    from sluice.datasets import all_datasets

    for dataset in all_datasets():
        assert dataset.table is tables.metadata.tables[tables.name_of(dataset.table)], dataset.name


def test_the_tables_load_no_pandas() -> None:
    code = "import sys, sluice.tables, sluice.ledger; sys.exit('pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
