"""The run ledger in DynamoDB, in the item format of the systems Sluice replaces.

One item per (run, dataset): HASH ``ingestedID`` (S), RANGE ``ingestedTable`` (S, the dataset name, known
from the first state on). Top-level ``state``/``status``/counts follow the latest state; each state's full
entry is kept under ``entry_<state>`` (so ``history`` rebuilds the run) and ``stateHistory`` lists every
transition in order. Numbers are written as DynamoDB numbers; entries are JSON strings to avoid Decimals.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import uuid
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from sluice.adapters.storage import access_denied, no_credentials
from sluice.errors import ConfigurationError, clipped
from sluice.ledger_entry import LedgerEntry

logger = logging.getLogger(__name__)

_COUNTS = ("rows_read", "rows_loaded", "rows_quarantined")


class DynamoDBLedger:
    """``Ledger`` backend on a DynamoDB table (created on first use if missing, on-demand billing)."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        # boto3 honours AWS_ENDPOINT_URL (moto, LocalStack) and the usual credential chain.
        self.client = boto3.client("dynamodb")
        self._ensure_table()

    @property
    def where(self) -> str:
        """``the DynamoDB ledger table 'x' in eu-west-1``: a wrong region reads as a missing table otherwise."""
        return f"the DynamoDB ledger table {self.table_name!r} in {self.client.meta.region_name}"

    def _refused(self, exc: Exception, action: str) -> Exception:
        """``exc`` as one line naming the table, its region and the grant, when AWS refuses for good (no
        credentials, access denied); else ``exc`` itself. Was a traceback (``sluice ledger``, a backfill's skips)
        or botocore's bare line (``An error occurred (403) when calling the UpdateItem operation``)."""
        if (unsigned := no_credentials(self.where, exc, "use it")) is not None:
            return unsigned
        if isinstance(exc, ClientError) and access_denied(exc):
            return ConfigurationError(
                f"{self.where}: {_said(exc)}: these credentials need dynamodb:{action} on it (the stack's task role "
                "has DescribeTable, UpdateItem and Query; `sluice ledger` also needs Scan), or set "
                "SLUICE_LEDGER_TABLE and AWS_REGION to a table they may use"
            )
        return exc

    def _ensure_table(self) -> None:
        try:
            self.client.describe_table(TableName=self.table_name)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise self._refused(exc, "DescribeTable") from None
        except BotoCoreError as exc:
            raise self._refused(exc, "DescribeTable") from None
        try:
            self.client.create_table(
                TableName=self.table_name,
                KeySchema=[
                    {"AttributeName": "ingestedID", "KeyType": "HASH"},
                    {"AttributeName": "ingestedTable", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "ingestedID", "AttributeType": "S"},
                    {"AttributeName": "ingestedTable", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if access_denied(exc):
                raise ConfigurationError(
                    f"{self.where} does not exist, and these credentials may not create it ({_said(exc)}): set "
                    "SLUICE_LEDGER_TABLE to the stack's table (output LedgerTableName) and AWS_REGION to the "
                    "stack's region, or create it (HASH ingestedID, RANGE ingestedTable, both strings)"
                ) from None
            # Another process created it between our describe and create.
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        self.client.get_waiter("table_exists").wait(TableName=self.table_name)
        # Said, not silent: in the wrong region (or account) this is a second ledger beside the stack's.
        logger.warning("created %s: it did not exist", self.where)

    def record(self, entry: LedgerEntry) -> None:
        if entry.error:  # an item holds at most 400 KB, and keeps every state's entry
            entry = dataclasses.replace(entry, error=clipped(entry.error))
        now = (entry.finished_at or entry.started_at).isoformat()
        names = {"#state": "state", "#status": "status", "#entry": f"entry_{entry.state}"}
        values: dict[str, Any] = {
            ":state": {"S": entry.state},
            ":status": {"S": entry.status},
            ":entry": {"S": json.dumps(entry.as_dict())},
            ":dataset": {"S": entry.dataset},
            ":source": {"S": entry.source},
            ":updated": {"S": now},
            ":started": {"S": entry.started_at.isoformat()},
            ":history": {
                "L": [
                    {
                        "M": {
                            "state": {"S": entry.state},
                            "status": {"S": entry.status},
                            "at": {"S": now},
                        }
                    }
                ]
            },
            ":empty": {"L": []},
        }
        sets = [
            "#state = :state",
            "#status = :status",
            "#entry = :entry",
            "dataset = :dataset",
            "#source = :source",
            "updatedAt = :updated",
            "startedAt = if_not_exists(startedAt, :started)",
            "stateHistory = list_append(if_not_exists(stateHistory, :empty), :history)",
        ]
        names["#source"] = "source"
        for attr in (*_COUNTS, "target", "error", "flow_run_id", "quarantine_uri"):
            value = getattr(entry, attr)
            if value is None:
                continue
            key = _camel(attr)
            names[f"#{key}"] = key
            values[f":{key}"] = {"N": str(value)} if attr in _COUNTS else {"S": str(value)}
            sets.append(f"#{key} = :{key}")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"ingestedID": {"S": str(entry.ingestion_id)}, "ingestedTable": {"S": entry.dataset}},
                UpdateExpression="SET " + ", ".join(sets),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._refused(exc, "UpdateItem") from None

    def history(self, ingestion_id: uuid.UUID) -> list[LedgerEntry]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "ingestedID = :id",
            "ExpressionAttributeValues": {":id": {"S": str(ingestion_id)}},
            "ConsistentRead": True,
        }
        while True:
            try:
                page = self.client.query(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise self._refused(exc, "Query") from None
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        entries = [e for item in items for e in _entries(item)]
        return sorted(entries, key=lambda e: (e.seq, e.started_at))

    def recent(self, limit: int = 20) -> list[list[LedgerEntry]]:
        # A scan: the ledger is small per environment; a GSI on startedAt would be the next step at scale.
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table_name}
        while True:
            try:
                page = self.client.scan(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise self._refused(exc, "Scan") from None
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        runs = [sorted(_entries(item), key=lambda e: e.seq) for item in items]
        runs = [run for run in runs if run]
        runs.sort(key=lambda run: run[0].started_at, reverse=True)
        return runs[:limit]


def _said(exc: ClientError) -> str:
    """``access denied: <AWS's message>``, the message taken out of an XML body when that is what came back."""
    message = str(exc.response.get("Error", {}).get("Message") or exc)
    inner = re.search(r"<Message>(.*?)</Message>", message, re.S)
    return f"access denied: {(inner.group(1) if inner else message).strip()}"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _entries(item: dict[str, Any]) -> list[LedgerEntry]:
    return [_from_dict(json.loads(raw["S"])) for key, raw in item.items() if key.startswith("entry_")]


def _from_dict(data: dict[str, Any]) -> LedgerEntry:
    data["ingestion_id"] = uuid.UUID(data["ingestion_id"])
    for key in ("started_at", "finished_at"):
        data[key] = datetime.fromisoformat(data[key]) if data[key] else None
    return LedgerEntry(**data)
