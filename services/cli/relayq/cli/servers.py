"""Local Redis, Sentinel and FerretDB servers on loopback, for `make run` and tests.

Each server runs as a child process in its own directory and is stopped by its
pid, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[4]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Block until something accepts on 127.0.0.1:port, or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode} before listening"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def find_binary(name: str) -> str:
    """The path of a server binary: .tools/bin first, then PATH."""
    local = TOOLS_BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found; run `make tools`")
    return found


@dataclass
class LocalServer:
    """A server child process listening on one loopback port.

    Attributes:
        name: what it is, for messages.
        port: the TCP port it listens on, on 127.0.0.1.
        workdir: its data directory, owned by this object.
        argv: the command line it was started with.
        process: the running child, once started.
    """

    name: str
    port: int
    workdir: Path
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> LocalServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            self.argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, self.process, timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after the timeout; only this child, by its pid."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 30.0) -> LocalServer:
        self.stop()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def redis_server(workdir: Path, port: int | None = None, *extra: str) -> LocalServer:
    """A redis-server with no persistence, ready to start."""
    port = port or free_port()
    argv = [
        find_binary("redis-server"),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "yes",
        *extra,
    ]  # fmt: skip
    return LocalServer("redis", port, workdir, argv)


def ferretdb_server(workdir: Path, port: int | None = None) -> LocalServer:
    """A FerretDB (SQLite backend) speaking the MongoDB wire protocol."""
    port = port or free_port()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        find_binary("ferretdb"),
        "--listen-addr", f"127.0.0.1:{port}",
        "--sqlite-url", f"file:{data}/?_txlock=immediate&_pragma=synchronous(normal)",
        "--log-level", os.environ.get("RELAYQ_FERRETDB_LOG_LEVEL", "warn"),
    ]  # fmt: skip
    return LocalServer("ferretdb", port, workdir, argv)
