"""``sluice api``: serve the query API (uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from sluice.cli.output import console
from sluice.runtime import prepare


def register(app: typer.Typer) -> None:
    app.command()(api)


def api(
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve one user's check-ins over HTTP: GET /get?user=NAME (also /Prod/get), /health, docs at /docs."""
    # kept off `sluice --help` (uvicorn, FastAPI, SQLAlchemy, pydantic-settings)
    import uvicorn

    from sluice.api import create_app
    from sluice.settings import get_settings

    prepare(server=get_settings().api_key_block is not None)  # Prefect only to read the key's Secret block
    app = create_app()
    console.print(
        f"Sluice query API on http://{host}:{port}  (docs: /docs, health: /health)", highlight=False
    )
    # Access logs carry method, path and query (the user), never headers: the API key is not logged.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=True)
