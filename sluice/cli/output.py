"""What every command prints through: the two consoles, one readable error line, one JSON object."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's own log lines.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one readable error line and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
