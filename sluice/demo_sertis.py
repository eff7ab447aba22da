"""Demo step: Sertis gold from the transactions the demo just took through bronze and silver."""

from __future__ import annotations

from rich.console import Console


def demo_step(console: Console) -> bool:
    from sluice.cli_sertis import print_customers
    from sluice.runner import run_customers

    console.rule("Sertis: bronze → silver → gold")
    with console.status("customers: gold from all of silver..."):
        report = run_customers()
    if report.status == "failed":
        console.print(
            f"[red]customers failed[/] at {report.state}: {report.error}", highlight=False, soft_wrap=True
        )
        return False
    print_customers(report, console, limit=8)
    return True
