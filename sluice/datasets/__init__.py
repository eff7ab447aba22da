"""Built-in datasets: importing a module registers it. Add a module name here to add a dataset."""

from __future__ import annotations

import importlib
import importlib.util

BUILTIN: tuple[str, ...] = ("tm", "data2bots", "sertis")

for _name in BUILTIN:
    if importlib.util.find_spec(f"sluice.datasets.{_name}") is not None:
        importlib.import_module(f"sluice.datasets.{_name}")
