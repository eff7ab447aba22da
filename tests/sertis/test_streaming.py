"""Sertis in bounded memory: silver is written to Parquet chunk by chunk, gold is built from silver streamed in
parts of whole customers, and bronze's "same file?" check compares block by block; results as before."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from rich.console import Console

from sluice import sertis
from sluice.adapters import storage
from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_ingest, run_sertis
from sluice.cli.sertis import print_customers
from sluice.ledger import get_ledger, summarize
from sluice.settings import reload_settings
from tests.conftest import shared_file
from tests.sertis.test_pipeline import gold_from_lines, gold_table, latest_delivery_wins, write_lines


def drop_sertis() -> None:
    with get_engine().begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS sertis CASCADE"))


@pytest.fixture
def small_chunks(sluice_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No Sertis tables before the test, none left after it; chunks of 100 rows."""
    drop_sertis()
    monkeypatch.setenv("SLUICE_CHUNK_ROWS", "100")
    reload_settings()
    yield sluice_env
    drop_sertis()


def land(home: Path, source: Path, name: str | None = None) -> Path:
    target = home / "landing" / "sertis" / "transactions" / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


def superseded_lines(sample: Path, again: list[str]) -> int:
    ids = {line.split("|")[0] for line in again}
    with sample.open(newline="") as handle:
        return sum(1 for row in csv.DictReader(handle, delimiter="|") if row["transactionId"] in ids)


@pytest.mark.usefixtures("prefect_harness")
def test_silver_parquet_is_written_one_row_group_per_chunk(small_chunks: Path) -> None:
    sample = shared_file("sertis", "transaction_sample.csv")
    report = run_ingest(str(land(small_chunks, sample)), mode="hard")
    assert (report.status, report.rows_loaded) == ("success", 300), report.error
    (silver,) = (small_chunks / "staging" / "sertis" / "silver").rglob("*.parquet")
    parquet = pq.ParquetFile(silver)
    assert parquet.metadata.num_row_groups == 3  # 300 rows in chunks of 100: never the whole file at once
    table = parquet.read()
    assert table.column_names == [c for c, _ in sertis.SILVER_COLUMNS]
    with sample.open(newline="") as handle:
        lines = list(csv.DictReader(handle, delimiter="|"))
    assert table.column("transaction_id").to_pylist() == [line["transactionId"] for line in lines]
    assert table.column("units_sold").to_pylist() == [int(float(line["unitsSold"])) for line in lines]


@pytest.mark.usefixtures("prefect_harness")
def test_gold_from_silver_streamed_in_parts_of_whole_customers(
    small_chunks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks far smaller than silver: every part holds whole customers, and gold, the line counts and the notes
    are those of the rules over all of silver at once (a re-delivery and the sample's repeated lines included)."""
    sample = shared_file("sertis", "transaction_sample.csv")
    assert run_ingest(str(land(small_chunks, sample)), mode="hard").status == "success"
    with sample.open(newline="") as handle:
        again = [
            "|".join(row.values()) for row in list(csv.DictReader(handle, delimiter="|"))[:40]
        ]  # 40 lines delivered again, one of them corrected
    again[0] = again[0].rsplit("|", 1)[0] + "|999"
    redelivered = write_lines(small_chunks / "again" / "transactions_again.csv", again)
    assert run_ingest(str(land(small_chunks, redelivered)), mode="hard").status == "success"

    monkeypatch.setenv("SLUICE_CHUNK_ROWS", "7")
    settings = reload_settings()
    silver = sertis.read_silver(get_engine(), small_chunks / "probe", 7)  # not in work_dir
    parts = list(silver.frames())
    assert len(parts) > 10 and silver.lines == sum(len(p) for p in parts) == 300 - superseded_lines(
        sample, again
    ) + len(again)
    owners = [set(p["customer_id"]) for p in parts]
    assert sum(len(o) for o in owners) == len(set().union(*owners))  # no customer in two parts

    report = run_sertis()
    assert report.status == "success", report.error
    assert gold_table() == gold_from_lines(latest_delivery_wins(sample, redelivered))
    # counted here from the files: lines set aside by the re-delivery, and exact repeats within a file that count
    with sample.open(newline="") as handle:
        first = [line.rstrip("\n") for line in handle][1:]
    redelivered_ids = {line.split("|")[0] for line in again}
    kept = [line for line in first if line.split("|")[0] not in redelivered_ids]
    superseded = len(first) - len(kept)
    repeated = sum(n - 1 for n in Counter(kept).values()) + sum(n - 1 for n in Counter(again).values())
    assert superseded >= 40 and repeated > 0
    # all of silver read, as the ledger counts it (the report said the counted lines, the ledger the read ones)
    assert report.lines_counted == silver.lines == 300 - superseded + len(again)  # the lines gold counts
    assert report.rows_read == silver.lines + silver.superseded == 300 + len(again)
    [entry] = [summarize(r) for r in get_ledger().recent(5) if str(r[0].ingestion_id) == report.run_id]
    assert entry["rows_read"] == report.rows_read
    shown = io.StringIO()
    print_customers(report, Console(file=shown, width=200), limit=1)
    assert (
        f"from {report.lines_counted:,} of the {report.rows_read:,} transaction lines in silver"
        in shown.getvalue()
    )
    assert report.notes == [
        f"{repeated} transaction lines repeat an earlier line of their file exactly (transaction, customer, day, "
        "product, units): each counts, as the file has it",
        f"{superseded} transaction lines were delivered again by a later file: each transaction counts as its "
        "latest file has it",
    ]
    assert not list(settings.work_dir.glob("customers-*"))  # the run's spool is gone


def test_same_content_compares_block_by_block(tmp_path: Path, s3_bucket: str) -> None:
    mine = tmp_path / "mine.csv"
    mine.write_bytes(b"a|b\n" * 1000)
    same, other, shorter = tmp_path / "same", tmp_path / "other", tmp_path / "shorter"
    same.write_bytes(mine.read_bytes())
    other.write_bytes(b"a|b\n" * 999 + b"a|c\n")
    shorter.write_bytes(b"a|b\n" * 999)
    assert storage.same_content(str(same), mine, block=64)
    assert not storage.same_content(str(other), mine, block=64)
    assert not storage.same_content(str(shorter), mine, block=64)
    assert not storage.same_content(str(tmp_path / "absent"), mine)

    s3 = boto3.client("s3")
    for name, path in (("same", same), ("other", other), ("shorter", shorter)):
        s3.put_object(Bucket=s3_bucket, Key=f"bronze/{name}", Body=path.read_bytes())
    base = f"s3://{s3_bucket}/bronze"
    assert storage.same_content(f"{base}/same", mine, block=64)
    assert not storage.same_content(f"{base}/other", mine, block=64)
    assert not storage.same_content(f"{base}/shorter", mine, block=64)
    assert not storage.same_content(f"{base}/absent", mine)
