"""The Totesys tests' environment: the embedded OLTP source and a warehouse without Totesys' tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa


@dataclass
class Env:
    source: sa.Engine
    warehouse: sa.Engine
    url: str


@pytest.fixture
def totesys_env(sluice_env, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    from sluice.adapters.totesys_source import source_engine, source_url
    from sluice.adapters.warehouse import get_engine
    from sluice.settings import reload_settings

    monkeypatch.delenv("SLUICE_TOTESYS_SOURCE_URL", raising=False)
    settings = reload_settings()
    warehouse = get_engine(settings)
    with warehouse.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS warehouse CASCADE"))
        for table in ("totesys_watermarks", "totesys_recent", "totesys_lookups", "totesys_max_ids"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS sluice.{table}"))
    url = source_url(settings)
    source = source_engine(url)
    with source.begin() as conn:  # an OLTP as its DDL makes it: no table or column an earlier test changed
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    yield Env(source, warehouse, url)
    source.dispose()
