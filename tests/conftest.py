"""Shared fixtures: a real embedded PostgreSQL, one Prefect test harness, moto's server over HTTP.

Everything lives under one session folder (pytest's temporary folders too): no test touches ``./.sluice`` or
the user's Prefect home, and when the session ends every service started in it is stopped and the folder
is removed, so nothing survives ``./run test``.

The suite runs on pytest-xdist workers (pyproject's addopts). Each worker imports this file in its own process, so
each has its own session folder (inside the controller's: the workers inherit its TMPDIR), its own embedded
PostgreSQL, Prefect test server and moto server, and stops them at its own exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before Prefect is imported anywhere: private Prefect home, quiet server, generous start-up.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="sluice-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
(_SESSION_DIR / "prefect").mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# The task run recorder on, as on a real server: the pipelines' step tests read their task runs back from the API.
os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED", "true")
os.environ.pop("PREFECT_API_URL", None)
os.environ["SLUICE_HOME"] = str(_SESSION_DIR / "home")
os.environ.pop("SLUICE_DATABASE_URL", None)
os.environ["SLUICE_RETRY_DELAY_SECONDS"] = "0.05"
# The migrated Prefect database new homes start from (sluice.prefect_server): made by the session's first new home,
# used by the others, and gone with the session, not left in the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = str(_SESSION_DIR / "cache")
# Temp files of this process and every process it starts (Prefect workers keep /tmp/runner_storage/<uuid> folders;
# another user's /tmp/runner_storage is not writable) go in the session folder, and go with it.
(_SESSION_DIR / "tmpdir").mkdir()
os.environ["TMPDIR"] = tempfile.tempdir = str(_SESSION_DIR / "tmpdir")
# Registered first, so it runs last at exit: after the exit handlers that use the folder (Prefect's test harness
# removes its own temp folder; pgserver takes its lock file in the runtime folder, for a user without
# /run/user/<uid> a folder in TMPDIR).
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)
# Ctrl-C as a terminal sends it: a suite started as a background job (`./run test &`, nohup) inherits SIGINT ignored,
# and so would every command the tests start, which then could not show what Ctrl-C does (they exited 0). A handler
# (unlike SIG_IGN) is reset to the default in the processes this one starts.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not config.option.basetemp:  # tmp_path folders inside the session folder, removed with it
        config.option.basetemp = str(_SESSION_DIR / "tmp")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks (`--dist loadgroup`)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A module whose tests share a module-scoped fixture (a home with its services started, a moto server of its
    own) runs on one xdist worker: set up once, not once per worker, and its tests keep their order."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group"):
            continue
        if any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values() if defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop what the session started under its folder (the Prefect server a CLI subprocess may have
    started, the embedded PostgreSQL); the folder is removed at exit."""
    from sluice import services

    home = Path(os.environ.get("SLUICE_HOME", _SESSION_DIR / "home"))
    services.stop(_SESSION_DIR / "home", _SESSION_DIR / "home" / "pg")
    if home != _SESSION_DIR / "home":
        services.stop(home, home / "pg")
    # the folder itself is removed at exit (registered above), after the exit handlers that still use it


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test (a user's machine has no ../shared)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared/data ships with the project's CI, not with Sluice)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _prefect_console_env_restored() -> Iterator[None]:
    """In-process CLI calls quieten Prefect's console through ``os.environ`` (``runtime.prepare``): undo it after
    each test, or every later subprocess inherits a silenced console (and tests reading its log lines see none)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("PREFECT_LOGGING_")}
    yield
    for key in [k for k in os.environ if k.startswith("PREFECT_LOGGING_")]:
        if key not in saved:
            del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The embedded PostgreSQL of this test session (started once, in the session's folder; stopped after)."""
    from sluice import services
    from sluice.adapters.warehouse import database_url, dispose_engines
    from sluice.settings import reload_settings

    settings = reload_settings()
    yield database_url(settings)
    dispose_engines()
    services.stop_postgres((settings.home / "pg").resolve())


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness for the whole session (a second one in a process fails: prefect#19342)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def sluice_env(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Fresh zones for one test on the session's warehouse; Sluice's tables emptied first."""
    import sqlalchemy as sa

    from sluice.adapters.warehouse import get_engine
    from sluice.settings import reload_settings

    for zone in ("landing", "staging", "quarantine"):
        monkeypatch.setenv(f"SLUICE_{zone.upper()}_URI", str(tmp_path / zone))
    settings = reload_settings()
    engine = get_engine(settings)
    with engine.begin() as conn:
        for table in ("sluice.run_ledger", "sluice.file_loads", "tm.daily_checkins"):
            schema, name = table.split(".")
            exists = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar()
            if exists:
                conn.execute(sa.text(f'TRUNCATE "{schema}"."{name}"'))
    yield tmp_path
    reload_settings()


#: The tables Totesys keeps in schema ``sluice`` beside its star schema (schema ``warehouse``).
TOTESYS_BOOKKEEPING = (
    "totesys_watermarks",
    "totesys_recent",
    "totesys_lookups",
    "totesys_max_ids",
    "totesys_snapshot",
)


def drop_schemas(*schemas: str) -> None:
    """Drop what a pipeline made in the session's warehouse: the next test (the demo's too) starts as on a fresh one."""
    import sqlalchemy as sa

    from sluice.adapters.warehouse import get_engine

    with get_engine().begin() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def reset_totesys(settings: Any = None) -> None:
    """A warehouse without Totesys' tables and an empty OLTP source as its DDL makes it (the session's embedded
    ``totesys`` database, shared by every test and the demo): called before a Totesys test and after it, so that
    no source row a test made (a bad currency, a renamed column) reaches a later test. ``settings``: those the
    test started with (at teardown the test's own environment, a source URL it set, is still in place)."""
    import sqlalchemy as sa

    from sluice.adapters.totesys_source import source_engine, source_url
    from sluice.adapters.warehouse import get_engine
    from sluice.settings import get_settings

    settings = settings or get_settings()
    with get_engine(settings).begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS warehouse CASCADE"))
        for table in TOTESYS_BOOKKEEPING:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS sluice.{table}"))
    source = source_engine(source_url(settings))
    try:
        with source.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        source.dispose()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on a loopback port; boto3 reaches it over HTTP via AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    from sluice.adapters.storage import reset_clients

    reset_clients()
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_clients()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A fresh bucket on moto's server."""
    import uuid

    import boto3

    name = f"sluice-test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def landing(moto_endpoint: str) -> tuple[Any, str]:
    """A versioned landing bucket on moto's server, as the stack makes it: its client and its name."""
    import uuid

    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = f"sluice-landing-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return s3, bucket
