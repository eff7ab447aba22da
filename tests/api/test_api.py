"""The query API against the real PostgreSQL with check-ins loaded through Sluice's own load path."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from sluice.adapters.warehouse import get_engine
from sluice.api import create_app
from sluice.datasets.tm import DAILY_CHECKINS
from sluice.ledger import ensure_bookkeeping
from sluice.loading import ensure_target, load_file
from sluice.settings import get_settings
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2019, 9, 1, tzinfo=UTC)


def load(rows: list[tuple[str, str, float, datetime]]) -> None:
    engine = get_engine()
    ensure_bookkeeping(engine)
    ensure_target(engine, DAILY_CHECKINS)
    frame = pd.DataFrame(rows, columns=["username", "project", "hours", "timestamp"])
    frame["_source_row"] = range(1, len(frame) + 1)
    load_file(
        engine,
        DAILY_CHECKINS,
        ingestion_id=uuid.uuid4(),
        source="test://api",
        sha256=hashlib.sha256(repr(rows).encode()).hexdigest(),
        frames=[frame],
    )


@pytest.fixture
def loaded(sluice_env: Path) -> Iterator[None]:
    rows = [("ned", "bizdev", 4.0, START + timedelta(hours=h)) for h in (5, 1, 3, 2, 4)]
    rows += [("arya", "infra", 1.5, START + timedelta(days=1))]
    rows += [("jaime", "security", 0.25, START + timedelta(minutes=m)) for m in range(250)]
    load(rows)
    yield


@pytest.fixture
def client(loaded: None) -> TestClient:
    return TestClient(create_app(get_settings()))


def count() -> int:
    with get_engine().connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM tm.daily_checkins")).scalar_one()


def test_one_users_checkins_ordered_with_numbers_and_iso_utc(client: TestClient) -> None:
    for path in ("/get", "/Prod/get"):
        r = client.get(path, params={"user": "ned"})
        assert r.status_code == 200
        body = r.json()["response"]
        assert [c["timestamp"] for c in body] == [f"2019-09-01T0{h}:00:00Z" for h in (1, 2, 3, 4, 5)]
        assert body[0] == {
            "user": "ned",
            "project": "bizdev",
            "hours": 4.0,
            "timestamp": "2019-09-01T01:00:00Z",
        }
        assert all(isinstance(c["hours"], float) for c in body)


def test_unknown_user_is_an_empty_list(client: TestClient) -> None:
    r = client.get("/get", params={"user": "nobody"})
    assert (r.status_code, r.json()) == (200, {"response": []})


@pytest.mark.parametrize("params", [{}, {"user": ""}, {"user": "   "}])
def test_missing_or_blank_user_is_400(client: TestClient, params: dict[str, str]) -> None:
    r = client.get("/Prod/get", params=params)
    assert r.status_code == 400
    assert r.json()["message"] == "error bad request"


def test_pagination_bounds(client: TestClient) -> None:
    first = client.get("/get", params={"user": "jaime"}).json()["response"]
    assert len(first) == 100  # default limit
    page = client.get("/get", params={"user": "jaime", "limit": 1000, "offset": 200}).json()["response"]
    assert len(page) == 50
    assert page[0]["timestamp"] == (START + timedelta(minutes=200)).isoformat().replace("+00:00", "Z")
    assert client.get("/get", params={"user": "jaime", "offset": 250}).json() == {"response": []}
    for bad in ({"limit": 1001}, {"limit": 0}, {"offset": -1}, {"limit": "ten"}):
        r = client.get("/get", params={"user": "jaime", **bad})
        assert r.status_code == 400, bad
        assert r.json()["message"] == "error bad request"


def test_from_and_to(client: TestClient) -> None:
    r = client.get(
        "/get", params={"user": "ned", "from": "2019-09-01T02:00:00Z", "to": "2019-09-01T04:00:00Z"}
    )
    assert [c["timestamp"][11:13] for c in r.json()["response"]] == ["02", "03"]
    naive = client.get("/get", params={"user": "ned", "from": "2019-09-01T05:00:00"})  # no zone: UTC
    assert len(naive.json()["response"]) == 1
    assert client.get("/get", params={"user": "ned", "from": "yesterday"}).status_code == 400


def test_times_are_iso_8601_only_never_a_bare_number(client: TestClient) -> None:
    """pydantic's lax datetime read a number as Unix seconds (or milliseconds): ``from=20190901``, an ISO 8601
    basic date, meant 1970-08-22 and answered a wrong 200."""

    def hours(**params: str) -> list[str]:
        r = client.get("/get", params={"user": "ned", **params})
        assert r.status_code == 200, r.text
        return [c["timestamp"][11:13] for c in r.json()["response"]]

    assert (
        hours(**{"from": "20190901T030000Z"})
        == hours(**{"from": "2019-09-01T03:00:00Z"})
        == ["03", "04", "05"]
    )
    assert hours(to="20190902") == hours(to="2019-09-02") == ["01", "02", "03", "04", "05"]
    assert hours(to="20190901") == []
    for number in ("1567306800", "1567306800000", "1567306800.5"):
        for name in ("from", "to"):
            r = client.get("/get", params={"user": "ned", name: number})
            assert (r.status_code, r.json().get("fields")) == (400, [name]), (name, number, r.text)
    # finer than a microsecond (the check-ins' precision): rounded up, so >= from and < to select exactly
    assert hours(**{"from": "2019-09-01T02:00:00.000000001Z"}) == ["03", "04", "05"]
    assert hours(**{"from": "2019-09-01T02:00:00Z", "to": "2019-09-01T02:00:00.0000001Z"}) == ["02"]
    assert hours(**{"from": "2019-09-01T02:00:00.0000000Z"}) == ["02", "03", "04", "05"]


@pytest.mark.parametrize(
    "hostile",
    [
        "ned' OR '1'='1",
        "ned'; DROP TABLE tm.daily_checkins; --",
        "%",
        "ned%",
        "x" * 10_000,
        "Дейенерис 🐉",
        "ned\x00",
        "\x00",
        "' UNION SELECT usename, passwd, 1, now() FROM pg_shadow --",
    ],
)
def test_hostile_user_values_are_answered_safely(client: TestClient, hostile: str) -> None:
    before = count()
    r = client.get("/get", params={"user": hostile})
    assert r.status_code == 200
    assert r.json() == {"response": []}
    assert count() == before


def test_api_key_required_when_configured_and_never_logged(
    loaded: None, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "sentinel-api-key-" + uuid.uuid4().hex
    settings = get_settings().model_copy(update={"api_key": SecretStr(key)})
    client = TestClient(create_app(settings))
    caplog.set_level(logging.DEBUG)
    assert client.get("/get", params={"user": "ned"}).status_code == 401
    assert client.get("/get", params={"user": "ned"}, headers={"X-API-Key": "wrong"}).status_code == 401
    ok = client.get("/get", params={"user": "ned"}, headers={"X-API-Key": key})
    assert ok.status_code == 200 and len(ok.json()["response"]) == 5
    assert client.get("/Prod/get", params={"user": "ned"}).json() == {"message": "unauthorized"}
    out = capsys.readouterr()
    assert key not in caplog.text and key not in out.out and key not in out.err
    assert key not in client.get("/openapi.json").text


def test_health_checks_the_database(loaded: None) -> None:
    assert TestClient(create_app(get_settings())).get("/health").json() == {"status": "ok", "database": "up"}
    down = get_settings().model_copy(
        update={"database_url": SecretStr(f"postgresql+psycopg2://u:p@127.0.0.1:{free_port()}/none")}
    )
    r = TestClient(create_app(down)).get("/health")
    assert r.status_code == 503 and r.json()["database"] == "down"
    assert r.headers["Retry-After"] == "5"  # as every 503 of the API
    assert "p@127" not in r.text


def test_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    params = {p["name"]: p for p in schema["paths"]["/get"]["get"]["parameters"]}
    assert {"user", "limit", "offset", "from", "to"} <= set(params)
    # the document says what the API answers: `user` required, a bad parameter 400 (never FastAPI's 422), the key a
    # security scheme (Swagger's "Authorize" sends it; it was a hidden header, so "Try it out" always got 401)
    assert params["user"]["required"] is True
    assert set(schema["paths"]["/get"]["get"]["responses"]) == {"200", "400", "401"}
    assert "503" in schema["paths"]["/health"]["get"]["responses"]
    assert schema["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The API key, when one is configured.",
    }


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_api_key_set_but_empty_is_refused_not_an_open_api(loaded: None, empty: str) -> None:
    from sluice.errors import ConfigurationError

    settings = get_settings().model_copy(update={"api_key": SecretStr(empty)})
    with pytest.raises(ConfigurationError, match="SLUICE_API_KEY is set but empty"):
        create_app(settings)
    assert TestClient(create_app(get_settings())).get("/get", params={"user": "ned"}).status_code == 200


@pytest.mark.parametrize("key", ["k€y", "key\n", " key", "ke\ty"])
def test_an_api_key_no_header_can_carry_is_refused_at_start(loaded: None, key: str) -> None:
    """`SLUICE_API_KEY='k€y'` was served ("requests need X-API-Key") and every request with that key got 401: a
    header's bytes arrive as Latin-1, and its spaces around it are dropped. A key a client can send still works."""
    from sluice.errors import ConfigurationError

    settings = get_settings().model_copy(update={"api_key": SecretStr(key)})
    with pytest.raises(
        ConfigurationError, match="SLUICE_API_KEY holds characters an X-API-Key header cannot"
    ):
        create_app(settings)
    sendable = get_settings().model_copy(update={"api_key": SecretStr("k3y-!~ with inner space")})
    client = TestClient(create_app(sendable))
    assert (
        client.get(
            "/get", params={"user": "ned"}, headers={"X-API-Key": "k3y-!~ with inner space"}
        ).status_code
        == 200
    )
    assert client.get("/get", params={"user": "ned"}).status_code == 401


