"""What every command prints through: the two consoles, one readable error line, one JSON object."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)


def reset_consoles() -> None:
    """Re-create both consoles in place (every module holds them by reference): rich detects the terminal, colour
    system and size when a console is created, and a warm runner's child gets the client's terminal after that."""
    console.__init__()  # type: ignore[misc]
    err.__init__(stderr=True)  # type: ignore[misc]


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's own log lines.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one readable error line and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
