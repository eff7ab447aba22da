"""The upsert datasets' key pass (keys repeated anywhere in the file) spills keys to disk in buckets by hash when
the file is more than one chunk: the same keys found as by one pass in memory, wherever the repeats fall."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.datasets import get_dataset
from sluice.ingest import FilePass

HEADER = "order_id,customer_id,order_date,product_id,unit_price,quantity,total_price\n"


def repeated(path: Path, work: Path, chunk_rows: int, reader: str = "arrow") -> set[int]:
    passed = FilePass(
        path=path,
        dataset=get_dataset("orders"),
        source=str(path),
        work=work,
        chunk_rows=chunk_rows,
        hard=False,
        quarantine_base=str(work / "q"),
        reader=reader,
    )
    found = passed._repeated_keys()
    assert not (work / "keys").exists()  # the spilled buckets are gone
    return {int(key[0]) for key in found}


@pytest.mark.parametrize("reader", ["arrow", "pandas"])
def test_keys_repeated_across_chunks_and_buckets_are_found(tmp_path: Path, reader: str) -> None:
    ids = list(range(1, 5001))
    ids[4999] = 1  # the first key again, in the last chunk
    ids[2600] = ids[2400] = 2500  # one key three times, in three chunks
    ids[300] = 299  # neighbours in one chunk
    lines = [f"{i},5,2022-07-13,24,1,1,1" for i in ids]
    lines.insert(100, "notanumber,5,2022-07-13,24,1,1,1")  # a key that does not parse is no key
    lines.insert(200, "notanumber,5,2022-07-13,24,1,1,1")
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n")
    want = {1, 2500, 299}
    for chunk_rows in (137, 1_000_000):  # 37 buckets, and the whole file in one chunk
        assert repeated(path, tmp_path / f"work-{chunk_rows}", chunk_rows, reader) == want, chunk_rows
    assert repeated(path, tmp_path / "again", 500) == want
