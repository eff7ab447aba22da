"""The query API as its clients see it: a real uvicorn server on a loopback port, real HTTP clients (httpx, urllib,
raw sockets), the real PostgreSQL. What a client of the API Gateway + Lambda original expects, point by point."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from sluice.api import create_app
from sluice.settings import get_settings
from tests.api.test_api import START, load
from tests.conftest import free_port


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` behind a real uvicorn server in a thread, as ``sluice api`` serves it; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def base(sluice_env: object) -> Iterator[str]:
    rows = [("ned", "bizdev", 4.0, START + timedelta(hours=h)) for h in (5, 1, 3, 2, 4)]
    rows += [
        ("jaime", "security", 0.25, START + timedelta(minutes=m % 125)) for m in range(250)
    ]  # equal times
    rows += [
        ("ned stark", "north", 1.25, START),
        ("a+b", "x", 3.0, START),
        ("Дейенерис", "драконы", 2.0, START),
    ]
    load(rows)
    with serving(create_app(get_settings())) as url:
        yield url


def users(body: dict[str, list[dict[str, object]]]) -> set[object]:
    return {c["user"] for c in body["response"]}


def test_database_down_is_one_readable_503_and_no_traceback_in_the_server_log(
    sluice_env: object, caplog: pytest.LogCaptureFixture
) -> None:
    down = get_settings().model_copy(
        update={"database_url": SecretStr(f"postgresql+psycopg2://u:hunter2@127.0.0.1:{free_port()}/none")}
    )
    caplog.set_level(logging.INFO)
    with serving(create_app(down)) as url:
        for path in ("/get", "/Prod/get"):
            r = httpx.get(f"{url}{path}", params={"user": "ned"})
            assert (r.status_code, r.json()) == (503, {"message": "service unavailable"})
            assert r.headers["content-type"] == "application/json"
            assert int(r.headers["retry-after"]) > 0
            assert "hunter2" not in r.text
        assert httpx.get(f"{url}/health").status_code == 503
    assert all(record.exc_info is None for record in caplog.records), "a traceback was logged"
    assert "Traceback" not in caplog.text and "hunter2" not in caplog.text
    assert "database unavailable" in caplog.text


def test_a_cut_page_links_the_next_one_and_the_pages_hold_every_row_once_in_order(base: str) -> None:
    seen: list[tuple[str, str]] = []
    url: str | None = f"{base}/Prod/get?user=jaime"
    pages = 0
    while url is not None:
        r = httpx.get(url)
        assert r.status_code == 200
        seen += [(c["timestamp"], c["project"]) for c in r.json()["response"]]
        link = r.headers.get("link")
        url = None if link is None else base + link.split(";")[0].strip("<>")
        pages += 1
    assert pages == 3 and len(seen) == 250  # 100 + 100 + 50: nothing lost or repeated at the cuts
    assert [t for t, _ in seen] == sorted(t for t, _ in seen)
    r = httpx.get(f"{base}/get", params={"user": "jaime", "limit": 250})
    assert "link" not in r.headers  # the whole set: no next page
    last = httpx.get(f"{base}/get", params={"user": "jaime", "limit": 125, "offset": 125})
    assert len(last.json()["response"]) == 125 and "link" not in last.headers


def test_paths_with_a_trailing_slash_are_served_not_redirected(base: str) -> None:
    plain = httpx.get(f"{base}/Prod/get", params={"user": "ned"})
    for path in ("/Prod/get/", "/get/"):
        r = httpx.get(f"{base}{path}", params={"user": "ned"})
        assert r.status_code == 200, (path, r.status_code, r.headers.get("location"))
        assert r.json() == plain.json()
    assert httpx.get(f"{base}/health/").json() == {"status": "ok", "database": "up"}


def test_head_answers_like_get_without_a_body(base: str) -> None:
    for path in ("/Prod/get?user=ned", "/get?user=ned", "/health"):
        r = httpx.head(f"{base}{path}")
        assert r.status_code == 200, path
        assert r.headers["content-type"] == "application/json" and r.content == b""
    assert httpx.head(f"{base}/get").status_code == 400


def test_other_errors_have_the_message_shape_of_the_original(base: str) -> None:
    r = httpx.get(f"{base}/Prod/nothing-here")
    assert (r.status_code, r.json()) == (404, {"message": "not found"})
    r = httpx.post(f"{base}/Prod/get", params={"user": "ned"})
    assert (r.status_code, r.json()) == (405, {"message": "method not allowed"})
    assert r.headers["allow"] == "GET, HEAD"
    r = httpx.delete(f"{base}/health")
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")


def test_query_string_decoding_as_api_gateway_does_it(base: str) -> None:
    def get(query: str) -> set[object]:
        with urllib.request.urlopen(f"{base}/Prod/get?{query}") as r:
            assert r.status == 200
            return users(json.loads(r.read()))

    assert get("user=ned+stark") == get("user=ned%20stark") == {"ned stark"}  # `+` is a space
    assert get("user=a%2Bb") == {"a+b"} and get("user=a+b") == set()
    assert get(urllib.parse.urlencode({"user": "Дейенерис"})) == {"Дейенерис"}
    assert get("user=NED") == set() and get("user=%20ned") == set()  # exact match: case and spaces count
    assert get("user=nobody&user=ned") == {"ned"}  # repeated: the last one, as queryStringParameters holds


def test_json_body_types_and_encoding(base: str) -> None:
    r = httpx.get(f"{base}/get", params={"user": "Дейенерис"})
    assert r.headers["content-type"] == "application/json"
    body = json.loads(r.content.decode("utf-8"))
    assert body == {
        "response": [
            {"user": "Дейенерис", "project": "драконы", "hours": 2.0, "timestamp": "2019-09-01T00:00:00Z"}
        ]
    }
    assert isinstance(body["response"][0]["hours"], float)


def test_twenty_parallel_clients_get_their_own_answers(base: str) -> None:
    names = ["ned", "jaime", "ned stark", "nobody", "Дейенерис"] * 4

    def ask(name: str) -> tuple[str, int, set[object], int]:
        r = httpx.get(f"{base}/Prod/get", params={"user": name, "limit": 1000}, timeout=60)
        return name, r.status_code, users(r.json()), len(r.json()["response"])

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, names))
    expected = {"ned": 5, "jaime": 250, "ned stark": 1, "nobody": 0, "Дейенерис": 1}
    for name, status, seen, n in answers:
        assert status == 200 and n == expected[name] and seen <= {name}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"offset": str(2**64)}, "offset"),  # past PostgreSQL's bigint OFFSET
        ({"from": "0001-01-01T00:00:00+14:00"}, "from"),  # valid ISO 8601, before year 1 in UTC
        ({"to": "9999-12-31T23:00:00-05:00"}, "to"),  # after year 9999 in UTC
    ],
)
def test_out_of_range_parameters_are_400_not_500(
    base: str, params: dict[str, str], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    r = httpx.get(f"{base}/Prod/get", params={"user": "ned", **params})
    assert (r.status_code, r.json()) == (400, {"message": "error bad request", "fields": [field]})
    assert all(record.exc_info is None for record in caplog.records), "a traceback was logged"
