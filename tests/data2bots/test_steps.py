"""A Data2bots run's tasks as Prefect ran them: reads and writes retried, transform and validate pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.cli.runner import run_data2bots
from tests.data2bots.test_reference import tiny_staging
from tests.steps import steps

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_run_is_its_steps_in_order_io_retried_the_rest_pure(sluice_env: Path) -> None:
    from sluice.settings import get_settings

    tiny_staging()
    report = run_data2bots()
    assert report.status == "success", report.error
    runs = steps(report.flow_run_id, last="export")
    assert [s.name for s in runs] == ["extract", "transform", "validate", "load", "export"]
    retries = get_settings().retries
    assert retries > 0
    assert {s.name: s.retries for s in runs} == {
        "extract": retries,
        "transform": 0,
        "validate": 0,
        "load": retries,
        "export": retries,
    }
