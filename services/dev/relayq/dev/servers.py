"""Local Redis, Sentinel and MongoDB servers on loopback, for `make run` and tests.

Each server runs as a child process in its own directory and is stopped by its
pid, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
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


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after the timeout; only this child, by its pid."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
        stop_process(self.process, timeout)

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


def mongo_server(
    workdir: Path, port: int | None = None, *extra: str, sync_on_commit: bool = True
) -> LocalServer:
    """The local MongoDB: secantusd-rs, a MongoDB wire-protocol server on WiredTiger.

    Its guarded updates are atomic per document, and with `--sync-on-commit`
    a write acknowledged with `j: true` survives a SIGKILL (without it, the
    conformance suite lost 21 of 153 such writes). tests/store_conformance holds
    it to both. The fsync per commit costs about 2.5x in guarded updates per
    second on this machine's disk; `sync_on_commit=False` (or
    RELAYQ_MONGO_SYNC_ON_COMMIT=0) trades that durability for speed, for
    experiments only. Production runs a real MongoDB replica set. `extra`
    arguments follow the others (e.g. `--tls-cert-file`).
    """
    sync_on_commit = sync_on_commit and os.environ.get("RELAYQ_MONGO_SYNC_ON_COMMIT") != "0"
    port = port or free_port()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        find_binary("secantusd-rs"),
        "--port", str(port),
        "--storage-path", str(data),
        "--cache-size", os.environ.get("RELAYQ_MONGO_CACHE_SIZE", "256M"),
        "--log-level", os.environ.get("RELAYQ_MONGO_LOG_LEVEL", "WARNING"),
        *(["--sync-on-commit"] if sync_on_commit else []),
        *extra,
    ]  # fmt: skip
    return LocalServer("mongo", port, workdir, argv)


def devchain_server(state_dir: Path, port: int | None = None, **opts: object) -> LocalServer:
    """`python -m relayq.devchain` (LiteSVM behind the Solana RPC and Jito APIs).

    Options map to its flags: slot_ms=50 -> --slot-ms 50, faults=True -> --faults;
    it writes <state_dir>/chain.json before it listens.
    """
    port = port or free_port()
    argv = [sys.executable, "-m", "relayq.devchain", "--port", str(port),
            "--state-dir", str(state_dir)]  # fmt: skip
    for name, value in opts.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return LocalServer("devchain", port, state_dir, argv)


def replica_server(
    workdir: Path,
    master_port: int,
    port: int | None = None,
    password: str | None = None,
    *extra: str,
) -> LocalServer:
    """A redis-server replicating the one on `master_port` (Sentinel may promote it)."""
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    server = redis_server(
        workdir, port, "--replicaof", "127.0.0.1", str(master_port), *auth, *extra
    )
    server.name = "replica"
    return server


def sentinel_server(
    workdir: Path,
    master_port: int,
    port: int | None = None,
    *,
    master_name: str = "mymaster",
    quorum: int = 2,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 3000,
    master_password: str | None = None,
    password: str | None = None,
    extra_lines: Sequence[str] = (),
) -> LocalServer:
    """A redis-sentinel watching the master on `master_port`, tuned to fail over in seconds.

    Sentinel rewrites its configuration file, so it lives in `workdir`. A second
    failover of the same master name waits twice `failover_timeout_ms`.
    `extra_lines` end the configuration (a later directive wins, e.g. `port 0`).
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f'dir "{workdir}"',
        f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}",
        f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
        f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
        f"sentinel parallel-syncs {master_name} 1",
    ]
    if master_password:
        lines.append(f"sentinel auth-pass {master_name} {master_password}")
    if password:
        lines.append(f"requirepass {password}")
    lines.extend(extra_lines)
    config = workdir / "sentinel.conf"
    config.write_text("\n".join(lines) + "\n")
    return LocalServer("sentinel", port, workdir, [find_binary("redis-sentinel"), str(config)])
