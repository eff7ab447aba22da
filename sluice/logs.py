"""Where Sluice's log records go: JSON lines for CloudWatch, and the logs of the run that made them.

``JsonFormatter``: one object per line with the run's ids, dataset, source and state. Installed through Prefect's
logging config (``sluice/logging.yml``, pointed at by ``PREFECT_LOGGING_SETTINGS_PATH``; the image sets both it and
``SLUICE_JSON_LOGS=true``). With ``SLUICE_JSON_LOGS=false`` the same formatter writes Prefect's usual text lines.

``send_to_runs``: the records of Sluice's own loggers made in a run, in that run's logs on the Prefect API (the UI).
"""

from __future__ import annotations

import json
import logging
import os
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: Sluice's own loggers: the engine and its adapters (``sluice.*``), the tasks and the flows.
OWN_LOGGERS = ("sluice", "tasks", "flows")

_TEXT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"
_RUN_FIELDS = ("flow_run_id", "flow_run_name", "flow_name", "task_run_id", "task_run_name", "task_name")
_SLUICE_FIELDS = ("dataset", "source", "state", "status", "ingestion_id", "rows_loaded", "rows_quarantined")


def json_enabled() -> bool:
    return os.environ.get("SLUICE_JSON_LOGS", "false").strip().lower() in ("1", "true", "yes", "on")


#: What a run has resolved about itself (``tag_run``): an S3 event's run has no ``dataset`` parameter, yet
#: ``filter dataset = "orders"`` must find its warnings too.
#: Kept with the run's id: a thread that runs one file after another (a backfill) must not lend a run's tags to
#: the next run's first records.
_RESOLVED: ContextVar[tuple[str, dict[str, str]] | None] = ContextVar("sluice_run_tags", default=None)


def tag_run(**tags: str) -> None:
    """Fields every later record of this flow run carries (``dataset=`` once the file's key resolved it); set in
    the flow, seen by its tasks (one thread, one context). Outside a run: nothing."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    run_id = str(context.flow_run.id)
    current = _RESOLVED.get()
    before = current[1] if current is not None and current[0] == run_id else {}
    _RESOLVED.set((run_id, {**before, **tags}))


def _run_context() -> dict[str, Any]:
    """Flow run id and name, and its dataset/source (parameters, or what the run resolved), inside a run."""
    try:
        from prefect.context import FlowRunContext  # the formatter also serves processes without Prefect
    except ImportError:  # pragma: no cover
        return {}
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return {}
    parameters = context.flow_run.parameters or {}
    out: dict[str, Any] = {
        "flow_run_id": str(context.flow_run.id),
        "flow_run_name": context.flow_run.name,
        "flow_name": context.flow.name if context.flow else None,
    }
    for key in ("dataset", "source"):
        if parameters.get(key) is not None:
            out[key] = str(parameters[key])
    resolved = _RESOLVED.get()
    if resolved is not None and resolved[0] == out["flow_run_id"]:
        out.update(resolved[1])
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line (or Prefect-like text when ``SLUICE_JSON_LOGS`` is off)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(_TEXT, datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if not json_enabled():
            return super().format(record)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in _run_context().items() if v is not None})
        for key in (*_RUN_FIELDS, *_SLUICE_FIELDS):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = str(value) if not isinstance(value, int | float | bool) else value
        if "state" not in entry and entry.get("task_run_name"):
            entry["state"] = str(entry["task_run_name"]).split("-", 1)[0]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RunLogs(logging.Handler):
    """Records made inside a flow or task run (or naming one: ``extra={"flow_run_id": ...}``) also go to that run's
    logs on the Prefect API, where the UI shows them beside Prefect's own; a record outside any run is left to the
    other handlers (Prefect's API handler would warn about it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._api: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import FlowRunContext, TaskRunContext

        if getattr(record, "flow_run_id", None) is None and not (
            FlowRunContext.get() or TaskRunContext.get()
        ):
            return
        if self._api is None:
            from prefect.logging.handlers import APILogHandler

            self._api = APILogHandler()
        self._api.handle(record)


def send_to_runs() -> None:
    """Sluice's own records at INFO and above (a column a drift policy ignored, a Glue catalog not written, an alert
    not delivered, a load's timings) in the logs of the run they were made in. Prefect sends only its run loggers'
    records there, and its root console handler, which is all Sluice's loggers had, is quiet in the CLI.
    Idempotent; in every process that runs flows (the flows install it on import)."""
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if not any(isinstance(h, RunLogs) for h in logger.handlers):
            logger.addHandler(RunLogs())
