"""A saved SNS block works from a fresh process, as README's "Alerts" commands use it.

In-process tests import ``SnsNotification`` themselves, which registers the block class; a new ``sluice`` process
(a user's shell, an ECS task) has not, so these run the command in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.notify.conftest import Topic

ROOT = Path(__file__).resolve().parents[2]


def sluice(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.usefixtures("prefect_harness")
def test_sns_block_from_a_fresh_process(sns_topic: Topic, sluice_env: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    name = f"ops-{uuid.uuid4().hex[:6]}"
    added = sluice("notify", "add-sns", name, "--topic-arn", sns_topic.arn, env=env)
    assert added.returncode == 0, added.stdout + added.stderr

    tested = sluice("notify", "test", name, env=env)  # README: `sluice notify test ops-alerts`
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Traceback" not in tested.stderr
    [message] = sns_topic.drain()
    assert message["Subject"] == "[sluice] test notification"

    source = sluice_env / "landing" / "dailycheckins.csv"
    source.parent.mkdir(parents=True)
    source.write_text(
        "user,timestamp,hours,project\nned,2019-09-27 00:00:00 UTC,1.5,bizdev\n", encoding="utf-8"
    )
    ingest = sluice(
        "ingest", str(source), "--json", env={**env, "SLUICE_NOTIFY_BLOCKS": f"sns-notification/{name}"}
    )
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    [alert] = (
        sns_topic.drain()
    )  # a run's alert reaches SNS: the hook loads the block in the run's own process
    assert json.loads(alert["Message"])["status"] == "Ingestion Success"
