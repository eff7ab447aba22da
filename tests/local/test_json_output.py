"""``--json``: stdout is exactly one JSON document on success and on every failure path, the exit code says which,
and the readable error goes to stderr without a traceback. Through the console script's thin client, both served by
the warm runner (the default) and in-process (``SLUICE_WARM=0``).

Real parts: ``python -m sluice`` in subprocesses, the home's Prefect server and embedded PostgreSQL; the unreachable
warehouse and Prefect API are closed loopback ports.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.local.test_services import _env
from tests.local.test_warm import home, runner_log, sluice  # noqa: F401 (`home` is the module's fixture)

pytestmark = pytest.mark.slow

WARM = pytest.mark.parametrize("warm", ["default", "0"])


def run_json(
    home: Path,  # noqa: F811 (the fixture)
    warm: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[int, Any, str]:
    environment = {**_env(home), **(env or {})}
    if warm != "default":
        environment["SLUICE_WARM"] = warm
    result: subprocess.CompletedProcess[str] = sluice(home, *args, "--json", env=environment)
    try:
        document = json.loads(result.stdout)  # the whole of stdout: one document, nothing before or after it
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"stdout is not one JSON document: {exc}\n{result.stdout!r}\n{result.stderr}"
        ) from None
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.returncode, document, result.stderr


def served(home: Path, command: str) -> bool:  # noqa: F811 (the fixture)
    return any(f": {command}" in line for line in runner_log(home).splitlines())


@WARM
def test_failures_before_any_run_are_one_json_document(home: Path, warm: str) -> None:  # noqa: F811
    code, doc, err = run_json(
        home, warm, "backfill", str(home / "no-such-prefix"), "--dataset", "dailycheckins"
    )
    assert code == 1 and doc["status"] == "failed" and "no-such-prefix" in doc["error"]
    assert "no-such-prefix" in err  # the readable line is still on stderr

    code, doc, _ = run_json(home, warm, "backfill", str(home), "--dataset", "no-such-dataset")
    assert (code, doc["status"], doc["exit_code"]) == (2, "failed", 2)
    assert "unknown dataset 'no-such-dataset'" in doc["error"]
    code, doc, _ = run_json(home, warm, "ingest", str(home / "x.csv"), "--dataset", "dailycheckin")
    assert (code, doc["status"], doc["exit_code"]) == (2, "failed", 2)
    assert "unknown dataset 'dailycheckin': did you mean 'dailycheckins'?" in doc["error"]

    code, doc, _ = run_json(home, warm, "ingest", str(home / "x.csv"), "--mode", "strict")
    assert (code, doc["status"], doc["exit_code"]) == (2, "failed", 2) and "--mode" in doc["error"]

    code, doc, err = run_json(home, warm, "ingest")  # no SOURCE: click's own usage error
    assert (code, doc["status"], doc["exit_code"]) == (2, "failed", 2) and "Missing argument" in err
    assert doc["error"] == "Missing argument 'source'."  # click's message itself, served warm or not
    if warm == "default":
        assert served(home, "backfill") and served(home, "ingest"), runner_log(home)[-2000:]


@WARM
def test_an_unreachable_warehouse_is_one_json_document(home: Path, warm: str) -> None:  # noqa: F811
    down = {"SLUICE_DATABASE_URL": f"postgresql+psycopg2://sluice:hunter2@127.0.0.1:{free_port()}/none"}
    code, doc, err = run_json(home, warm, "ledger", env=down)
    assert (
        code == 1
        and doc["status"] == "failed"
        and doc["error"].startswith("cannot connect to the warehouse: ")
    )
    assert "hunter2" not in json.dumps(doc) + err


@WARM
@pytest.mark.parametrize(
    "command", [("ingest", "landing/dailycheckins.csv", "-d", "dailycheckins"), ("analytics",)]
)
def test_an_unreachable_prefect_api_is_one_json_document(
    home: Path,  # noqa: F811
    warm: str,
    command: tuple[str, ...],
) -> None:
    source = home / "landing" / "dailycheckins.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("user,timestamp,hours,project\nned,2019-09-01 00:00:00 UTC,1,p\n", encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}/api"
    args = [str(source) if a == "landing/dailycheckins.csv" else a for a in command]
    code, doc, err = run_json(home, warm, *args, env={"PREFECT_API_URL": url})
    assert code == 1 and doc["status"] == "failed" and url in doc["error"] and url in err


@WARM
def test_successes_are_one_json_document(home: Path, warm: str) -> None:  # noqa: F811
    code, doc, _ = run_json(home, warm, "ledger")
    assert code == 0 and isinstance(doc, list)
    code, doc, _ = run_json(home, warm, "services", "status")
    assert code == 0 and doc["home"] == str(home.resolve())
