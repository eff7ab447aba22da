"""A command whose home's Prefect server was stopped by `sluice services stop` while it ran says so, in one line:
it said "ConnectError ... (is the Prefect server running? ...)", as if the server had died by itself.

The marker is written by the real ``services.stop_prefect_server``, stopping a stand-in process recorded as the
home's server (no Prefect server needed); the error is httpx's own, as Prefect's client raises it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from sluice import services
from sluice.cli.output import unreachable

PORT = 4399


@pytest.fixture
def stopped_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home whose recorded Prefect server (a stand-in process on PORT) `services stop` stopped just now."""
    home = tmp_path / "home"
    services.prefect_dir(home).mkdir(parents=True)
    stand_in = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        created = psutil.Process(stand_in.pid).create_time()
        services._write_state(
            home, services.PrefectServer(pid=stand_in.pid, port=PORT, create_time=created, home=str(home))
        )
        assert services.stop_prefect_server(home) is not None
        stand_in.wait(timeout=15)
        monkeypatch.setenv("SLUICE_HOME", str(home))
        yield home
    finally:
        stand_in.kill()
        stand_in.wait()


def refused(port: int, host: str = "127.0.0.1") -> httpx.ConnectError:
    request = httpx.Request("POST", f"http://{host}:{port}/api/flow_runs/0b1c/set_state")
    return httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_a_request_to_the_stopped_server_says_services_stop_ended_the_run(stopped_home: Path) -> None:
    line = unreachable(refused(PORT))
    assert line == (
        f"the home's Prefect server (http://127.0.0.1:{PORT}/api) was stopped (`sluice services stop`) while this "
        "command ran; `sluice ledger` shows how far the run got. Run the same command again: nothing is loaded twice"
    )


def test_another_server_or_an_older_stop_is_the_plain_unreachable_line(stopped_home: Path) -> None:
    for exc in (refused(PORT + 1), refused(PORT, host="prefect.example.com")):
        line = unreachable(exc)
        assert line is not None and "is the Prefect server running?" in line and "services stop" not in line

    # stopped before this process started: a server that is down, not one stopped under this command
    marker = services.prefect_dir(stopped_home) / services.PREFECT_STOPPED
    past = psutil.Process().create_time() - 60
    os.utime(marker, (past, past))
    line = unreachable(refused(PORT))
    assert line is not None and "is the Prefect server running?" in line


def test_a_home_with_nothing_stopped_is_the_plain_unreachable_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "never-used"))
    line = unreachable(refused(PORT))
    assert line is not None and "is the Prefect server running?" in line
    assert not services.prefect_dir(tmp_path / "never-used").exists()  # looked, created nothing
