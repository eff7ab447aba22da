"""Flow run names that say what ran (the UI's run list), and each flow's timeout.

Prefect calls a ``flow_run_name`` function when the run starts, with ``prefect.runtime`` describing it; a name
must never fail a run, so each falls back to the flow's name.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect.runtime import flow_run

# A hung run must not hold its concurrency slot (or its ECS task) forever. Generous: a first Totesys cycle loads the
# whole OLTP (cycles due meanwhile are cancelled by its CANCEL_NEW limit), a 10M-row file takes ~2 minutes here.
TIMEOUT_SECONDS = {
    "ingest-file": 2 * 3600,
    "ingest-files": 4 * 3600,
    "totesys": 3600,
    "analytics": 3600,
    "customers": 3600,
}


def ingest_run_name() -> str:
    """``<dataset> · <file>``, e.g. ``dailycheckins · dailycheckins.csv``."""
    try:
        from sluice.adapters import storage

        params = flow_run.parameters or {}
        source = str(params.get("source") or "")
        forms = storage.key_forms(source)  # an S3 event's key may be URL-encoded: the decoded one is claimed
        if storage.is_s3(source) and any(form.endswith("/") for form in forms):
            return f"folder marker · {source}"
        dataset = params.get("dataset")
        if not dataset:
            from sluice import datasets  # pandas and pandera: only when a run has no dataset yet

            spec = next((d for form in forms if (d := datasets.resolve(form)) is not None), None)
            dataset = spec.name if spec else "unclaimed"
        return f"{dataset} · {source.rstrip('/').rsplit('/', 1)[-1] or source}"
    except Exception:
        return "ingest-file"


def timestamped(prefix: str) -> str:
    """``<prefix> <scheduled time, UTC, to the minute>``, e.g. ``totesys 2026-11-24T12:20Z``."""
    try:
        when = flow_run.scheduled_start_time or datetime.now(UTC)
        return f"{prefix} {when.astimezone(UTC):%Y-%m-%dT%H:%MZ}"
    except Exception:
        return prefix


def totesys_run_name() -> str:
    return timestamped("totesys")


def data2bots_run_name() -> str:
    """``analytics <as_of>`` when a day is asked for, else the scheduled time."""
    as_of = (flow_run.parameters or {}).get("as_of")
    return f"analytics as of {as_of}" if as_of else timestamped("analytics")


def sertis_run_name() -> str:
    return timestamped("customers")


def shard_run_name() -> str:
    """``shard of <n> files · <first file>``."""
    try:
        sources = list((flow_run.parameters or {}).get("sources") or [])
        first = str(sources[0]).rstrip("/").rsplit("/", 1)[-1] if sources else "nothing"
        return f"shard of {len(sources)} files · {first}"
    except Exception:
        return "ingest-files"
