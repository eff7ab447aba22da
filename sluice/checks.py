"""Whole-table checks of a pipeline's output (Totesys' star schema, Data2bots' analytics, Sertis' gold).

Three parts, so that a run can do them as three tasks: ``failure_cases`` (pure: every failed check as a row),
``quarantine`` (those rows as CSV in the quarantine zone: I/O, retried by its task), ``validation_failed``
(the one error the run halts with: how many, the first, and where they all are). Any failure halts the run:
a built table that breaks its model must not load.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

import pandas as pd
import pandera.errors as pe
import pandera.pandas as pa

from sluice.adapters import storage
from sluice.errors import ValidationFailed, counted, shown
from sluice.settings import Settings

COLUMNS = ["table", "row", "column", "check", "value"]


def failure_cases(tables: Mapping[str, tuple[type[pa.DataFrameModel], pd.DataFrame]]) -> pd.DataFrame:
    """Each table (name → model, frame) against its model: one row per failed check, row numbers from 1."""
    problems: list[pd.DataFrame] = []
    for name, (model, frame) in tables.items():
        try:
            model.validate(frame, lazy=True)
        except pe.SchemaErrors as exc:
            cases = exc.failure_cases
            problems.append(
                pd.DataFrame(
                    {
                        "table": name,
                        "row": cases["index"].map(lambda i: None if pd.isna(i) else int(i) + 1),
                        "column": cases["column"].astype(str),
                        "check": cases["check"].astype(str),
                        "value": cases["failure_case"].astype(str),
                    }
                )
            )
    if not problems:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(problems, ignore_index=True)


def quarantine_location(settings: Settings, pipeline: str, at: datetime, run_id: uuid.UUID) -> str:
    """Where a run's failed checks go: ``<quarantine>/<pipeline>/YYYY/MM/DD/HH-MM/<run id>.failures.csv``."""
    return storage.join(
        settings.zone("quarantine"), f"{pipeline}/{at:%Y/%m/%d/%H-%M}/{run_id.hex}.failures.csv"
    )


def quarantine(failures: pd.DataFrame, uri: str) -> str:
    """The failed checks as CSV at ``uri`` (the same key on a retry: written again, whole); returns ``uri``."""
    return storage.put_bytes(failures.to_csv(index=False).encode(), uri)


def validation_failed(pipeline: str, failures: pd.DataFrame, quarantine_uri: str) -> ValidationFailed:
    """The error a run with failed checks halts with: how many, the first, and where they all are."""
    first = failures.iloc[0]
    said = first.get("reason")  # a pipeline that says why in its own words (Totesys: the source row)
    what = (
        said
        if isinstance(said, str) and said
        else f"{first['table']} row {first['row']}, column {first['column']}: {first['check']} "
        f"(value {shown(first['value'])})"
    )
    return ValidationFailed(
        f"{pipeline}: {counted(len(failures), 'check')} failed, nothing loaded; first: {what}; all in "
        f"{quarantine_uri}",
        rows_invalid=len(failures),
        quarantine_uri=quarantine_uri,
    )
