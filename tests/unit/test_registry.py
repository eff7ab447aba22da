"""The dataset registry: lookup by name, resolution by key."""

from __future__ import annotations

import pytest

from sluice import registry
from sluice.errors import UnknownDataset


def test_resolves_checkin_keys() -> None:
    assert registry.resolve("tm/dailycheckins/2024/03/01/dailycheckins.csv").name == "dailycheckins"
    assert registry.resolve("/landing/dailycheckins_sample.csv").name == "dailycheckins"
    assert registry.resolve("elsewhere/unrelated.txt") is None


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownDataset, match="dailycheckins"):
        registry.get_dataset("nope")


def test_every_dataset_is_complete() -> None:
    for dataset in registry.datasets():
        assert dataset.patterns and dataset.source_columns, dataset.name
        assert set(dataset.column_sources) <= set(dataset.output_columns), dataset.name
        if dataset.table is not None:
            assert set(dataset.output_columns) <= set(dataset.table.columns.keys()), dataset.name
