"""Built-in datasets: importing a module registers it. Add a module here to add a dataset."""

from sluice.datasets import tm  # noqa: F401
