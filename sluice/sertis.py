"""Sertis zones: bronze (the landed file as it came), silver (typed Parquet), gold (per-customer Parquet + table),
partitioned by ingestion date under ``<staging zone>/sertis/``, and their AWS Glue catalog entries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from sluice import progress, tables
from sluice.adapters import scratch, storage
from sluice.adapters.warehouse import copy_frames
from sluice.ingest import Spool
from sluice.registry import AfterLoad
from sluice.settings import Settings, get_settings
from sluice.tables.sertis import customers as customers
from sluice.tables.sertis import transactions

logger = logging.getLogger(__name__)


SILVER_COLUMNS = [
    ("transaction_id", "string"),
    ("customer_id", "string"),
    ("transaction_date", "date"),
    ("product_sold", "string"),
    ("units_sold", "bigint"),
]
GOLD_COLUMNS = [("customer_id", "string"), ("favourite_product", "string"), ("longest_streak", "int")]


def zone(settings: Settings, layer: str) -> str:
    return storage.join(settings.zone("staging"), "sertis", layer)


def partition(day: dt.date) -> str:
    return f"ingestion_date={day:%Y-%m-%d}"


def publish_file(event: AfterLoad) -> None:
    """After a transactions file loads: bronze copy as it came, silver Parquet of its validated rows, catalog."""
    settings = get_settings()
    day = dt.datetime.now(dt.UTC).date()
    # A 255-byte file name fits a landing folder (and S3 takes 1,024 bytes), not one with a run id added
    name = storage.fitted(storage.basename(event.source), 160)
    storage.put_file(event.local_path, bronze_uri(settings, day, name, event))
    uri = storage.join(
        zone(settings, "silver"), partition(day), f"{name}.{event.ingestion_id.hex[:12]}.parquet"
    )
    # One row group per spooled chunk, written to local disk and uploaded: memory is one chunk, not the file.
    with scratch.owned(settings.work_dir / f"silver-{event.ingestion_id.hex}") as folder:
        local = folder / "silver.parquet"
        write_parquet(event.frames(), SILVER_COLUMNS, local)
        storage.put_file(local, uri)
    if settings.glue_database:
        catalog_silver(settings, day)


def bronze_uri(settings: Settings, day: dt.date, name: str, event: AfterLoad) -> str:
    """Where the file goes in bronze: its own name, unless another file of that name (a corrected one landed again)
    is already there that day; then the run's id goes before the extension, so bronze keeps both as they came."""
    uri = storage.join(zone(settings, "bronze"), partition(day), name)
    if not storage.exists(uri) or storage.same_content(uri, event.local_path):
        return uri  # free, or this very file (a retried publish, or a forced reload of the same content)
    stem, dot, extension = name.partition(".")
    return storage.join(
        zone(settings, "bronze"), partition(day), f"{stem}.{event.ingestion_id.hex[:12]}{dot}{extension}"
    )


def _schema(columns: list[tuple[str, str]]) -> pa.Schema:
    types = {"string": pa.string(), "date": pa.date32(), "bigint": pa.int64(), "int": pa.int32()}
    return pa.schema([(c, types[t]) for c, t in columns])


def write_parquet(frames: Iterable[pd.DataFrame], columns: list[tuple[str, str]], path: Path) -> int:
    """``frames`` (their ``columns``; others, such as ``_source_row``, left out) as one Parquet file at ``path``,
    one row group per frame; returns the rows written. No frame: a file of the schema and no rows."""
    schema = _schema(columns)
    rows = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        for frame in frames:
            if len(frame):
                names = [c for c, _ in columns]
                writer.write_table(pa.Table.from_pandas(frame[names], schema=schema, preserve_index=False))
                rows += len(frame)
    return rows


