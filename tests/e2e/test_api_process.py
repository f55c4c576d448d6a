"""`relayq api` as a process: serves, and drains an in-flight request on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
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
