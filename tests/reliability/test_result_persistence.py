"""A workspace's result storage gets nothing from Sluice's runs.

Prefect persists a flow's return value when the server has a default result storage (a Prefect Cloud workspace
setting) or ``PREFECT_RESULTS_PERSIST_BY_DEFAULT`` is on, and a task's too with
``PREFECT_TASKS_DEFAULT_PERSIST_RESULT``. A run's record is the ledger, its artifact and the warehouse: persisted,
every run's report (sources, errors) would land in that storage, and a run whose task role may not write there
logged "Encountered an error while persisting result" each time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sluice.cli.runner import run_ingest

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOOD = "user,timestamp,hours,project\nned,2019-01-01 00:00:00 UTC,4.0,bizdev\n"
BAD = GOOD + "bran,2019-01-01 00:00:00 UTC,25,infra\n"


@pytest.fixture
def storages(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A server default result storage and a persist-everything environment, both in ``tmp_path``."""
    from prefect.filesystems import LocalFileSystem
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        PREFECT_TASKS_DEFAULT_PERSIST_RESULT,
        temporary_settings,
    )

    server_default, local_default = tmp_path / "server-default", tmp_path / "local-default"
    block_id = LocalFileSystem(basepath=str(server_default)).save("sluice-test-default", overwrite=True)
    admin = f"{PREFECT_API_URL.value()}/admin/storage"
    httpx.put(admin, json={"default_result_storage_block_id": str(block_id)}).raise_for_status()
    try:
        with temporary_settings(
            updates={
                PREFECT_RESULTS_PERSIST_BY_DEFAULT: True,
                PREFECT_TASKS_DEFAULT_PERSIST_RESULT: True,
                PREFECT_LOCAL_STORAGE_PATH: local_default,
            }
        ):
            yield server_default, local_default
    finally:
        httpx.delete(admin).raise_for_status()  # the session's server serves this worker's later tests


def written(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_runs_persist_no_result_whatever_the_workspace_or_environment_default(
    sluice_env: Path, storages: tuple[Path, Path]
) -> None:
    landing = sluice_env / "landing"
    landing.mkdir()
    (landing / "good-dailycheckins.csv").write_text(GOOD, encoding="utf-8")
    (landing / "bad-dailycheckins.csv").write_text(BAD, encoding="utf-8")

    loaded = run_ingest(str(landing / "good-dailycheckins.csv"), dataset="dailycheckins")
    failed = run_ingest(str(landing / "bad-dailycheckins.csv"), dataset="dailycheckins", mode="hard")

    assert (loaded.status, loaded.rows_loaded) == ("success", 1)
    assert (failed.status, failed.state) == ("failed", "validate")
    server_default, local_default = storages
    assert written(server_default) == [] and written(local_default) == []


def test_every_flow_and_task_declares_that_it_persists_no_result() -> None:
    """The same for the flows the test above does not run (the declaration is what Prefect reads)."""
    from prefect import Flow, Task

    import flows.data2bots
    import flows.ingest
    import flows.ingest_files
    import flows.sertis
    import flows.totesys
    import tasks.data2bots
    import tasks.ingest
    import tasks.sertis
    import tasks.totesys
    from tasks.toolkit import IOTask

    modules = (flows.data2bots, flows.ingest, flows.ingest_files, flows.sertis, flows.totesys)
    found = {f.name: f.persist_result for m in modules for f in vars(m).values() if isinstance(f, Flow)}
    assert found == dict.fromkeys(("analytics", "ingest-file", "ingest-files", "customers", "totesys"), False)
    steps = [
        t.task if isinstance(t, IOTask) else t
        for m in (tasks.data2bots, tasks.ingest, tasks.sertis, tasks.totesys)
        for t in vars(m).values()
        if isinstance(t, Task | IOTask)
    ]
    assert len(steps) > 10
    assert {t.name: t.persist_result for t in steps if t.persist_result is not False} == {}
