"""Process set-up shared by the CLI and the demo: where Prefect keeps its state, and quiet consoles."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path


def prepare(verbose: bool = False) -> None:
    """Set Prefect's environment before Prefect is imported.

    Without ``PREFECT_API_URL`` runs go to a local ephemeral server whose database lives in
    ``$SLUICE_HOME/prefect`` (so ``prefect server start`` with the same ``PREFECT_HOME`` shows them in the UI).
    Prefect's console handlers are quietened (runs are still logged to the API); the CLI prints its own
    progress and one readable line per error.
    """
    home = Path(os.environ.get("SLUICE_HOME", ".sluice")).resolve()
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        (home / "prefect").mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home / "prefect")
    # The first start of the ephemeral server migrates its SQLite database: slow on 2 cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not verbose:
        level = "CRITICAL"
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", level)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", level)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", level)
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    if os.environ.get("SLUICE_JSON_LOGS", "").strip().lower() in ("1", "true", "yes", "on"):
        # One JSON object per log line (CloudWatch); the image sets this too.
        os.environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH", str(Path(__file__).with_name("logging.yml")))
    warnings.filterwarnings("ignore", module="platformdirs")
    warnings.filterwarnings("ignore", category=UserWarning, module="prefect")
