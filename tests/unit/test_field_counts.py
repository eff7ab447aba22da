"""The pandas pass finds records whose field count is not the header's (``ingest.FieldCounts``), numbered exactly as
pandas numbers the records it reads: blank and whitespace-only lines, CRLF, quoted newlines and delimiters, gzip,
another delimiter."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from sluice import ingest
from sluice.datasets import get_dataset

HEADER = "user,timestamp,hours,project\n"


def scan(path: Path, delimiter: str = ",", width: int = 4, step: int = 2) -> dict[int, str]:
    counts = ingest.FieldCounts(path, delimiter)
    assert counts.width == width
    found: dict[int, str] = {}
    try:
        for last in range(step, 100, step):  # in steps, as the pass calls it chunk by chunk
            found.update({row: check for row, (check, _text) in counts.upto(last).items()})
    finally:
        counts.close()
    return found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEADER + "a,t,1,p\nb,t,1,p,x\nc,t,1\nd,t,1,p\n", {2: 5, 3: 3}),
        (HEADER + "a,t,1,p\n\n   \nb,t,1\n", {2: 3}),  # blank and whitespace-only lines are no records
        (HEADER.replace("\n", "\r\n") + "a,t,1,p\r\n\r\nb,t,1,p,x\r\n", {2: 5}),
        (HEADER + 'a,t,1,"two\nlines, one field"\nb,t,1\n', {2: 3}),  # a quoted newline and delimiter
        (HEADER + "a,t,1,p,\nb,t,1,p,,\nc,t,1,p, \n", {3: 5}),  # empty extra fields lose nothing
        ("\ufeff" + HEADER + "a,t,1,p\nb\n", {2: 1}),
    ],
)
def test_records_with_the_wrong_field_count_are_numbered_as_pandas_numbers_them(
    tmp_path: Path, text: str, expected: dict[int, int]
) -> None:
    path = tmp_path / "dailycheckins.csv"
    path.write_text(text, encoding="utf-8")
    found = scan(path)
    assert found == {row: f"field count: {n} fields, the header has 4" for row, n in expected.items()}
    # pandas' records (what the pass loads) carry the same numbers: record 2's user is the second record's
    frame = pd.concat(
        list(ingest.read_chunks(path, get_dataset("dailycheckins"), path.name, 2, reader="pandas"))
    )
    users = [line.split(",")[0] for line in text.lstrip("\ufeff").splitlines()[1:] if line.strip()]
    users = [u for u in users if u in {"a", "b", "c", "d"}]
    assert frame["user"].tolist()[: len(users)] == users
    assert list(frame.index) == list(range(1, len(frame) + 1))


def test_gzip_and_another_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "transactions.csv.gz"
    path.write_bytes(gzip.compress(b"a|b|c\n1|2|3\n4|5|6|7\n8|9\n"))
    assert scan(path, delimiter="|", width=3) == {
        2: "field count: 4 fields, the header has 3",
        3: "field count: 2 fields, the header has 3",
    }


def test_the_scan_stops_at_the_chunk_it_was_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "dailycheckins.csv"
    path.write_text(HEADER + "a,t,1,p\n" * 3 + "b,t,1\n" + "c,t,1,p\n", encoding="utf-8")
    counts = ingest.FieldCounts(path, ",")
    try:
        assert counts.upto(3) == {}
        assert counts.record == 3
        assert counts.upto(5) == {4: ("field count: 3 fields, the header has 4", "b,t,1")}
    finally:
        counts.close()


@pytest.mark.parametrize("blank", ['""', '" "', "''"])
def test_a_line_of_one_quoted_empty_value_is_a_record_as_pandas_reads_it(tmp_path: Path, blank: str) -> None:
    """pandas reads a line that is only ``""`` (or ``" "``) as a record; the scan skipped it as a blank line, so
    every later record's number was one off: the next valid record was quarantined for the field count of the one
    after it, and that one, with a field too many, loaded without it. (``''`` is no quote here: an ordinary value.)"""
    path = tmp_path / "dailycheckins.csv"
    path.write_text(HEADER + f"a,t,1,p\n{blank}\nb,t,1,p\nc,t,1,p,LOST\nd,t,1,p\n", encoding="utf-8")
    assert scan(path) == {
        2: "field count: 1 fields, the header has 4",
        4: "field count: 5 fields, the header has 4",
    }
    frame = pd.concat(
        list(ingest.read_chunks(path, get_dataset("dailycheckins"), path.name, 2, reader="pandas"))
    )
    assert (frame.loc[3, "user"], frame.loc[4, "user"], frame.loc[5, "user"]) == ("b", "c", "d")
