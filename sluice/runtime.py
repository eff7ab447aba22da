"""Process set-up shared by the CLI and the demo: which Prefect server runs use, and quiet consoles."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sluice import progress, warm
from sluice.files import write_whole
from sluice.logs import OWN_LOGGERS, JsonFormatter, json_enabled
from sluice.services import ensure_prefect_server, prefect_dir


def prepare(verbose: bool = False, server: bool = True, remote: bool = False) -> None:
    """Set Prefect's environment before Prefect is imported.

    Without ``PREFECT_API_URL``, and when ``server`` says the command runs flows, runs go to the home's
    local Prefect server (``sluice.services``: started on first need, shared by every later command, worker
    and flow run of the same ``SLUICE_HOME``); ``PREFECT_API_URL`` is set to it so that child processes
    use it too. ``remote`` is for commands that act on deployments and pools (`sluice aws setup`, `sluice
    backfill --deployment`): they go where the user's Prefect profile points (what `prefect cloud login` wrote,
    the server `prefect deploy` deployed to) when it names an API, and to the home's server only otherwise.
    Prefect's console handlers are quietened (runs are still logged to the API); the CLI prints its own
    progress and one readable line per error.
    """
    from sluice.settings import get_settings  # pydantic-settings: not on `sluice --help`'s path

    get_settings()  # a bad SLUICE_* value: one readable ConfigurationError now, before any server or run starts
    home = warm.home_of(os.environ)
    profiled = remote and "PREFECT_API_URL" not in os.environ and profile_api_url() is not None
    if not profiled and "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        # Made only for a command that runs flows: one that runs none (`ledger`, a `backfill` of a folder that is
        # not there) left an empty prefect/ in a new home. The home's server makes it when it starts.
        if server:
            (home / "prefect").mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home / "prefect")
    if server and not profiled:
        warm.start_deferred()  # the home's warm runner, now that the command parsed and runs flows
        use_local_server()
    # Only used when Prefect falls back to an ephemeral server (a process that imported Prefect unconfigured).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not verbose:
        level = "CRITICAL"
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", level)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", level)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", level)
        # Prefect's internal machinery logs to its own `debug` handler, and its API log handler writes "--- Error
        # logging to API ---" straight to stderr when logging.raiseExceptions is set: a Prefect server killed or
        # stopped during a run flooded the terminal with both around the one readable error line.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL", level)
        logging.raiseExceptions = False
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        _show_warnings()
    if json_enabled():
        # One JSON object per log line (CloudWatch); the image sets this too.
        os.environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH", str(Path(__file__).with_name("logging.yml")))
    warnings.filterwarnings("ignore", module="platformdirs")
    warnings.filterwarnings("ignore", category=UserWarning, module="prefect")


def profile_api_url() -> str | None:
    """The API of the user's active Prefect profile (``PREFECT_PROFILES_PATH``, else ``profiles.toml`` in
    ``PREFECT_HOME`` or ``~/.prefect``; ``PREFECT_PROFILE`` picks the profile), read without importing Prefect."""
    import tomllib

    prefect_home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or prefect_home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = os.environ.get("PREFECT_PROFILE") or data.get("active")
    profile = data.get("profiles", {}).get(name) if isinstance(name, str) else None
    url = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return url if isinstance(url, str) and url.strip() else None


def users_api_url() -> str | None:
    """The Prefect API the user chose (``PREFECT_API_URL``, else their profile's), or None: then a command that
    makes pools or deployments would make them where no deploy and no Cloud workspace looks."""
    return os.environ.get("PREFECT_API_URL", "").strip() or profile_api_url()


class _StderrWarning(logging.Handler):
    """``warning: <message>`` (with ``SLUICE_JSON_LOGS``, a JSON line like every log line) on the stderr of the
    moment (the warm runner's child gets its client's); not for a record made with ``extra={"to_console": False}``
    (a ledger state's: the command says a failure itself)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "to_console", True):
            return
        try:
            line = JsonFormatter().format(record) if json_enabled() else f"warning: {record.getMessage()}"
            sys.stderr.write(f"{line}\n")
        except Exception:
            self.handleError(record)


def _show_warnings() -> None:
    """Quiet consoles still say Sluice's own warnings (an alert not delivered, a column a drift policy ignored, a
    Glue catalog not written): the root logger's console handler, the only one they had, is quietened above."""
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _StderrWarning) for h in logger.handlers):
            logger.addHandler(_StderrWarning(logging.WARNING))


