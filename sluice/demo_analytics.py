"""Demo step: the Data2bots analytics over the generated orders, reviews and shipments the demo just ingested."""

from __future__ import annotations

from rich.console import Console


def demo_step(console: Console) -> bool:
    from sluice.cli_analytics import print_analytics
    from sluice.runner import run_analytics

    console.rule("Data2bots: staging → analytics → CSV exports")
    with console.status("analytics for the latest order date..."):
        report = run_analytics(force=True)
    print_analytics(report, console)
    return report.status in ("success", "skipped")