@pytest.mark.usefixtures("prefect_harness")
def test_an_api_key_block_that_cannot_be_read_is_one_readable_error(loaded: None) -> None:
    """It was a 70-line traceback (``ValueError: Unable to find block document named …``)."""
    from prefect.blocks.system import Secret

    from sluice.errors import ConfigurationError

    missing = f"no-such-key-{uuid.uuid4().hex[:6]}"
    settings = get_settings().model_copy(update={"api_key": None, "api_key_block": missing})
    with pytest.raises(ConfigurationError) as raised:
        create_app(settings)
    assert str(raised.value).startswith(
        f"SLUICE_API_KEY_BLOCK={missing}: cannot read the Secret block '{missing}' ("
    )
    assert "\n" not in str(raised.value)

    Secret(value="").save(f"{missing}-empty")
    with pytest.raises(ConfigurationError, match="is empty"):
        create_app(settings.model_copy(update={"api_key_block": f"{missing}-empty"}))
    key = "block-key-" + uuid.uuid4().hex
    Secret(value=key).save(f"{missing}-set")
    client = TestClient(create_app(settings.model_copy(update={"api_key_block": f"{missing}-set"})))
    assert client.get("/get", params={"user": "ned"}).status_code == 401
    assert client.get("/get", params={"user": "ned"}, headers={"X-API-Key": key}).status_code == 200


