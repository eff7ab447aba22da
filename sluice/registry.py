"""The dataset registry: a dataset is declared once and the generic ingest flow does the rest.

A declaration says how files are recognised (glob patterns on the key), how they are read (delimiter,
required columns, drift policy), the pure transform, the Pandera output model, the target table and how
rows load (append / replace / upsert on keys). Adding a dataset is adding one module under
``sluice/datasets/``; no new flow.
"""

from __future__ import annotations

import fnmatch
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa

if TYPE_CHECKING:  # annotations only: reading the registry (e.g. `sluice ledger`) needs no pandas
    import pandas as pd
    import pandera.pandas as pa

LoadMode = Literal["append", "replace", "upsert"]
DriftPolicy = Literal["reject", "ignore"]


@dataclass(frozen=True)
class AfterLoad:
    """What a dataset's ``after_load`` hook gets: the file, its validated rows, the run."""

    dataset: str
    source: str
    local_path: Path
    frames: Callable[[], Iterable[pd.DataFrame]]
    ingestion_id: uuid.UUID
    rows_loaded: int


@dataclass(frozen=True)
class Dataset:
    """Everything Sluice needs to know to ingest one kind of file."""

    name: str
    description: str
    patterns: tuple[str, ...]
    source_columns: tuple[str, ...]
    model: type[pa.DataFrameModel]
    transform: Callable[[pd.DataFrame], pd.DataFrame]
    table: sa.Table | None
    column_sources: Mapping[str, str] = field(default_factory=dict)
    load_mode: LoadMode = "append"
    keys: tuple[str, ...] = ()
    delimiter: str = ","
    extra_columns: DriftPolicy = "reject"
    hard: bool | None = None
    generate: Callable[[int, random.Random], bytes] | None = None
    demo_key: str | None = None
    # Called after a load that loaded (not on skips): e.g. write the file's zones (bronze/silver) and catalog them.
    after_load: Callable[[AfterLoad], None] | None = None

    @property
    def target(self) -> str:
        return f"{self.table.schema}.{self.table.name}" if self.table is not None else ""

    @property
    def output_columns(self) -> list[str]:
        return list(self.model.to_schema().columns)

    def source_column(self, output_column: str) -> str:
        """The source column an output column was derived from (for quarantine messages)."""
        return self.column_sources.get(output_column, output_column)

    def claims(self, key: str) -> bool:
        """True when ``key`` (an S3 key or URI, a path) matches one of the dataset's patterns.

        A pattern with a folder (``data2bots/orders/*``) matches the key from any of its folders on, so it claims
        ``s3://bucket/data2bots/orders/x.csv`` and ``<landing folder>/data2bots/orders/x.csv`` alike. Case does not
        matter: Windows exports name files ``DAILYCHECKINS.CSV`` (they were left out as unclaimed).
        """
        key = key.casefold()
        name = key.rsplit("/", 1)[-1]
        parts = key.split("/")
        tails = ["/".join(parts[i:]) for i in range(1, len(parts))]
        return any(
            fnmatch.fnmatchcase(key, p)
            or fnmatch.fnmatchcase(name, p)
            or ("/" in p and any(fnmatch.fnmatchcase(tail, p) for tail in tails))
            for p in (pattern.casefold() for pattern in self.patterns)
        )


_REGISTRY: dict[str, Dataset] = {}


def register(dataset: Dataset) -> Dataset:
    if dataset.name in _REGISTRY and _REGISTRY[dataset.name] is not dataset:
        raise ValueError(f"dataset {dataset.name!r} is registered twice")
    _REGISTRY[dataset.name] = dataset
    return dataset


def registered() -> dict[str, Dataset]:
    """Every dataset registered so far, by name (``sluice.datasets`` registers the built-in ones)."""
    return dict(_REGISTRY)
