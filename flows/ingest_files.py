"""Flow ``ingest-files``: a shard of landed files in one run (one container for many small files).

Each file is its own ``ingest-file`` subflow run (its own ledger id, exactly-once load, alert), so a shard
is only the unit of scheduling: `sluice backfill --deployment ingest-files/<name> --shard-size N`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from pydantic import Field

from flows.ingest import ingest_file
from flows.names import TIMEOUT_SECONDS, shard_run_name
from flows.skeleton import RESULTS
from sluice.report import report_of


class ShardFailed(Exception):
    """Some files of the shard failed (each has its own failed ``ingest-file`` run)."""


@flow(
    name="ingest-files",
    log_prints=False,
    validate_parameters=True,
    flow_run_name=shard_run_name,
    timeout_seconds=TIMEOUT_SECONDS["ingest-files"],
    **RESULTS,
)
def ingest_files(
    sources: Annotated[list[str], Field(description="Landed files: local paths or s3://bucket/key.")],
    dataset: Annotated[
        str | None, Field(description="Registered dataset name; empty = resolved from each file's key.")
    ] = None,
    mode: Annotated[
        Literal["hard", "soft"] | None,
        Field(description="hard: any bad row halts a file; soft: good rows load, bad rows quarantine."),
    ] = None,
    force: Annotated[bool, Field(description="Reload files already loaded, replacing their rows.")] = False,
) -> list[dict[str, Any]]:
    """Ingest every file of the shard in turn, each as its own ``ingest-file`` run; fails if any file failed.

    Args:
        sources: Landed files: local paths or s3://bucket/key.
        dataset: Registered dataset name; empty = resolved from each file's key.
        mode: hard or soft validation; empty = the dataset's default.
        force: Reload files already loaded, replacing their rows.
    """
    logger = get_run_logger()
    results: list[dict[str, Any]] = []
    for source in sources:
        state = ingest_file(source=source, dataset=dataset, mode=mode, force=force, return_state=True)
        results.append(report_of(state, dataset, source).model_dump(exclude={"failures"}))
    failed = sum(1 for r in results if r["status"] == "failed")
    logger.info("%s files: %s failed", len(results), failed)
    if failed:
        raise ShardFailed(f"{failed} of {len(results)} files failed")
    return results
