"""Fan-out: ingest every file under a landing prefix, locally with a bounded pool or as deployment runs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from sluice import registry, storage
from sluice.report import IngestReport

logger = logging.getLogger(__name__)


def plan(prefix: str, dataset: str | None) -> list[tuple[str, str]]:
    """(file, dataset) for every file under ``prefix``: all of them for an explicit dataset, else the
    files some dataset claims by key."""
    if dataset:
        name = registry.get_dataset(dataset).name
        return [(uri, name) for uri in storage.list_files(prefix)]
    return [(uri, spec.name) for uri in storage.list_files(prefix) if (spec := registry.resolve(uri))]


def run_local(
    files: list[tuple[str, str]],
    *,
    concurrency: int,
    mode: str | None = None,
    on_done: Callable[[IngestReport], None] | None = None,
) -> list[IngestReport]:
    """Ingest each file in this process with at most ``concurrency`` at once; loaded files are skipped."""
    from sluice.runner import run_ingest

    reports: list[IngestReport] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="sluice-backfill") as pool:
        futures = {pool.submit(run_ingest, uri, dataset=name, mode=mode): uri for uri, name in files}
        for future in as_completed(futures):
            report = future.result()
            reports.append(report)
            if on_done:
                on_done(report)
    return sorted(reports, key=lambda r: r.source)


def run_deployments(
    files: list[tuple[str, str]],
    deployment: str,
    *,
    concurrency: int,
    mode: str | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """One ``run_deployment`` per file (e.g. on an ECS push pool), at most ``concurrency`` in flight.

    The warehouse itself is guarded by the deployment's concurrency limit and, when
    ``SLUICE_WAREHOUSE_CONCURRENCY_LIMIT`` names one, a Prefect global concurrency limit every load task
    holds a slot of, so a large backfill cannot overload it.
    """
    from prefect.deployments import run_deployment

    def one(uri: str, name: str) -> dict[str, Any]:
        parameters: dict[str, Any] = {"source": uri, "dataset": name}
        if mode:
            parameters["mode"] = mode
        flow_run = run_deployment(deployment, parameters=parameters, timeout=None)
        state = flow_run.state
        return {
            "source": uri,
            "dataset": name,
            "flow_run_id": str(flow_run.id),
            "status": "success" if state and state.is_completed() else "failed",
            "state": state.name if state else None,
        }

    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="sluice-deploy") as pool:
        futures = [pool.submit(one, uri, name) for uri, name in files]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            if on_done:
                on_done(result)
    return sorted(results, key=lambda r: r["source"])
