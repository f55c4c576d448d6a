"""A Redis master, a replica and three Sentinels on loopback, for failover tests.

Each server is a child process stopped by its pid. `failover()` asks Sentinel
to switch over; `kill_master()` SIGKILLs the master, as a lost node would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from relayq.dev.servers import (
    LocalServer,
    free_port,
    redis_server,
    replica_server,
    sentinel_server,
)
from tests.kube.pki import ClusterPki

MASTER_NAME = "mymaster"


@dataclass
class RedisGroup:
    """Two data servers (one master, one replica at any time) and three Sentinels."""

    workdir: Path
    password: str | None = None
    sentinel_password: str | None = None
    master_name: str = MASTER_NAME
    tls: ClusterPki | None = None
    servers: list[LocalServer] = field(default_factory=list)
    sentinels: list[LocalServer] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> RedisGroup:
        auth = ("--requirepass", self.password, "--masterauth", self.password)
        port = free_port()
        master = redis_server(
            self.workdir / "redis-a", port, *(auth if self.password else ()), *self._tls_args(port)
        )
        self.servers.append(master.start())
        port = free_port()
        replica = replica_server(
            self.workdir / "redis-b", master.port, port, self.password, *self._tls_args(port)
        )
        self.servers.append(replica.start())
        for i in range(3):
            port = free_port()
            s = sentinel_server(
                self.workdir / f"sentinel-{i}",
                master.port,
                port,
                master_name=self.master_name,
                master_password=self.password,
                password=self.sentinel_password,
                extra_lines=[" ".join(pair) for pair in _pairs(self._tls_args(port))],
            )
            self.sentinels.append(s.start())
        self.wait_ready(timeout)
        return self

    def _tls_args(self, port: int) -> tuple[str, ...]:
        """TLS on `port` and no plain port; replication (and Sentinel's links) over TLS."""
        if self.tls is None:
            return ()
        return (
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(self.tls.serving_cert),
            "--tls-key-file", str(self.tls.serving_key),
            "--tls-ca-cert-file", str(self.tls.ca_cert),
            "--tls-auth-clients", "no", "--tls-replication", "yes",
        )  # fmt: skip

    def _client_tls(self) -> dict[str, Any]:
        if self.tls is None:
            return {}
        return {"ssl": True, "ssl_ca_certs": str(self.tls.ca_cert)}

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", s.port) for s in self.sentinels)

    @property
    def sentinels_env(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.addresses)

    def _sentinel(self, server: LocalServer) -> SyncRedis:
        return SyncRedis(
            port=server.port, password=self.sentinel_password, decode_responses=True,
            socket_timeout=2, **self._client_tls(),
        )  # fmt: skip

    def data_client(self, port: int) -> SyncRedis:
        return SyncRedis(
            port=port, password=self.password, decode_responses=True, socket_timeout=2,
            **self._client_tls(),
        )  # fmt: skip

    def master_port(self) -> int:
        """The master's port as a running Sentinel reports it."""
        for s in self.sentinels:
            if not s.running:
                continue
            try:
                _, port = self._sentinel(s).sentinel_get_master_addr_by_name(self.master_name)
                return int(port)
            except (RedisError, TypeError):
                continue
        raise RuntimeError("no Sentinel answers")

    def master(self) -> LocalServer:
        port = self.master_port()
        return next(s for s in self.servers if s.port == port)

    def replica(self) -> LocalServer:
        port = self.master_port()
        return next(s for s in self.servers if s.port != port)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every Sentinel knows the other two and a replica in sync: a failover can run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._sentinel_ready(s) for s in self.sentinels if s.running):
                return
            time.sleep(0.2)
        raise TimeoutError("the Sentinel group did not settle")

    def _sentinel_ready(self, server: LocalServer) -> bool:
        try:
            c = self._sentinel(server)
            master = c.sentinel_master(self.master_name)
            replicas = c.sentinel_slaves(self.master_name)
            others = c.sentinel_sentinels(self.master_name)
        except RedisError:
            return False
        if master.get("is_sdown") or master.get("is_odown"):
            return False
        running = sum(1 for s in self.sentinels if s.running) - 1
        good = [
            r for r in replicas
            if not r.get("is_sdown") and r.get("master-link-status") == "ok"
        ]  # fmt: skip
        return bool(good) and len(others) >= running

    def failover(self, timeout: float = 30.0) -> tuple[int, int]:
        """Ask Sentinel to promote the replica; returns (old, new) master ports."""
        old = self.master_port()
        self._sentinel(self.sentinels[0]).execute_command("SENTINEL", "FAILOVER", self.master_name)
        return old, self.wait_master_change(old, timeout)

    def kill_master(self, timeout: float = 30.0) -> tuple[int, int]:
        """SIGKILL the master; returns (old, new) master ports once a replica took over."""
        old = self.master()
        old.kill()
        return old.port, self.wait_master_change(old.port, timeout)

    def wait_master_change(self, old_port: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port != old_port:
                # Wait until the new master accepts writes (promotion finished).
                try:
                    role = self.data_client(port).execute_command("ROLE")
                    if role and role[0] == "master":
                        return port
                except RedisError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"no new master within {timeout}s")

    def restart_stopped(self) -> None:
        """Start data servers that were killed; Sentinel turns each into a replica."""
        for s in self.servers:
            if not s.running:
                s.start()

    def stop(self) -> None:
        for s in [*self.sentinels, *self.servers]:
            s.stop()


def _pairs(args: tuple[str, ...]) -> list[tuple[str, str]]:
    """`--name value` command-line pairs as (name, value), for a configuration file."""
    return [(args[i].removeprefix("--"), args[i + 1]) for i in range(0, len(args), 2)]
