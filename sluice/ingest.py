"""The ingest stages as plain functions on files: read+transform, validate, load.

Each stage streams: the file is read in chunks of ``chunk_rows``; every chunk is transformed and spooled
to an Arrow IPC file in the run's work folder; validation reads the spool a chunk at a time, splitting valid
rows (spooled again) from failures (collected for quarantine); the load COPYs the valid spool in one
transaction. Memory is bounded by the chunk size, not the file size; the landed file is only read.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.ipc as ipc

from sluice import storage
from sluice.errors import BadFile, ValidationFailed
from sluice.registry import Dataset

logger = logging.getLogger(__name__)

ROW = "_source_row"
RAW_PREFIX = "raw:"
QUARANTINE_COLUMNS = ["row", "column", "check", "value", "reason"]
PREVIEW_LIMIT = 20


@dataclass
class Spool:
    """A run's chunks on local disk, one Arrow IPC file per chunk."""

    folder: Path
    parts: list[Path] = field(default_factory=list)
    rows: int = 0

    def write(self, frame: pd.DataFrame) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"part-{len(self.parts):05d}.arrow"
        table = pa_arrow.Table.from_pandas(frame, preserve_index=False)
        with ipc.new_file(str(path), table.schema) as writer:
            writer.write_table(table)
        self.parts.append(path)
        self.rows += len(frame)

    def frames(self) -> Iterator[pd.DataFrame]:
        for path in self.parts:
            with ipc.open_file(str(path)) as reader:
                yield reader.read_all().to_pandas()


@dataclass
class Transformed:
    spool: Spool
    rows_read: int


@dataclass
class Validated:
    spool: Spool
    rows_valid: int
    rows_invalid: int
    quarantine_uri: str | None
    failures: list[dict[str, Any]]


# --- reading ------------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def read_header(path: Path, dataset: Dataset, source: str) -> list[str]:
    """The file's header, checked against the dataset: readable, delimited as declared, required columns."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic == b"PAR1":
        raise BadFile(f"{source}: looks like JSON or Parquet (Parquet magic bytes), expected delimited text")
    if magic.startswith(b"PK\x03\x04"):
        raise BadFile(f"{source}: a ZIP/XLSX archive, expected delimited text")
    try:
        with _open_text(path) as handle:
            first = handle.readline()
    except UnicodeDecodeError as exc:
        raise BadFile(f"{source}: not UTF-8 text (byte {exc.start} of the header)") from None
    except (OSError, EOFError) as exc:
        raise BadFile(f"{source}: cannot be read ({exc})") from None
    if not first.strip():
        raise BadFile(f"{source}: empty file (no header line)")
    if first.lstrip().startswith(("{", "[")):
        raise BadFile(f"{source}: looks like JSON or Parquet, expected delimited text")
    header = next(csv.reader([first], delimiter=dataset.delimiter))
    header = [h.strip() for h in header]
    duplicates = sorted(n for n, c in Counter(header).items() if c > 1)
    if duplicates:
        raise BadFile(f"{source}: duplicate column names in the header: {', '.join(duplicates)}")
    missing = [c for c in dataset.source_columns if c not in header]
    if missing:
        hint = ""
        for other in (",", "|", ";", "\t"):
            if other != dataset.delimiter and len(first.split(other)) >= len(dataset.source_columns):
                hint = f" (the file looks {other!r}-delimited; {dataset.name} expects {dataset.delimiter!r})"
                break
        raise BadFile(
            f"{source}: missing required column(s) {', '.join(missing)}; found {', '.join(header)}{hint}"
        )
    extra = [c for c in header if c not in dataset.source_columns]
    if extra and dataset.extra_columns == "reject":
        raise BadFile(
            f"{source}: unexpected column(s) {', '.join(extra)} "
            f"(schema drift policy of {dataset.name} is 'reject')"
        )
    if extra:
        logger.warning(
            "%s: ignoring unexpected column(s) %s (drift policy 'ignore')", source, ", ".join(extra)
        )
    return header


def read_chunks(path: Path, dataset: Dataset, source: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's required source columns as text, in chunks, indexed by 1-based record number."""
    read_header(path, dataset, source)
    offset = 0
    try:
        reader = pd.read_csv(
            path,
            sep=dataset.delimiter,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
            compression="infer" if not _is_gzip(path) else "gzip",
            usecols=list(dataset.source_columns),
            chunksize=chunk_rows,
            engine="c",
        )
        with reader:
            for chunk in reader:
                chunk.columns = [c.strip() for c in chunk.columns]
                chunk.index = pd.RangeIndex(offset + 1, offset + 1 + len(chunk))
                offset += len(chunk)
                yield chunk
    except UnicodeDecodeError as exc:
        raise BadFile(f"{source}: not UTF-8 text near record {offset + 1} ({exc.reason})") from None
    except pd.errors.ParserError as exc:
        raise BadFile(f"{source}: malformed delimited text near record {offset + 1}: {exc}") from None
    except pd.errors.EmptyDataError:
        raise BadFile(f"{source}: empty file") from None


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


