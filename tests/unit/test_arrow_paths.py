"""The Arrow fast paths give exactly what the pandas paths give (or step aside): reader and number parsing."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice import ingest
from sluice.datasets import get_dataset
from sluice.transforms.tm import _number

HEADER = "user,timestamp,hours,project\n"


def both(path: Path, chunk_rows: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    dataset = get_dataset("dailycheckins")
    frames = {
        reader: pd.concat(list(ingest.read_chunks(path, dataset, path.name, chunk_rows, reader=reader)))
        for reader in ("arrow", "pandas")
    }
    return frames["arrow"], frames["pandas"]


@pytest.mark.parametrize(
    "text",
    [
        HEADER + "ned,2018-12-20 00:00:00 UTC,1.5,bizdev\n" * 10,
        "\ufeff" + HEADER.replace("\n", "\r\n") + '"o\'brien, jr",x,1.5,"multi\r\nline, ""quoted"""\r\n',
        HEADER + "зоя,26 сентября 2019 00:00,,\n,,,\n  spaced  , x , 1 , p \n",
        HEADER + "a,b,c,d\n\nе,f,g,h\n",  # a blank line is no record for either reader
        "project,hours,timestamp,user\np,1,t,u\n",  # columns in another order
    ],
)
def test_arrow_reader_reads_what_pandas_reads(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dailycheckins.csv"
    path.write_bytes(text.encode())
    arrow, pandas_ = both(path)
    pd.testing.assert_frame_equal(arrow, pandas_)
    assert list(arrow.index) == list(range(1, len(arrow) + 1))


def test_arrow_reader_reads_gzip_in_many_chunks(tmp_path: Path) -> None:
    path = tmp_path / "dailycheckins.csv.gz"
    body = "".join(f"u{i},2019-01-01 00:00:00 UTC,{i % 24},p\n" for i in range(5000))
    path.write_bytes(gzip.compress((HEADER + body).encode()))
    arrow, pandas_ = both(path, chunk_rows=700)
    pd.testing.assert_frame_equal(arrow, pandas_)
    assert len(arrow) == 5000


@pytest.mark.parametrize(
    "text",
    [
        HEADER + "ned,2018-12-20 00:00:00 UTC,1.5\n",  # a short row: pandas fills it, Arrow refuses
        HEADER + "ned,t,1,p\n" * 20_000 + "zoë,t,1,p\n",  # not UTF-8 (written as latin-1), past the header
        HEADER + '"unterminated,t,1,p\n',
    ],
)
def test_arrow_reader_steps_aside_for_what_only_pandas_decides(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dailycheckins.csv"
    path.write_bytes(text.encode("latin-1") if "zoë" in text else text.encode())
    with pytest.raises(ingest.ArrowReaderGaveUp):
        list(ingest.read_chunks(path, get_dataset("dailycheckins"), path.name, 100, reader="arrow"))


def test_a_row_wider_than_arrows_block_steps_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "ARROW_BLOCK_BYTES", 1024)
    path = tmp_path / "dailycheckins.csv"
    path.write_text(HEADER + "x" * 5000 + ",t,1,p\n")
    with pytest.raises(ingest.ArrowReaderGaveUp):
        list(ingest.read_chunks(path, get_dataset("dailycheckins"), path.name, 100, reader="arrow"))


def reference(values: list[str]) -> np.ndarray:
    series = pd.Series(values, dtype=object)
    numbers = pd.to_numeric(series, errors="coerce").astype("float64")
    retry = numbers.isna() & (series.str.strip() != "")
    numbers[retry] = pd.to_numeric(series[retry].str.strip(), errors="coerce")
    return numbers.to_numpy()


NUMBERS = ["1.5", "2", "0.08", "24", "1e1", "+1.5", "-0", ".5", "5.", "1.005", "3.141592653589793238"]


@pytest.mark.parametrize(
    "values",
    [NUMBERS, [*NUMBERS, ""], [*NUMBERS, " 2 "], [*NUMBERS, "nan"], [*NUMBERS, "inf"], ["abc", "1"], ["1,5"]],
)
def test_number_fast_path_equals_to_numeric(values: list[str]) -> None:
    got = _number(pd.Series(values, dtype="str")).to_numpy()
    np.testing.assert_array_equal(got, reference(values))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=False).map(repr), st.text(max_size=6)), min_size=1))
def test_number_fast_path_equals_to_numeric_on_anything(values: list[str]) -> None:
    got = _number(pd.Series(values, dtype="str")).to_numpy()
    np.testing.assert_array_equal(got, reference(values))


@pytest.mark.parametrize("packed", [False, True])
def test_a_byte_that_is_not_utf8_is_named_by_its_line_and_byte(tmp_path: Path, packed: bool) -> None:
    """The header read said "byte 31 of the header" for a byte of record 1, and the pass "near record 600001" (its
    chunk's first record) for one in record 700,001: now the line and byte of the file (of a .gz's text), past
    a block boundary and past multi-byte characters cut by one (``é`` is two bytes)."""
    # the first record's 600,000 é (two bytes each, from byte 29) put the 1 MiB block's end inside one
    body = "é" * 600_000 + ",t,1,p\n" + "é,t,1,p\n" * 199_999
    text = (HEADER + body).encode() + "zoë,t,1,p\n".encode("latin-1")
    path = tmp_path / ("dailycheckins.csv.gz" if packed else "dailycheckins.csv")
    path.write_bytes(gzip.compress(text) if packed else text)
    at = text.index(b"zo\xeb") + 2
    expected = (
        f"x: not UTF-8 text: line 200,002 has byte 0xeb (byte {at + 1:,} of the file); save it as UTF-8"
    )
    assert str(ingest.not_utf8(path, "x")) == expected
    with pytest.raises(ingest.BadFile) as failed:
        list(ingest.read_chunks(path, get_dataset("dailycheckins"), "x", 50_000, reader="pandas"))
    assert str(failed.value) == expected
    first = tmp_path / "first.csv"
    first.write_bytes(HEADER.encode() + "zoë,t,1,p\n".encode("latin-1"))  # record 1, not the header
    with pytest.raises(ingest.BadFile, match=r"line 2 has byte 0xeb \(byte 32 of the file\)"):
        ingest.read_header(first, get_dataset("dailycheckins"), "first.csv")


@pytest.mark.parametrize("reader", ["arrow", "pandas"])
def test_wide_rows_come_in_chunks_of_bounded_bytes_not_only_bounded_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """Rows of 1 MB fields read ``SLUICE_CHUNK_ROWS`` (200,000) at a time made one chunk of a whole 600 MB file:
    6.5 GB resident. A chunk now holds about ``CHUNK_BYTES`` of text (1 MB here, rows of 100 KB)."""
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 1 << 20)
    path = tmp_path / "dailycheckins.csv"
    path.write_text(HEADER + "".join(f"u{i},2019-01-01 00:00:00 UTC,1,{'p' * 100_000}\n" for i in range(60)))
    dataset = get_dataset("dailycheckins")
    chunks = list(ingest.read_chunks(path, dataset, path.name, 200_000, reader=reader))
    assert sum(len(c) for c in chunks) == 60
    assert max(len(c) for c in chunks) <= 11, [len(c) for c in chunks]
    assert list(pd.concat(chunks).index) == list(range(1, 61))
    assert list(pd.concat(chunks)["user"]) == [f"u{i}" for i in range(60)]
