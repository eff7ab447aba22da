"""S3 throttling, 5xx and connection resets on read: retried with back-off; after the retries, a clear failure.

A loopback proxy sits between boto3 and moto's server and misbehaves for the first N object reads.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest

from sluice.adapters.storage import reset_clients
from sluice.cli.runner import run_ingest

pytestmark = pytest.mark.usefixtures("prefect_harness")

BODY = b"user,timestamp,hours,project\nned,2018-12-20 00:00:00 UTC,1.5,bizdev\n"


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = urlparse(upstream)
        self.failures_left = 0
        self.fault = "503"
        self.faults_served = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                is_object_read = self.command == "GET" and self.path.count("/") >= 2
                if is_object_read and proxy.failures_left > 0:
                    proxy.failures_left -= 1
                    proxy.faults_served += 1
                    if proxy.fault == "reset":
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                        self.connection.close()
                        return
                    code, error = (503, "SlowDown") if proxy.fault == "503" else (500, "InternalError")
                    body = f"<Error><Code>{error}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                conn.request(self.command, self.path, body=data, headers=dict(self.headers))
                response = conn.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def proxy(
    moto_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FaultyProxy, str]]:
    boto3.client("s3", endpoint_url=moto_endpoint).put_object(
        Bucket=s3_bucket, Key="tm/dailycheckins/in.csv", Body=BODY
    )
    faulty = FaultyProxy(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty.url)
    # Fewer, faster attempts than production so the test is quick; the mechanism is the same.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("SLUICE_RETRIES", "1")
    from sluice.settings import reload_settings

    reload_settings()
    reset_clients()
    yield faulty, f"s3://{s3_bucket}/tm/dailycheckins/in.csv"
    faulty.server.shutdown()
    reset_clients()


@pytest.mark.parametrize("fault", ["503", "500", "reset"])
def test_transient_s3_faults_are_retried(
    sluice_env: Path, proxy: tuple[FaultyProxy, str], fault: str
) -> None:
    faulty, uri = proxy
    faulty.fault, faulty.failures_left = fault, 3
    report = run_ingest(uri, dataset="dailycheckins")
    assert (report.status, report.rows_loaded) == ("success", 1)
    assert faulty.faults_served == 3


def test_persistent_s3_failure_is_a_clear_failure(sluice_env: Path, proxy: tuple[FaultyProxy, str]) -> None:
    faulty, uri = proxy
    faulty.fault, faulty.failures_left = "503", 10_000
    report = run_ingest(uri, dataset="dailycheckins")
    assert (report.status, report.state, report.rows_loaded) == ("failed", "extract", 0)
    assert "SlowDown" in report.error or "503" in report.error
    # botocore's own attempts (4+), times the task's 2 tries: back-off happened at both levels
    assert faulty.faults_served >= 4 * 2