# --- transform ----------------------------------------------------------------------------------------


def transform_file(path: Path, dataset: Dataset, source: str, work: Path, chunk_rows: int) -> Transformed:
    """Read the file in chunks, apply the dataset's pure transform, spool output + raw values."""
    spool = Spool(work / "transformed")
    rows = 0
    for raw in read_chunks(path, dataset, source, chunk_rows):
        out = dataset.transform(raw)
        combined = out.assign(**{ROW: raw.index.to_numpy()})
        for column in dataset.source_columns:
            combined[RAW_PREFIX + column] = raw[column].array  # Arrow strings stay Arrow (no object copy)
        spool.write(combined)
        rows += len(raw)
    if rows == 0:
        raise BadFile(f"{source}: header only, no data rows")
    return Transformed(spool=spool, rows_read=rows)


# --- validate -----------------------------------------------------------------------------------------


def _describe(check: Any) -> str:
    text = str(check)
    return {"not_nullable": "required (missing or unparseable)"}.get(text, text)


def validate_chunk(frame: pd.DataFrame, dataset: Dataset) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Split one spooled chunk into valid output rows and failure records (row, column, check, value)."""
    out_columns = dataset.output_columns
    out = frame[out_columns]
    try:
        dataset.model.validate(out, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return frame[[*out_columns, ROW]], []

    row_cases = cases[cases["index"].notna()]
    schema_cases = cases[cases["index"].isna()]
    if not schema_cases.empty:
        first = schema_cases.iloc[0]
        raise ValidationFailed(
            f"output of {dataset.name} breaks its schema: column {first['column']}, check {first['check']}, "
            f"{first['failure_case']} (a transform bug, not a data problem)"
        )
    positions = row_cases["index"].astype("int64").to_numpy()
    contexts = row_cases["schema_context"].astype(str).to_numpy()
    failures: list[dict[str, Any]] = []
    seen: set[tuple[int, str, str]] = set()
    for position, column, check, context in zip(
        positions, row_cases["column"], row_cases["check"], contexts, strict=True
    ):
        if context != "DataFrameSchema" and str(column) in out_columns:
            source_column = dataset.source_column(str(column))
            raw_key = RAW_PREFIX + source_column
            value = frame[raw_key].iat[position] if raw_key in frame else frame[str(column)].iat[position]
        else:  # a check across columns (e.g. total = price x quantity): the record is the value
            source_column = "*"
            value = ", ".join(
                f"{c}={frame[RAW_PREFIX + c].iat[position]}"
                for c in dataset.source_columns
                if RAW_PREFIX + c in frame
            )
        key = (int(position), source_column, str(check))
        if key in seen:  # pandera lists a row-wide failure once per column
            continue
        seen.add(key)
        failures.append(
            {
                "row": int(frame[ROW].iat[position]),
                "column": source_column,
                "check": _describe(check),
                "value": None if pd.isna(value) else str(value),
                "position": int(position),
            }
        )
    failures.sort(key=lambda f: (f["row"], f["column"]))
    bad = sorted({f["position"] for f in failures})
    valid = frame.drop(index=frame.index[bad])
    return valid[[*out_columns, ROW]], failures


def _quarantine_frame(frame: pd.DataFrame, failures: list[dict[str, Any]], dataset: Dataset) -> pd.DataFrame:
    rows = []
    for failure in failures:
        record = {k: failure[k] for k in ("row", "column", "check", "value")}
        record["reason"] = (
            f"row {failure['row']}, column {failure['column']}: {failure['check']} (value {failure['value']!r})"
        )
        for column in dataset.source_columns:
            record[column] = frame[RAW_PREFIX + column].iat[failure["position"]]
        rows.append(record)
    return pd.DataFrame(rows, columns=[*QUARANTINE_COLUMNS, *dataset.source_columns])


def quarantine_location(quarantine_zone: str, dataset: Dataset, source: str, ingestion_id: uuid.UUID) -> str:
    """Where a run's quarantined rows (and a bad file) go: dataset/date/source-name.ingestion."""
    today = datetime.now(UTC)
    name = storage.basename(source)
    return storage.join(quarantine_zone, dataset.name, f"{today:%Y/%m/%d}", f"{name}.{ingestion_id.hex[:12]}")


