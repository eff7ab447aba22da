"""Demo step: the Data2bots analytics over the generated orders, reviews and shipments the demo just ingested."""

from __future__ import annotations

from rich.console import Console

from sluice.cli.data2bots import print_analytics
from sluice.cli.output import showing
from sluice.cli.runner import run_data2bots


def demo_step(console: Console) -> bool:
    console.rule("Data2bots: staging → analytics → CSV exports")
    with showing("analytics", console, starting="analytics for the latest order date..."):
        report = run_data2bots(force=True)
    print_analytics(report, console)
    return report.status in ("success", "skipped")
