"""The Totesys tests' environment: the embedded OLTP source and a warehouse without Totesys' tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.conftest import reset_totesys


@dataclass
class Env:
    source: sa.Engine
    warehouse: sa.Engine
    url: str


@pytest.fixture
def totesys_env(sluice_env, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """The warehouse without Totesys' tables and an empty OLTP, before the test and again after it."""
    from sluice.adapters.totesys_source import source_engine, source_url
    from sluice.adapters.warehouse import get_engine
    from sluice.settings import reload_settings

    monkeypatch.delenv("SLUICE_TOTESYS_SOURCE_URL", raising=False)
    settings = reload_settings()
    reset_totesys(settings)
    url = source_url(settings)
    source = source_engine(url)
    try:
        yield Env(source, get_engine(settings), url)
    finally:
        source.dispose()
        reset_totesys(settings)  # the session's source, whatever URL the test itself set