@pytest.mark.parametrize("json_logs", [False, True])
def test_sluice_api_command_serves_http(loaded: None, json_logs: bool) -> None:
    """On ``--port 0`` it says the port the system gave (it printed ``:0``), whether a key is required, and it
    logs each request (the access log was off: uvicorn's at warning level). In the image (``SLUICE_JSON_LOGS``)
    every line it writes is one JSON object, the start line and uvicorn's access lines too (they were text)."""
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_API_KEY", "SLUICE_API_KEY_BLOCK")}
    env["SLUICE_JSON_LOGS"] = "true" if json_logs else "false"
    server = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "api", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        banner = json.loads(first)["message"] if json_logs else first.rstrip()
        assert banner.startswith("Sluice query API on http://127.0.0.1:"), first
        assert banner.endswith("no API key: open to whoever reaches it)"), first
        port = int(banner.split("127.0.0.1:")[1].split()[0])
        assert port > 0, banner
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/Prod/get", params={"user": "arya"}, timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
        status, body = r.status_code, r.json() if r.status_code == 200 else r.text
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert status == 200, output[-3000:]
    assert body["response"][0]["user"] == "arya"
    assert "Traceback" not in output
    access = '"GET /Prod/get?user=arya HTTP/1.1" 200'
    if json_logs:
        records = [json.loads(line) for line in output.splitlines() if line.strip()]  # each line one object
        assert any(access in r["message"] and r["logger"] == "uvicorn.access" for r in records), output[
            -3000:
        ]
    else:
        assert access in output, output[-3000:]


def test_sluice_api_on_a_port_in_use_is_one_readable_line() -> None:
    import os
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sluice.cli", "api", "--port", str(port)],
            cwd=ROOT,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""  # no banner for a server that never listened
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another process listens there: "
        "stop it or pass --port)"
    ]