def validate_spool(
    transformed: Transformed,
    dataset: Dataset,
    *,
    work: Path,
    hard: bool,
    quarantine_base: str,
    source: str,
) -> Validated:
    """Validate every chunk lazily; quarantine failures (always); in hard mode, fail if any row failed."""
    valid = Spool(work / "valid")
    rejects = work / "quarantine.csv"
    preview: list[dict[str, Any]] = []
    bad_rows = 0
    header_written = False
    for frame in transformed.spool.frames():
        good, failures = validate_chunk(frame, dataset)
        valid.write(good)
        if failures:
            bad_rows += len({f["position"] for f in failures})
            _quarantine_frame(frame, failures, dataset).to_csv(
                rejects, mode="a", index=False, header=not header_written
            )
            header_written = True
            preview.extend({k: v for k, v in f.items() if k != "position"} for f in failures[:PREVIEW_LIMIT])
    quarantine_uri = None
    if bad_rows:
        quarantine_uri = storage.put_file(rejects, f"{quarantine_base}.rows.csv")
    preview = preview[:PREVIEW_LIMIT]
    if hard and bad_rows:
        first = "; ".join(
            f"row {f['row']} column {f['column']}: {f['check']} (value {f['value']!r})" for f in preview[:3]
        )
        raise ValidationFailed(
            f"{source}: {bad_rows} rows failed checks (hard mode, nothing loaded): {first}"
            f"{' ...' if bad_rows > 3 else ''}; all failures in {quarantine_uri}",
            rows_invalid=bad_rows,
            quarantine_uri=quarantine_uri,
        )
    return Validated(
        spool=valid,
        rows_valid=valid.rows,
        rows_invalid=bad_rows,
        quarantine_uri=quarantine_uri,
        failures=preview,
    )


def quarantine_file(path: Path, base: str, error: str) -> str:
    """Copy a file that could not be read into quarantine, with the reason beside it."""
    uri = storage.put_file(path, f"{base}.file")
    storage.put_bytes(json.dumps({"error": error}, indent=2).encode(), f"{base}.error.json")
    return uri


def validate_table(model: type[pa.DataFrameModel], frame: pd.DataFrame, label: str) -> None:
    """Validate a whole output table (lazy); any failure is one ``ValidationFailed`` naming the first one."""
    try:
        model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        first = exc.failure_cases.iloc[0]
        raise ValidationFailed(
            f"{label}: {len(exc.failure_cases)} checks failed; first: column {first['column']}, "
            f"{first['check']} (value {first['failure_case']!r}); nothing loaded",
            rows_invalid=len(exc.failure_cases),
        ) from None
