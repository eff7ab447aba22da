"""Demo step: Sertis gold from the transactions the demo just took through bronze and silver."""

from __future__ import annotations

from rich.console import Console

from sluice.cli.output import showing
from sluice.cli.runner import run_sertis
from sluice.cli.sertis import print_customers


def demo_step(console: Console) -> bool:
    console.rule("Sertis: bronze → silver → gold")
    with showing("customers", console, starting="customers: gold from all of silver..."):
        report = run_sertis()
    if report.status == "failed":
        console.print(
            f"[red]customers failed[/] at {report.state}: {report.error}", highlight=False, soft_wrap=True
        )
        return False
    print_customers(report, console, limit=8)
    return True