def parquet(frame: pd.DataFrame, columns: list[tuple[str, str]]) -> bytes:
    schema = _schema(columns)
    table = pa.Table.from_pandas(frame[[c for c, _ in columns]], schema=schema, preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


# --- gold -----------------------------------------------------------------------------------------------


# A transaction (``transactionId``) counts as its latest delivery has it: when a later file (a corrected file
# landed again, or one repeating lines already sent) carries a transaction, that file's lines replace the earlier
# ones instead of adding to them. Within one file every line counts as the file says.
_LATEST_DELIVERY = """
    SELECT customer_id, transaction_date, product_sold, units_sold, latest, repeated
    FROM (
        SELECT customer_id, transaction_date, product_sold, units_sold,
               rank() OVER (PARTITION BY transaction_id ORDER BY _loaded_at DESC, _ingestion_id DESC) = 1 AS latest,
               row_number() OVER (
                   PARTITION BY _ingestion_id, transaction_id, customer_id, transaction_date, product_sold, units_sold
                   ORDER BY _source_row
               ) > 1 AS repeated
        FROM sertis.transactions
    ) delivered
"""


@dataclass
class Silver:
    """What gold is built from: each transaction's lines from its latest delivery, spooled to local disk in parts
    that each hold whole customers (``frames``), and how many earlier lines that set aside."""

    spool: Spool
    superseded: int = 0
    repeated: int = 0  # counted lines that repeat an earlier line of their file exactly

    @property
    def lines(self) -> int:
        return self.spool.rows

    def frames(self) -> Iterator[pd.DataFrame]:
        """The spooled parts in customer order, one at a time; no part at all when silver is empty."""
        for frame in self.spool.frames():
            frame["units_sold"] = frame["units_sold"].astype("int64")
            yield frame


def read_silver(engine: sa.Engine, folder: Path, chunk_rows: int) -> Silver:
    """All of silver from ``sertis.transactions`` (the exactly-once copy), each transaction as delivered last,
    streamed from a server-side cursor ``chunk_rows`` at a time in customer order and spooled to ``folder``: a
    customer is never split across two parts, so gold is built part by part (memory: one chunk plus the
    largest customer, not the table)."""
    silver = Silver(Spool(folder))
    columns = ["customer_id", "transaction_date", "product_sold", "units_sold", "latest", "repeated"]
    carry = pd.DataFrame(columns=columns[:4])
    read = 0
    with engine.connect() as conn:
        if not tables.exists(conn, transactions):
            return silver
        progress.tell("extract silver: sorting the transactions by customer")
        result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(
            sa.text(_LATEST_DELIVERY + " ORDER BY customer_id")
        )
        while rows := result.fetchmany(chunk_rows):
            read += len(rows)
            progress.tell(f"extract silver: {read:,} lines read")
            frame = pd.DataFrame(rows, columns=columns)
            latest = frame.pop("latest").astype(bool)
            repeated = frame.pop("repeated").astype(bool)
            silver.superseded += int((~latest).sum())
            silver.repeated += int((latest & repeated).sum())
            lines = pd.concat([carry, frame[latest]], ignore_index=True) if len(carry) else frame[latest]
            if lines.empty:
                continue
            # the last customer of the chunk may go on in the next one: keep it back
            last = lines["customer_id"].iat[-1]
            whole = (lines["customer_id"] != last).to_numpy()
            if whole.any():
                silver.spool.write(lines[whole].reset_index(drop=True))
            carry = lines[~whole].reset_index(drop=True)
    if len(carry):
        silver.spool.write(carry)
    return silver


def ensure_gold(engine: sa.Engine) -> None:
    """Create ``sertis.customers`` if it does not exist."""
    tables.ensure(engine, customers)


def load_gold(engine: sa.Engine, gold: pd.DataFrame) -> int:
    """Replace ``sertis.customers`` in one transaction (the table exists: ``ensure_gold`` ran first)."""
    with engine.begin() as conn:
        conn.execute(sa.text("LOCK TABLE sertis.customers IN EXCLUSIVE MODE"))
        conn.execute(sa.delete(customers))
        return copy_frames(conn, "sertis.customers", [c for c, _ in GOLD_COLUMNS], [gold])


def publish_gold(gold: pd.DataFrame, settings: Settings) -> str:
    """The gold Parquet (replaced) and, when configured, its Glue catalog entry; returns the Parquet's URI."""
    uri = storage.join(zone(settings, "gold"), "customers.parquet")
    storage.put_bytes(parquet(gold, GOLD_COLUMNS), uri)
    if settings.glue_database:
        catalog_gold(settings)
    return uri


# --- AWS Glue Data Catalog ------------------------------------------------------------------------------


def glue_client() -> Any:
    import boto3  # AWS modules only when the Glue catalog is configured

    endpoint = os.environ.get("AWS_ENDPOINT_URL_GLUE") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("glue", endpoint_url=endpoint) if endpoint else boto3.client("glue")


def _s3a(uri: str) -> str:
    return uri if uri.endswith("/") else uri + "/"


def _table_input(
    name: str, location: str, columns: list[tuple[str, str]], partitioned: bool
) -> dict[str, Any]:
    return {
        "Name": name,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
        "PartitionKeys": [{"Name": "ingestion_date", "Type": "string"}] if partitioned else [],
        "StorageDescriptor": {
            "Columns": [{"Name": c, "Type": t} for c, t in columns],
            "Location": _s3a(location),
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
            },
        },
    }


def _ensure_table(glue: Any, database: str, table: dict[str, Any]) -> None:
    with contextlib.suppress(glue.exceptions.AlreadyExistsException):
        glue.create_database(
            DatabaseInput={"Name": database, "Description": "Sluice: Sertis silver and gold"}
        )
    try:
        glue.create_table(DatabaseName=database, TableInput=table)
    except glue.exceptions.AlreadyExistsException:
        glue.update_table(DatabaseName=database, TableInput=table)


def catalog_silver(settings: Settings, day: dt.date) -> None:
    if not storage.is_s3(settings.zone("staging")):
        logger.warning("Glue catalog skipped: the staging zone is not on S3")
        return
    glue = glue_client()
    database = str(settings.glue_database)
    location = zone(settings, "silver")
    table = _table_input("silver_transactions", location, SILVER_COLUMNS, partitioned=True)
    _ensure_table(glue, database, table)
    descriptor = {**table["StorageDescriptor"], "Location": _s3a(storage.join(location, partition(day)))}
    with contextlib.suppress(glue.exceptions.AlreadyExistsException):
        glue.create_partition(
            DatabaseName=database,
            TableName="silver_transactions",
            PartitionInput={"Values": [f"{day:%Y-%m-%d}"], "StorageDescriptor": descriptor},
        )


def catalog_gold(settings: Settings) -> None:
    if not storage.is_s3(settings.zone("staging")):
        logger.warning("Glue catalog skipped: the staging zone is not on S3")
        return
    glue = glue_client()
    _ensure_table(
        glue,
        str(settings.glue_database),
        _table_input("gold_customers", zone(settings, "gold"), GOLD_COLUMNS, False),
    )
