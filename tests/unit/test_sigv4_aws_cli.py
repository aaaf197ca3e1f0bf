"""The real aws CLI against `verify`: its signed requests are accepted, a wrong secret is refused
with the error type and message it prints, and it finds what `write_aws_profile` wrote.

A small HTTP server on loopback stands in for the ECS API: it only checks the
signature and answers ListClusters; the aws CLI runs as a process, as an
operator would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from controlplane.aws_profile import write_aws_profile
from controlplane.ecs.sigv4 import SignatureError, SignedRequest, verify

AWS = Path(sys.executable).parent / "aws"
KEY = "AKIAABCDEFGHIJKLMNOP"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


class _Handler(BaseHTTPRequestHandler):
    # What the server verified, "KEY REGION TARGET" per request (reset per test).
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        path, _, query = self.path.partition("?")
        request = SignedRequest("POST", path, query, dict(self.headers.items()), body)
        try:
            verified = verify(request, lambda key: SECRET if key == KEY else None, time.time())
        except SignatureError as error:
            self._answer(error.status, {"__type": error.code, "message": str(error)})
            return
        self.seen.append(f"{verified.access_key_id} {verified.region} {self.headers['X-Amz-Target']}")
        self._answer(200, {"clusterArns": ["arn:aws:ecs:local:000000000000:cluster/default"]})

    def _answer(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def aws(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [str(AWS), *args], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_aws_cli_is_verified_and_a_wrong_secret_refused(endpoint: str, tmp_path: Path) -> None:
    keys = {"AWS_ACCESS_KEY_ID": KEY, "AWS_CONFIG_FILE": str(tmp_path / "none")}
    ok = aws(
        "ecs",
        "list-clusters",
        "--endpoint-url",
        endpoint,
        "--region",
        "eu-west-1",
        env={**keys, "AWS_SECRET_ACCESS_KEY": SECRET},
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["clusterArns"] == ["arn:aws:ecs:local:000000000000:cluster/default"]
    assert _Handler.seen == [f"{KEY} eu-west-1 AmazonEC2ContainerServiceV20141113.ListClusters"]
    wrong = aws(
        "ecs",
        "list-clusters",
        "--endpoint-url",
        endpoint,
        "--region",
        "eu-west-1",
        env={**keys, "AWS_SECRET_ACCESS_KEY": SECRET[::-1]},
    )
    assert wrong.returncode != 0
    assert "InvalidSignatureException" in wrong.stderr
    assert "The request signature we calculated does not match" in wrong.stderr


def test_the_aws_cli_uses_the_written_profile(endpoint: str, tmp_path: Path) -> None:
    write_aws_profile(tmp_path, "berth", endpoint, "local", KEY, SECRET, tmp_path / "ca.pem")
    files = {
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
    }
    result = aws("--profile", "berth", "ecs", "list-clusters", env=files)
    assert result.returncode == 0, result.stderr
    assert _Handler.seen == [f"{KEY} local AmazonEC2ContainerServiceV20141113.ListClusters"]
    assert json.loads(result.stdout)["clusterArns"]
