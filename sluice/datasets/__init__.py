"""The dataset catalogue: the built-in datasets (each module registers its own on import) and the lookups.

Add a dataset: a module here that calls ``registry.register(Dataset(...))``, imported below by name.
``sluice.registry`` holds only the spec types, so that what needs the tables' metadata alone (the ledger,
``sluice ledger``) does not load pandas and pandera with the datasets.
"""

from __future__ import annotations

import difflib

from sluice.datasets import data2bots, sertis, tm
from sluice.errors import UnknownDataset
from sluice.registry import Dataset, registered


def all_datasets() -> list[Dataset]:
    """Every registered dataset, by name."""
    return sorted(registered().values(), key=lambda d: d.name)


def get_dataset(name: str) -> Dataset:
    try:
        return registered()[name]
    except KeyError:
        names = sorted(registered())
        close = difflib.get_close_matches(name, names, n=1)
        meant = f": did you mean {close[0]!r}?" if close else ""
        raise UnknownDataset(
            f"unknown dataset {name!r}{meant} (registered: {', '.join(names) or 'none'})"
        ) from None


def resolve(key: str) -> Dataset | None:
    """The one dataset that claims ``key``, or None. Two claimants are a registry bug."""
    claimants = [d for d in all_datasets() if d.claims(key)]
    if len(claimants) > 1:
        names = ", ".join(d.name for d in claimants)
        raise UnknownDataset(f"{key}: claimed by several datasets ({names}); pass the dataset explicitly")
    return claimants[0] if claimants else None
