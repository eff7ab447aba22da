"""``sluice api``: serve the query API (uvicorn)."""

from __future__ import annotations

import errno
import logging
import signal
import socket
from typing import Annotated, Any

import typer

from sluice.cli.output import console
from sluice.errors import ConfigurationError
from sluice.logs import JsonFormatter, json_enabled
from sluice.runtime import prepare


def register(app: typer.Typer) -> None:
    app.command()(api)


def api(
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8000,
) -> None:
    """Serve one user's check-ins over HTTP: GET /get?user=NAME (also /Prod/get), /health, docs at /docs."""
    # kept off `sluice --help` (uvicorn, FastAPI, SQLAlchemy, pydantic-settings)
    import uvicorn

    from sluice.api import create_app
    from sluice.settings import get_settings

    listening = _listen(host, port)  # before anything else: a port in use is one readable line
    prepare(server=get_settings().api_key_block is not None)  # Prefect only to read the key's Secret block
    app = create_app()
    port = listening.getsockname()[1]  # --port 0: the one the system gave
    keyed = (
        "requests need X-API-Key" if app.state.api_key_required else "no API key: open to whoever reaches it"
    )
    banner = f"Sluice query API on http://{host}:{port}  (docs: /docs, health: /health; {keyed})"
    if json_enabled():  # the image: every line the container writes is one JSON object (CloudWatch)
        record = logging.LogRecord("sluice.api", logging.INFO, __file__, 0, banner, None, None)
        print(JsonFormatter().format(record), flush=True)
    else:
        console.print(banner, highlight=False, soft_wrap=True)
    # uvicorn's start-up chatter stays off (warning), its access log on: client, method, path and query (the
    # user), status; never headers, so never the API key. With JSON logs, uvicorn's lines are JSON too.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=True, log_config=_log_config()
    )
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    # SIGTERM is how a server is stopped: uvicorn shuts down, then raises it again with the handler it found, which
    # must be the default (sluice.cli.main's says a run was stopped before it finished)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    uvicorn.Server(config).run(sockets=[listening])


def _log_config() -> dict[str, Any]:
    """uvicorn's own logging config, with its lines as Sluice's JSON objects when ``SLUICE_JSON_LOGS`` is on."""
    from uvicorn.config import LOGGING_CONFIG

    if not json_enabled():
        return LOGGING_CONFIG
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "sluice.logs.JsonFormatter"}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def _listen(host: str, port: int) -> socket.socket:
    """The bound socket uvicorn serves on; a host or port it cannot have is a ConfigurationError naming it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds its own
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = (
            " (another process listens there: stop it or pass --port)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise ConfigurationError(f"cannot listen on {host}:{port}: {reason}{hint}") from None
    return sock
