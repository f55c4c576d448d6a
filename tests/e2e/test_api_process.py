"""`relayq api` as a process: serves, drains an in-flight request on SIGTERM, and
serves its metrics on a port of their own."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from relayq.core.settings import Settings
from relayq.dev.servers import REPO_ROOT, free_port, wait_for_port
from tests.conftest import settings_env


@pytest.mark.slow
def test_sigterm_lets_an_in_flight_request_finish_then_exits_cleanly(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    # MongoDB on a closed port: each request spends the store's 2 s timeout in
    # flight, long enough to send SIGTERM while it is being handled.
    env = settings_env(
        settings,
        RELAYQ_API_PORT=str(port),
        RELAYQ_API_KEY="key-1",
        RELAYQ_MONGO_URL=f"mongodb://127.0.0.1:{free_port()}/",
    )
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "relayq.api"], env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )  # fmt: skip
    try:
        wait_for_port(port, api, 60)
        body = json.dumps({"type": "noop"}).encode()
        request = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer key-1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(request)
            time.sleep(0.5)
            api.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(OSError):  # no new connections while draining
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            reply = sock.recv(65536).decode()
        # The request in flight was answered (503: nothing accepted without the store).
        assert reply.startswith("HTTP/1.1 503"), reply
        assert "store-unavailable" in reply
        assert api.wait(30) == 0
    finally:
        if api.poll() is None:
            api.kill()
            api.wait()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
def test_metrics_are_served_on_their_own_port_and_not_on_the_public_one(
    settings: Settings, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    env = settings_env(
        settings, RELAYQ_API_PORT=str(port), RELAYQ_API_METRICS_PORT=str(metrics_port)
    )
    with (tmp_path / "api.log").open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "relayq.api"], env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )  # fmt: skip
    try:
        wait_for_port(port, api, 60)
        wait_for_port(metrics_port, api, 30)
        assert _get(port, "/healthz")[0] == 200

        public_status, public_body = _get(port, "/metrics")
        status, text = _get(metrics_port, "/metrics")
        openapi = json.loads(_get(port, "/openapi.json")[1])

        assert public_status == 404 and "relayq_" not in public_body
        assert status == 200 and 'relayq_dependency_up{dependency="redis"} 1.0' in text
        assert 'relayq_api_requests_total{method="GET",route="/healthz",status="200"}' in text
        assert "/metrics" not in openapi["paths"]
        assert _get(metrics_port, "/v1/tasks")[0] == 404  # nothing else on the metrics port
        api.send_signal(signal.SIGTERM)
        assert api.wait(30) == 0
    finally:
        if api.poll() is None:
            api.kill()
            api.wait()


def test_the_metrics_port_may_not_be_the_public_one(settings: Settings) -> None:
    env = settings_env(settings, RELAYQ_API_PORT="8181", RELAYQ_API_METRICS_PORT="8181")
    for args, environ in (
        ([], env),
        (["--port", "9100"], {**env, "RELAYQ_API_PORT": "8080", "RELAYQ_API_METRICS_PORT": "9100"}),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "relayq.api", *args], env=environ, capture_output=True,
            text=True, cwd=REPO_ROOT, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "RELAYQ_API_METRICS_PORT must differ from RELAYQ_API_PORT" in done.stderr
