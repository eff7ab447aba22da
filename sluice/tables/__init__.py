"""Every warehouse table Sluice owns, declared in one place, and the one way to create them.

One module per pipeline (``tm``, ``data2bots``, ``sertis``, ``totesys``) plus ``ledger`` (the run ledger and
the exactly-once file registry); a new table goes in ``sluice/tables/<pipeline>.py``. ``ensure`` creates what
is missing under the DDL lock and migrates old shapes; ``exists`` asks whether a table is there. Importing the
package declares every table in ``metadata`` (SQLAlchemy only: no pandas).
"""

from __future__ import annotations

from sluice.tables import data2bots, ledger, sertis, tm, totesys
from sluice.tables.core import (
    DDL_LOCK,
    LINEAGE_COLUMNS,
    ensure,
    exists,
    lineage_columns,
    metadata,
    name_of,
    quoted,
)

__all__ = [
    "DDL_LOCK",
    "LINEAGE_COLUMNS",
    "ensure",
    "exists",
    "lineage_columns",
    "metadata",
    "name_of",
    "quoted",
]