def use_local_server() -> None:
    """Point this process and its children at the home's local Prefect server (starting it if needed),
    unless ``PREFECT_API_URL`` is set or Prefect is already configured in this process."""
    if "PREFECT_API_URL" in os.environ or _prefect_configured():
        return
    home = warm.home_of(os.environ)
    os.environ["PREFECT_API_URL"] = ensure_prefect_server(
        home, starting=lambda: progress.tell("starting the Prefect server (once: ~10 s)")
    )
    # The home's server is this installation's Prefect: no version handshake, and no CSRF token to fetch unless
    # the environment turned its CSRF protection on (two requests each per command, client and server CPU).
    os.environ.setdefault("PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED", "false")
    # A request the home's server refuses is retried 3 times (2 + 4 + 8 s), not Prefect's 5 (up to 62 s a request):
    # enough for a busy SQLite (503), while a server that died (killed, `services stop`) is said in ~30 s, not
    # after 2.5 minutes of retries against a closed port.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "3")
    if os.environ.get("PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED", "").strip().lower() not in ("1", "true"):
        os.environ.setdefault("PREFECT_CLIENT_CSRF_SUPPORT_ENABLED", "false")
    if "PREFECT_API_SSL_CERT_FILE" not in os.environ:
        # A home we cannot write: the clients load certifi's bundle, as before.
        with contextlib.suppress(OSError):
            os.environ["PREFECT_API_SSL_CERT_FILE"] = str(_plain_http_bundle(prefect_dir(home)))


BUNDLE_FILE = "plain-http-ca.pem"


def _plain_http_bundle(folder: Path) -> Path:
    """A one-root CA bundle for Prefect's clients of the home's server (written once, in ``folder``).

    The home's server speaks plain HTTP on 127.0.0.1, so no certificate is ever verified; yet every Prefect client
    (each run's, the log and event workers') builds a verifying TLS context from ``PREFECT_API_SSL_CERT_FILE``, else
    from certifi's bundle of ~140 roots: 21 ms CPU each under OpenSSL 3 (cpython#95031; prefect#19106 would let
    clients share one context), 0.09 of a warm 10-row ingest's 0.32 CPU-s. One root parses in 0.4 ms.
    """
    path = folder / BUNDLE_FILE
    if path.is_file():
        return path
    import certifi  # Prefect's own dependency; only here, once per home

    text = Path(certifi.where()).read_text(encoding="ascii")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    first = text[text.index(begin) : text.index(end) + len(end)]
    header = (
        "# Sluice: the CA bundle of Prefect's clients of this home's Prefect server, which speaks plain HTTP on\n"
        "# 127.0.0.1 (no certificate is ever verified). One root of certifi's instead of all of them: a TLS\n"
        "# context per client then costs 0.4 ms, not 21. Used only while PREFECT_API_URL is unset.\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_whole(path, f"{header}{first}\n", encoding="ascii")  # two commands may write it at once
    return path


def _prefect_configured() -> bool:
    """True when Prefect is already imported in this process with an API (a test harness, an embedding app):
    its settings were read at import, so the environment can no longer redirect it."""
    if "prefect.settings" not in sys.modules:
        return False
    from prefect.settings import get_current_settings  # Prefect is already imported (checked above)

    return get_current_settings().api.url is not None


@contextlib.contextmanager
def in_process_run() -> Iterator[None]:
    """Settings for a flow run inside this command's process (``sluice.cli.runner``), entered in the run's thread.

    Flow-run heartbeats are off: Prefect's heartbeat thread sleeps in one-second steps and every run joins it
    on exit, which cost up to a second per run (most of a small file's ingest). An in-process run ends with
    its command, and a killed run is marked ``crashed`` by the ledger's reaper; runs started by workers
    (deployments) keep their heartbeats.
    """
    # after prepare(): Prefect reads its environment once, at import
    from prefect.context import SettingsContext, get_settings_context

    context = get_settings_context()
    token = _IN_PROCESS.set(True)
    try:
        with SettingsContext(profile=context.profile, settings=no_heartbeat_settings()):
            yield
    finally:
        _IN_PROCESS.reset(token)


#: Whether the flow run in this thread runs inside a command's process (``in_process_run``), not under a worker.
_IN_PROCESS: contextvars.ContextVar[bool] = contextvars.ContextVar("sluice_in_process_run", default=False)


def in_process() -> bool:
    """Whether this thread's flow run is a command's own (``sluice ingest``, ``backfill``, ``totesys`` …): nothing
    but the run itself stops it when it is cancelled from Prefect (a worker's runner stops its runs)."""
    return _IN_PROCESS.get()


_NO_HEARTBEAT: tuple[Any, Any] | None = None  # (the settings it was derived from, the derived settings)


def no_heartbeat_settings() -> Any:
    """The current Prefect settings with flow-run heartbeats off, derived once per settings object: building a
    Settings object re-reads the environment and profile (~0.13 CPU-s here), and the warm runner derives it
    before forking, so a command's child does not."""
    global _NO_HEARTBEAT
    from prefect.context import get_settings_context
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    current = get_settings_context().settings
    if _NO_HEARTBEAT is None or _NO_HEARTBEAT[0] is not current:
        _NO_HEARTBEAT = (current, current.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
    return _NO_HEARTBEAT[1]
