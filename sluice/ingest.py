"""The ingest stages as plain functions on files: read, transform, validate, as one streaming pass.

The file is read in chunks of ``chunk_rows`` (pyarrow's CSV reader; pandas' C parser as the fallback); each
chunk is transformed, validated (valid rows on, failures to quarantine) and handed to the load, which COPYs
it while the next chunk is prepared (``FilePass``, ADR 0004). Memory is bounded by the chunk size, not the
file size; the landed file is only read.

Over 350 lines: the streaming pass is one mechanism (readers, chunking, the Arrow → pandas fallback,
validation and quarantine per chunk) whose parts share its state; ADR 0004 explains it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import shutil
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from schemas.checks import no_nul
from sluice.adapters import storage
from sluice.errors import BadFile, ValidationFailed, counted, failed_check, listed, no_space, shown
from sluice.progress import Channel
from sluice.registry import Dataset

logger = logging.getLogger(__name__)

ROW = "_source_row"
RAW_PREFIX = "raw:"
QUARANTINE_COLUMNS = ["row", "column", "check", "value", "reason"]
PREVIEW_LIMIT = 20
KEY_BUCKETS_MAX = 256  # open files of the key pass; past 256 chunks a bucket holds more than a chunk's keys


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


# --- reading ------------------------------------------------------------------------------------------


#: Who hears, after each chunk is read, (source, rows read so far): ``sluice ingest`` on a terminal shows it.
_rows_read: Channel[[str, int]] = Channel()

#: ``progress(listener)``: call ``listener(source, rows read so far)`` after each chunk a pass reads in this
#: process, while inside.
progress = _rows_read.listening


def _open_text(path: Path) -> io.TextIOBase:
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline="")


def not_utf8(path: Path, source: str) -> BadFile:
    """The file's first byte that is not UTF-8, by line and byte (of the file as read: a .gz's text): the header
    read said "byte 31 of the header" for a byte of record 1, and the pass "near record 600001" (its chunk's first
    record) for one in record 700,001. Read again from the start, only once a read has failed."""
    carry, offset, lines = b"", 0, 1
    with _open_binary(path) as stream:
        while True:
            try:
                block = stream.read(1 << 20)
            except (OSError, EOFError, zlib.error):  # a broken .gz past the bad byte: where is not known
                return BadFile(f"{source}: not UTF-8 text")
            data = carry + block
            try:
                data.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as exc:
                if block and exc.reason == "unexpected end of data":  # a character cut by the block's end
                    carry = data[exc.start :]
                    data = data[: exc.start]
                else:
                    at, bad = offset + exc.start, data[exc.start]
                    line = lines + data[: exc.start].count(b"\n")
                    return BadFile(
                        f"{source}: not UTF-8 text: line {line:,} has byte 0x{bad:02x} (byte {at + 1:,} of the "
                        "file); save it as UTF-8"
                    )
            if not block:
                return BadFile(f"{source}: not UTF-8 text")
            offset += len(data)
            lines += data.count(b"\n")


def _open_binary(path: Path) -> io.BufferedIOBase:
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    raw.seek(0)
    return raw


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
            more = not first.strip() and bool(handle.read(1 << 16).strip())
    except UnicodeDecodeError:
        raise not_utf8(path, source) from None
    except (OSError, EOFError) as exc:
        raise BadFile(f"{source}: cannot be read ({exc})") from None
    if not first.strip():
        if more:  # "empty file" sent the user looking at a file that has rows
            raise BadFile(
                f"{source}: its first line is blank; the header ({', '.join(dataset.source_columns)}) must be the first line"
            )
        raise BadFile(f"{source}: empty file (no header line)")
    if first.lstrip().startswith(("{", "[")):
        raise BadFile(f"{source}: looks like JSON or Parquet, expected delimited text")
    # The csv module refuses a field over 128 KiB: a 1 MB header line (an HTML page, say) failed the load as a
    # transient error, retried three times. Process-wide, as FieldCounts sets it; nothing needs it lower.
    csv.field_size_limit(sys.maxsize)
    header = [h.strip() for h in next(csv.reader([first], delimiter=dataset.delimiter))]
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
        # a header can be a 1 MB line, or hold a NUL or an escape sequence: such a name quoted, cut to 60
        found = listed([shown(h, 60) if len(h) > 60 or not h.isprintable() else h for h in header])
        raise BadFile(f"{source}: missing required column(s) {', '.join(missing)}; found {found}{hint}")
    extra = [c for c in header if c not in dataset.source_columns]
    if extra and dataset.extra_columns == "reject":
        named = ", ".join(  # a header can be a 1 MB line, or hold a NUL: such a name quoted, cut to 60
            (shown(c, 60) if len(c) > 60 or not c.isprintable() else c)
            or "'' (a column without a name: a trailing delimiter in the header?)"
            for c in extra
        )
        raise BadFile(
            f"{source}: unexpected column(s) {named} (schema drift policy of {dataset.name} is 'reject')"
        )
    if extra:
        logger.warning(
            "%s: ignoring unexpected column(s) %s (drift policy 'ignore')", source, ", ".join(extra)
        )
    return header


class ArrowReaderGaveUp(Exception):
    """Arrow's CSV reader refused the file (a row wider than its block, a short row, bad UTF-8, broken
    quoting): the pass starts again with pandas' parser, whose error messages are the reference, and records with
    the wrong number of fields are found by ``FieldCounts``. Never a user-facing error."""


def read_chunks(
    path: Path, dataset: Dataset, source: str, chunk_rows: int, reader: str = "pandas"
) -> Iterator[pd.DataFrame]:
    """The file's required source columns as text, in chunks, indexed by 1-based record number.

    ``reader="arrow"``: pyarrow's streaming CSV reader (multi-threaded, Arrow strings, no object columns),
    about 2.5x faster than pandas' C parser; it raises ``ArrowReaderGaveUp`` on anything it cannot read
    exactly as pandas would, and the caller reads the file again with ``reader="pandas"``.
    """
    header = read_header(path, dataset, source)
    chunk_rows = rows_per_chunk(path, chunk_rows)
    if reader == "arrow":
        yield from _arrow_chunks(path, dataset, header, chunk_rows)
        return
    offset = 0
    try:
        reader_ = pd.read_csv(
            path,
            sep=dataset.delimiter,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
            compression="infer" if not _is_gzip(path) else "gzip",
            # by stripped name, as read_header checks them: a " user " header is the user column
            usecols=lambda name: name.strip() in dataset.source_columns,
            index_col=False,  # a first record wider than the header must not become the index
            chunksize=chunk_rows,
            engine="c",
        )
        with reader_:
            for chunk in reader_:
                chunk.columns = [c.strip() for c in chunk.columns]
                chunk.index = pd.RangeIndex(offset + 1, offset + 1 + len(chunk))
                offset += len(chunk)
                yield chunk
    except UnicodeDecodeError:
        raise not_utf8(path, source) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # a truncated or corrupt .gz
        raise BadFile(f"{source}: the gzip stream is broken near record {offset + 1} ({exc})") from None
    except pd.errors.ParserError as exc:
        raise BadFile(f"{source}: malformed delimited text near record {offset + 1}: {exc}") from None
    except pd.errors.EmptyDataError:
        raise BadFile(f"{source}: empty file") from None


ARROW_BLOCK_BYTES = 1 << 20  # measured on 2 cores: as fast as 4 MB, faster than 256 KB and 16 MB
#: A chunk ends at ``chunk_rows`` rows or at this much text, whichever comes first: rows of 1 MB fields made one
#: chunk of a whole 600 MB file (6.5 GB resident); rows of ordinary width never reach it (200,000 rows of 200
#: bytes are 40 MB).
CHUNK_BYTES = 64 << 20


def _arrow_chunks(path: Path, dataset: Dataset, header: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    columns = [c for c in header if c in dataset.source_columns]  # file order, as pandas' usecols keeps it
    stream = pa_arrow.input_stream(str(path), compression="gzip" if _is_gzip(path) else None)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                column_names=header, skip_rows=1, block_size=ARROW_BLOCK_BYTES, use_threads=True
            ),
            parse_options=pacsv.ParseOptions(delimiter=dataset.delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa_arrow.string() for c in columns},
                include_columns=columns,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        offset = 0
        pending: list[pa_arrow.RecordBatch] = []
        rows = size = 0
        done = False
        while not done:
            try:
                batch = reader.read_next_batch()
                pending.append(batch)
                rows += batch.num_rows
                size += batch.nbytes
            except StopIteration:
                done = True
            while rows >= chunk_rows or (rows and (done or size >= CHUNK_BYTES)):
                table = pa_arrow.Table.from_batches(pending, schema=reader.schema)
                take = min(rows, chunk_rows)
                # pandas 3 maps Arrow strings to its ``str`` dtype without copying (a types_mapper copies: 20x)
                chunk = table.slice(0, take).to_pandas()
                chunk.index = pd.RangeIndex(offset + 1, offset + 1 + take)
                offset += take
                rows -= take
                pending = table.slice(take).to_batches() if rows else []
                size = sum(b.nbytes for b in pending)
                yield chunk
    except (pa_arrow.ArrowInvalid, UnicodeDecodeError, OSError, EOFError) as exc:  # e.g. a truncated gzip
        raise ArrowReaderGaveUp(str(exc)) from None
    finally:
        stream.close()


class FieldCounts:
    """Records whose field count is not the header's, found by the ``csv`` module in step with pandas' chunks.

    Given ``usecols``, pandas' C parser silently drops the fields past the header's and fills a short record's
    missing fields with empty strings: an unquoted delimiter inside a value (``bizdev, marketing``) would load
    a shifted or cut row. Arrow's reader refuses such a file, so only the pandas pass scans; one record at a
    time, as far as the chunk in hand, so memory stays bounded. Extra fields that are all empty (a trailing
    delimiter) lose nothing and pass; blank and whitespace-only lines are skipped, as pandas skips them.
    """

    def __init__(self, path: Path, delimiter: str) -> None:
        self.record = 0
        self._handle = _open_text(path)
        self._delimiter = delimiter
        # The csv module refuses a field over 128 KiB (csv.Error, a failed load); pandas has no limit, and a huge
        # field is the models' to quarantine (a length check). The limit is process-wide; nothing else needs it lower.
        csv.field_size_limit(sys.maxsize)
        self._line = ""  # the last line the csv module read: whether a blank record was quoted
        self._records = csv.reader(self._lines(), delimiter=delimiter)
        self.width = len(next(self._records, None) or [])  # the header's fields

    def _lines(self) -> Iterator[str]:
        for line in self._handle:
            self._line = line
            yield line

    def upto(self, last: int) -> dict[int, tuple[str, str]]:
        """``{record: (the check that failed, the record's text)}`` for the records after the previous call, up to
        record ``last``."""
        found: dict[int, tuple[str, str]] = {}
        while self.record < last:
            fields = next(self._records, None)
            if fields is None:
                break
            # blank or whitespace-only: no record, as for pandas; but ``""`` or ``" "`` is one, as for pandas (skipped,
            # every later record was numbered one off: a valid row quarantined, the next one's extra field lost)
            if not fields or (len(fields) == 1 and not fields[0].strip(" \t") and '"' not in self._line):
                continue
            self.record += 1
            if len(fields) < self.width or any(fields[self.width :]):
                text = self._delimiter.join(fields)
                found[self.record] = (
                    f"field count: {len(fields)} fields, the header has {self.width}",
                    text if len(text) <= 500 else text[:500] + "...",
                )
        return found

    def close(self) -> None:
        self._handle.close()


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


# --- validate -----------------------------------------------------------------------------------------


def _describe(check: Any) -> str:
    text = str(check)
    return {"not_nullable": "required (missing or unparseable)"}.get(text, text)


UNPARSED = "a value that does not parse (only an empty value means none)"


def _unparsed(frame: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """Failure cases (pandera's shape) for a nullable column whose value was there but did not parse.

    A transform turns what it cannot parse into null, so that a required column reports it; a nullable column
    would take that null as "no value" and silently load ``2019-02-30`` as an empty date.
    """
    cases = []
    for name, column in dataset.model.to_schema().columns.items():
        raw_key = RAW_PREFIX + dataset.source_column(str(name))
        if not column.nullable or raw_key not in frame:
            continue
        lost = (
            frame[str(name)].isna().to_numpy() & (frame[raw_key].astype("str").str.strip() != "").to_numpy()
        )
        for position in np.flatnonzero(lost):
            cases.append(
                {"schema_context": "Column", "column": str(name), "check": UNPARSED, "index": int(position)}
            )
    return pd.DataFrame(cases, columns=["schema_context", "column", "check", "index"])


#: The largest value of each PostgreSQL integer type
_INT_MAX = {"SMALLINT": 2**15 - 1, "INTEGER": 2**31 - 1, "BIGINT": 2**63 - 1}

#: A limit of a column type: (check, its test, what it bounds: "nul", "length", "max" or "min", the bound)
Limit = tuple[str, Callable[[pd.Series], pd.Series], str, float]


def _column_limits(column: sa.Column) -> list[Limit]:
    """What a value of ``column``'s type must be for PostgreSQL to take it at the COPY, each check named as Pandera
    names the same bound in a model."""
    kind = column.type
    if isinstance(kind, sa.String):  # Text, String(n), Unicode…
        limits: list[Limit] = [("no NUL character", no_nul, "nul", 0)]
        if kind.length:
            n = kind.length
            limits.append((f"str_length(None, {n})", lambda v: v.astype("str").str.len() <= n, "length", n))
        return limits
    if isinstance(kind, sa.Integer):
        top = _INT_MAX.get(kind.compile(dialect=postgresql.dialect()).upper(), 2**31 - 1)
        if top == _INT_MAX["BIGINT"]:  # what a whole number parses to (Int64) never passes it
            return []
        return [
            (f"less_than_or_equal_to({top})", lambda v: v <= top, "max", top),
            (f"greater_than_or_equal_to({-top - 1})", lambda v: v >= -top - 1, "min", -top - 1),
        ]
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float) and kind.precision:
        # PostgreSQL rounds to the scale first (half away from zero): 999999.995 is 1000000.00, past numeric(8, 2)
        scale = kind.scale or 0
        under = 10 ** (kind.precision - scale) - 0.5 * 10.0**-scale
        check = f"fits numeric({kind.precision}, {scale}) (less than 1e{kind.precision - scale} once rounded)"
        return [
            (check, lambda v: v.astype("float64") < under, "max", under),
            (check, lambda v: v.astype("float64") > -under, "min", -under),
        ]
    return []


def _said_by(model_checks: list[Any], bounds: str, bound: float) -> bool:
    """Whether a model's checks of a column already hold a value within ``bound`` (so it need not be checked):
    a ``no NUL character`` check, a ``str_length`` at most ``bound``, or a bound (``le``, ``lt``, ``in_range``…)
    at least as tight."""
    if bounds == "nul":
        return any(check.name == "no NUL character" for check in model_checks)
    for check in model_checks:
        value = (getattr(check, "statistics", None) or {}).get(
            "min_value" if bounds == "min" else "max_value"
        )
        if not isinstance(value, int | float) or (bounds == "length") != (check.name == "str_length"):
            continue
        if value >= bound if bounds == "min" else value <= bound:
            return True
    return False


_LIMITS: dict[tuple[str, int], list[tuple[str, str, Callable[[pd.Series], pd.Series]]]] = {}


def _limits_of(dataset: Dataset) -> list[tuple[str, str, Callable[[pd.Series], pd.Series]]]:
    """(column, check, test) for each limit of the target's column types that the dataset's model does not already
    hold its column within; worked out once per dataset."""
    key = (dataset.name, id(dataset.model))
    if key not in _LIMITS:
        table, columns = dataset.table, dataset.model.to_schema().columns
        _LIMITS[key] = [
            (name, check, test)
            for name in dataset.output_columns
            if table is not None and name in table.c
            for check, test, bounds, bound in _column_limits(table.c[name])
            if not _said_by(list(columns[name].checks) if name in columns else [], bounds, bound)
        ]
    return _LIMITS[key]


def _beyond_columns(out: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """Failure cases (pandera's shape) for values the target's column types cannot hold: a NUL in text, an integer
    or a number past its column, text longer than its ``varchar(n)``, whatever the dataset's model says (a new
    dataset's may say none of it). PostgreSQL refused such a value at the COPY and the whole file failed, naming
    no row or column; it now fails its row, like any check."""
    cases: list[dict[str, Any]] = []
    for name, check, test in _limits_of(dataset):
        values = out[name]
        present = values.notna().to_numpy()
        try:
            held = test(values[present])
        except (TypeError, ValueError):  # a type the limit does not apply to: the model's to say
            continue
        bad = np.flatnonzero(present)[~np.asarray(held.fillna(True), dtype=bool)]
        cases.extend(
            {"schema_context": "Column", "column": name, "check": check, "index": int(i)} for i in bad
        )
    return pd.DataFrame(cases, columns=["schema_context", "column", "check", "index"])


def validate_chunk(frame: pd.DataFrame, dataset: Dataset) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Split one spooled chunk into valid output rows and failure records (row, column, check, value)."""
    out_columns = dataset.output_columns
    out = frame[out_columns]
    unparsed = _unparsed(frame, dataset)
    beyond = _beyond_columns(out, dataset)
    try:
        dataset.model.validate(out, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        if unparsed.empty and beyond.empty:
            return frame[[*out_columns, ROW]], []
        cases = unparsed.iloc[:0]
    if not beyond.empty:  # a cell the model failed already says why once (its regex ruled out a NUL, say)
        told = set(zip(cases["index"].tolist(), cases["column"].astype(str).tolist(), strict=True))
        fresh = [(i, c) not in told for i, c in zip(beyond["index"], beyond["column"], strict=True)]
        unparsed = pd.concat([unparsed, beyond[fresh]], ignore_index=True)
    cases = pd.concat([cases, unparsed], ignore_index=True) if not unparsed.empty else cases

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


def _ragged(
    frame: pd.DataFrame,
    good: pd.DataFrame,
    failures: list[dict[str, Any]],
    ragged: dict[int, tuple[str, str]],
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """A record with the wrong number of fields fails as a whole: its values may be shifted or cut, so its other
    failures give way to the field count (the value is the whole record), and it never loads."""
    rows = frame[ROW].to_numpy()
    hit = np.flatnonzero(np.isin(rows, np.fromiter(ragged, dtype=rows.dtype, count=len(ragged))))
    positions = {int(p): int(rows[p]) for p in hit}
    kept = [f for f in failures if f["position"] not in positions]
    for position, row in positions.items():
        check, text = ragged[row]
        kept.append({"row": row, "column": "*", "check": check, "value": text, "position": position})
    kept.sort(key=lambda f: (f["row"], f["column"]))
    return good[~good[ROW].isin(list(positions.values()))], kept


REPEATED = "unique: the key occurs more than once in the file"
UNIQUE = "field_uniqueness"  # pandera's name for the same rule within one chunk


def _repeated(
    frame: pd.DataFrame,
    good: pd.DataFrame,
    failures: list[dict[str, Any]],
    dataset: Dataset,
    repeated: pd.MultiIndex,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Every record whose key occurs more than once in the file fails, wherever the chunks fall: which of
    them is right is unknown, so none loads (one failure per record, under one check name)."""
    keys = list(dataset.keys)
    kept = [f for f in failures if f["check"] != UNIQUE]
    if len(repeated):
        hit = np.flatnonzero(pd.MultiIndex.from_frame(frame[keys]).isin(repeated))
        source = dataset.source_column(keys[0])
        for position in hit:
            raw_key = RAW_PREFIX + source
            value = frame[raw_key].iat[position] if raw_key in frame else frame[keys[0]].iat[position]
            kept.append(
                {
                    "row": int(frame[ROW].iat[position]),
                    "column": source,
                    "check": REPEATED,
                    "value": None if pd.isna(value) else str(value),
                    "position": int(position),
                }
            )
        rows = frame[ROW].to_numpy()[hit]
        good = good[~good[ROW].isin(rows)]
    kept.sort(key=lambda f: (f["row"], f["column"]))
    return good, kept


#: How much of a failed value a quarantine file's ``reason`` quotes.
REASON_VALUE_CHARS = 1_000


def _quarantine_frame(frame: pd.DataFrame, failures: list[dict[str, Any]], dataset: Dataset) -> pd.DataFrame:
    """One row per failed check: where, which check, the value, why, and the raw row beside it (column-wise: a
    row at a time took 108 s for 1.5 million failures)."""
    out = pd.DataFrame(
        {
            "row": [f["row"] for f in failures],
            "column": [f["column"] for f in failures],
            "check": [f["check"] for f in failures],
            "value": [f["value"] for f in failures],
            # The reason quotes at most REASON_VALUE_CHARS of the value: the ``value`` column and the raw row beside
            # it hold it whole (a 1 MB field was written three times: 1.8 GB of quarantine for a 600 MB file).
            "reason": [failed_check(f, REASON_VALUE_CHARS) for f in failures],
        }
    )
    positions = np.fromiter((f["position"] for f in failures), dtype=np.int64, count=len(failures))
    for column in dataset.source_columns:
        out[column] = list(frame[RAW_PREFIX + column].to_numpy(dtype=object)[positions])
    return out[[*QUARANTINE_COLUMNS, *dataset.source_columns]]


def quarantine_location(quarantine_zone: str, dataset: Dataset, source: str, ingestion_id: uuid.UUID) -> str:
    """Where a run's quarantined rows (and a bad file) go: dataset/date/source-name.ingestion."""
    today = datetime.now(UTC)
    # a long S3 key's base name: the zone's key, or a file name, must stay short
    name = storage.fitted(storage.basename(source), 120)
    return storage.join(quarantine_zone, dataset.name, f"{today:%Y/%m/%d}", f"{name}.{ingestion_id.hex[:12]}")


@dataclass
class StageSeconds:
    """Busy seconds of each stage of one pass (the stages overlap in wall time)."""

    read: float = 0.0
    transform: float = 0.0
    validate: float = 0.0


@dataclass
class FilePass:
    """One streaming pass over a landed file: read → transform → validate, chunk by chunk, as a generator of
    valid frames that the load COPYs as they come (``frames``).

    The load pulls ``frames`` from its encoder thread, so chunk k+1 is read, transformed, validated and encoded
    while PostgreSQL ingests chunk k, inside the load's one transaction. Failures of every chunk go to the
    quarantine file as they are found and are uploaded when the file is done. In hard mode, once any row has
    failed no further frame is yielded, every remaining chunk is still validated (every bad row is reported),
    and ``ValidationFailed`` is raised at the end of the file, inside the load, which rolls everything back.

    ``on_stage(name)`` is called once when ``transform``, ``validate`` and ``load`` (the first valid frame)
    begin, so the caller can record them in the ledger as they start.
    """

    path: Path
    dataset: Dataset
    source: str
    work: Path
    chunk_rows: int
    hard: bool
    quarantine_base: str
    reader: str = "arrow"
    spool: Spool | None = None  # valid rows kept for an after-load hook (Sertis zones)
    on_stage: Callable[[str], None] = lambda _stage: None
    rows_read: int = 0
    rows_valid: int = 0
    rows_invalid: int = 0
    quarantine_uri: str | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: StageSeconds = field(default_factory=StageSeconds)
    finished: bool = False

    def frames(self) -> Iterator[pd.DataFrame]:
        rejects = self.work / "quarantine.csv"
        rejects.parent.mkdir(parents=True, exist_ok=True)
        rejects.unlink(missing_ok=True)
        started: set[str] = set()

        def stage(name: str) -> None:
            if name not in started:
                started.add(name)
                self.on_stage(name)

        stage("transform")
        counts = None
        try:
            repeated = self._repeated_keys() if self.dataset.keys else None
            chunks = read_chunks(self.path, self.dataset, self.source, self.chunk_rows, self.reader)
            counts = FieldCounts(self.path, self.dataset.delimiter) if self.reader == "pandas" else None
            yield from self._frames(chunks, counts, rejects, stage, repeated)
        except OSError as exc:  # the scratch folder or the quarantine full: "[Errno 28] …" named no path
            full = no_space(exc, self.work)
            if full is None:
                raise
            raise full from exc
        finally:
            if counts is not None:
                counts.close()

    def _repeated_keys(self) -> pd.MultiIndex:
        """The dataset's keys that occur more than once in the whole file (a first, light pass: keys only).

        A chunk's model sees only its own rows: a key repeated across a chunk boundary would pass and the
        upsert would silently keep the file's last row. Scanning first makes the rule the same for any chunking.
        A file of more than one chunk has its keys spilled to local disk in buckets by hash (equal keys share a
        bucket), about a chunk's worth each, then each bucket is searched on its own: memory is one bucket, not
        every key of the file.
        """
        keys = list(self.dataset.keys)
        buckets = min(KEY_BUCKETS_MAX, max(1, -(-estimate_rows(self.path) // self.chunk_rows)))
        folder = self.work / "keys"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        writers: dict[int, ipc.RecordBatchStreamWriter] = {}
        dtypes: pd.Series | None = None
        schema: pa_arrow.Schema | None = None
        try:
            for raw in read_chunks(self.path, self.dataset, self.source, self.chunk_rows, self.reader):
                frame = self.dataset.transform(raw)[keys].dropna().reset_index(drop=True)
                if frame.empty:
                    continue
                dtypes = frame.dtypes if dtypes is None else dtypes
                bucket = pd.util.hash_pandas_object(frame, index=False).to_numpy() % buckets
                table = pa_arrow.Table.from_pandas(frame, preserve_index=False)
                schema = table.schema if schema is None else schema  # every chunk's keys as the first's
                table = table.cast(schema)
                for number in np.unique(bucket).tolist():
                    writer = writers.get(number)
                    if writer is None:
                        writer = writers[number] = ipc.new_stream(str(folder / f"{number}.arrow"), schema)
                    writer.write_table(table.filter(pa_arrow.array(bucket == number)))
        finally:
            for writer in writers.values():
                writer.close()
        found: list[pd.DataFrame] = []
        for number in sorted(writers):
            with ipc.open_stream(str(folder / f"{number}.arrow")) as reader:
                every = reader.read_all().to_pandas()
            found.append(every[every.duplicated(keep=False)].drop_duplicates())
        shutil.rmtree(folder, ignore_errors=True)
        if dtypes is None:
            return pd.MultiIndex.from_arrays([[] for _ in keys], names=keys)
        return pd.MultiIndex.from_frame(pd.concat(found, ignore_index=True).astype(dtypes.to_dict()))

    def _frames(
        self,
        chunks: Iterator[pd.DataFrame],
        counts: FieldCounts | None,
        rejects: Path,
        stage: Callable[[str], None],
        repeated: pd.MultiIndex | None = None,
    ) -> Iterator[pd.DataFrame]:
        while True:
            clock = time.perf_counter()
            raw = next(chunks, None)
            if raw is None:
                break
            now = time.perf_counter()
            self.seconds.read += now - clock
            clock = now
            combined = self.dataset.transform(raw).assign(**{ROW: raw.index.to_numpy()})
            combined.index = pd.RangeIndex(len(combined))  # validate_chunk reads failures by position
            for column in self.dataset.source_columns:
                combined[RAW_PREFIX + column] = raw[column].array  # Arrow strings stay Arrow (no object copy)
            self.rows_read += len(raw)
            _rows_read.tell(self.source, self.rows_read)
            now = time.perf_counter()
            self.seconds.transform += now - clock
            clock = now
            stage("validate")
            good, failures = validate_chunk(combined, self.dataset)
            if counts is not None and len(raw):
                ragged = counts.upto(int(raw.index[-1]))
                if ragged:
                    good, failures = _ragged(combined, good, failures, ragged)
            if repeated is not None:
                good, failures = _repeated(combined, good, failures, self.dataset, repeated)
            if failures:
                self.rows_invalid += len({f["position"] for f in failures})
                _quarantine_frame(combined, failures, self.dataset).to_csv(
                    rejects, mode="a", index=False, header=not rejects.exists()
                )
                self.failures.extend(
                    {k: v for k, v in f.items() if k != "position"}
                    for f in failures[: PREVIEW_LIMIT - len(self.failures)]
                )
            self.rows_valid += len(good)
            self.seconds.validate += time.perf_counter() - clock
            if self.hard and self.rows_invalid:
                continue  # nothing will load: keep validating, to report every bad row
            if self.spool is not None:
                self.spool.write(good)
            if len(good):
                stage("load")
                yield good
        if self.rows_read == 0:
            raise BadFile(f"{self.source}: header only, no data rows")
        if self.dataset.load_mode == "replace" and self.rows_valid == 0 and not self.hard:
            # The file would replace the whole table with nothing: every earlier row gone, none of its own loaded.
            self.quarantine_uri = storage.put_file(rejects, f"{self.quarantine_base}.rows.csv")
            self.finished = True
            raise ValidationFailed(
                f"{self.source}: all {counted(self.rows_invalid, 'row')} failed checks; {self.dataset.name} replaces its whole "
                f"table with each file, so nothing was loaded and the table keeps its rows; all failures in "
                f"{self.quarantine_uri}",
                rows_invalid=self.rows_invalid,
                quarantine_uri=self.quarantine_uri,
            )
        if self.rows_invalid:
            self.quarantine_uri = storage.put_file(rejects, f"{self.quarantine_base}.rows.csv")
        self.finished = True
        if self.hard and self.rows_invalid:
            first = "; ".join(failed_check(f) for f in self.failures[:3])
            raise ValidationFailed(
                f"{self.source}: {counted(self.rows_invalid, 'row')} failed checks (hard mode, nothing loaded): "
                f"{first}"
                f"{' ...' if self.rows_invalid > 3 else ''}; all failures in {self.quarantine_uri}",
                rows_invalid=self.rows_invalid,
                quarantine_uri=self.quarantine_uri,
                failures=list(self.failures),
            )


def rows_per_chunk(path: Path, chunk_rows: int) -> int:
    """``chunk_rows``, or fewer when the file's first MB says its rows are wide: a chunk holds about
    ``CHUNK_BYTES`` of text at most. A file of 1 MB fields read 200,000 rows at a time was one chunk (a 600 MB
    file held 6.5 GB); pandas' reader, which takes such rows, counts chunks in rows only."""
    sample = _sample(path)
    if not sample:
        return chunk_rows
    width = len(sample) / max(1, sample.count(b"\n"))
    return max(1, min(chunk_rows, int(CHUNK_BYTES // width)))


def _sample(path: Path) -> bytes:
    """The file's first MB of text (b"" if it cannot be read: the pass itself reports what is wrong)."""
    try:
        if _is_gzip(path):
            with gzip.open(path, "rb") as handle:
                return handle.read(1 << 20)
        with path.open("rb") as handle:
            return handle.read(1 << 20)
    except (OSError, EOFError, zlib.error):
        return b""


def estimate_rows(path: Path) -> int:
    """Roughly how many records the file holds (from its size and its first MB); decides the bulk-load path
    before the first row is read, so only speed depends on it. 0 for anything it cannot read (the pass itself
    reports what is wrong with the file)."""
    sample = _sample(path)
    try:
        size = path.stat().st_size
        if _is_gzip(path):
            with path.open("rb") as handle:
                handle.seek(-4, 2)
                size = max(
                    size, int.from_bytes(handle.read(4), "little")
                )  # ISIZE: uncompressed size mod 2**32
    except OSError:
        return 0
    lines = sample.count(b"\n")
    return int(size * lines / len(sample)) if lines else 0


def quarantine_file(path: Path, base: str, error: str) -> str:
    """Copy a file that could not be read into quarantine, with the reason beside it."""
    uri = storage.put_file(path, f"{base}.file")
    storage.put_bytes(json.dumps({"error": error}, indent=2).encode(), f"{base}.error.json")
    return uri
