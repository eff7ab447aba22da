"""A ledger's record (one state of one run) and the interface every ledger backend implements.

Apart from ``sluice.ledger`` (the PostgreSQL backend and the choice of backend) so that a backend such as
``sluice.adapters.ledger_dynamodb`` depends on it without a cycle.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

STATES = ("extract", "transform", "validate", "load")

#: The reason a state records when its process got SIGTERM (Prefect's ``TerminationSignal``): the run was cancelled
#: (its cancellation hook then marks the state ``cancelled``), or its process or container was stopped.
TERMINATED = "stopped by SIGTERM: the run was cancelled, or its process or container was stopped"
#: The reason a state records when Prefect interrupted it in its thread (the flow's timeout); the flow's hook then
#: replaces it with the timeout's own words.
INTERRUPTED = "interrupted by Prefect (the flow run's timeout)"
#: How the reason of a run cancelled from Prefect begins (``cancelled: <the state's message>``), as its alert says it;
#: a state the cancellation stopped in a command's process says ``stopped: cancelled: …`` until the run closes it.
CANCELLED = "cancelled: "
#: The reason a state records when the command running it got Ctrl-C (SIGINT).
CTRL_C = (
    "interrupted by Ctrl-C (SIGINT); a load commits whole or not at all: run the same command again "
    "(what loaded is skipped)"
)


@dataclass
class LedgerEntry:
    """One state of one run."""

    ingestion_id: uuid.UUID
    state: str
    dataset: str
    source: str
    status: str = "running"
    target: str | None = None
    flow_run_id: str | None = None
    rows_read: int | None = None
    rows_loaded: int | None = None
    rows_quarantined: int | None = None
    quarantine_uri: str | None = None
    error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    @property
    def seq(self) -> int:
        return STATES.index(self.state) if self.state in STATES else len(STATES)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ingestion_id"] = str(self.ingestion_id)
        for key in ("started_at", "finished_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


class Ledger(Protocol):
    def record(self, entry: LedgerEntry) -> None: ...

    def history(self, ingestion_id: uuid.UUID) -> list[LedgerEntry]: ...

    def recent(self, limit: int = 20) -> list[list[LedgerEntry]]: ...
