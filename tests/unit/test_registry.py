"""The dataset registry: lookup by name, resolution by key."""

from __future__ import annotations

import pytest

from sluice import datasets
from sluice.errors import UnknownDataset


def test_resolves_checkin_keys() -> None:
    assert datasets.resolve("tm/dailycheckins/2024/03/01/dailycheckins.csv").name == "dailycheckins"
    assert datasets.resolve("/landing/dailycheckins_sample.csv").name == "dailycheckins"
    assert datasets.resolve("elsewhere/unrelated.txt") is None


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownDataset, match="dailycheckins"):
        datasets.get_dataset("nope")


def test_every_dataset_is_complete() -> None:
    for dataset in datasets.all_datasets():
        assert dataset.patterns and dataset.source_columns, dataset.name
        assert set(dataset.column_sources) <= set(dataset.output_columns), dataset.name
        if dataset.table is not None:
            assert set(dataset.output_columns) <= set(dataset.table.columns.keys()), dataset.name


@pytest.mark.parametrize(
    ("key", "dataset"),
    [
        ("tm/dailycheckins/2024/03/01/dailycheckins.csv", "dailycheckins"),
        ("incoming/orders.csv", "orders"),
        ("data2bots/reviews/2024-03-01.csv", "reviews"),
        ("shipment_deliveries.csv.gz", "shipment_deliveries"),
        ("sertis/transactions/anything.csv", "transactions"),
        ("drop/transaction_sample.csv", "transactions"),
        ("transaction/2024/03/01/10-20/transaction-2024-03-01_10.20.00.csv", None),  # a Totesys batch
        ("exports/report.csv", None),
        # Case does not matter: Windows exports write `.CSV` (and often the whole name in capitals)
        ("DAILYCHECKINS.CSV", "dailycheckins"),
        ("export/dailycheckins_mixed.Csv.GZ", "dailycheckins"),
        ("Data2bots/Orders/2024-03-01.CSV", "orders"),
        ("TRANSACTION/2024/03/01/10-20/TRANSACTION-2024-03-01_10.20.00.CSV", None),
    ],
)
def test_each_key_is_claimed_by_the_right_dataset_or_none(key: str, dataset: str | None) -> None:
    from sluice.datasets import resolve

    found = resolve(key)
    assert (found.name if found else None) == dataset


@pytest.mark.parametrize(
    ("source", "dataset"),
    [
        # resolve() gets the whole source (flows/ingest.py, backfill): a folder pattern claims it under any root
        ("s3://landing/data2bots/orders/2024-03-01.csv", "orders"),
        ("/home/me/sluice/.sluice/landing/data2bots/reviews/day.csv", "reviews"),
        ("s3://landing/sertis/transactions/anything.csv", "transactions"),
        ("s3://landing/tm/dailycheckins/2024/03/01/export.csv", "dailycheckins"),
        ("s3://landing/exports/report.csv", None),
        ("/srv/staging/totesys/ingestion/transaction/2024/03/01/10-20/transaction-2024.csv", None),
    ],
)
def test_folder_patterns_claim_full_uris_and_local_paths(source: str, dataset: str | None) -> None:
    found = datasets.resolve(source)
    assert (found.name if found else None) == dataset
