"""The chart's Redis and Sentinel start scripts, run on real redis-server and redis-sentinel.

Each node gets its own loopback address (127.0.0.2-4 for Redis, 127.0.0.5-7 for
the Sentinels), as each pod has its own IP, so all share one port as in the
cluster. The scripts are taken from the rendered ConfigMap, not copied.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from redis import Redis
from redis.exceptions import ReadOnlyError, RedisError

from relayq.core.clients import redis_for
from relayq.core.ids import new_task_id
from relayq.core.keys import Keys
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue
from relayq.core.settings import Settings
from relayq.dev.servers import free_port
from tests.chart.render import RELEASE, template
from tests.kube.pki import issue_certificate, make_pki

PASSWORD = "s3cret-Pass"
MASTER_NAME = "relayq"
NODES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
SENTINELS = ["127.0.0.5", "127.0.0.6", "127.0.0.7"]


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except RedisError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Topology:
    """Scripts, ports and the processes this test started (stopped by pid)."""

    workdir: Path
    redis_port: int
    sentinel_port: int
    scripts: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # With TLS: TLS_DIR for the scripts, and the CA for this test's clients.
    tls_dir: Path | None = None

    def env(self, host: str, **extra: str) -> dict[str, str]:
        data = self.workdir / host
        data.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ["PATH"],
            "SELF": host,
            "INITIAL_MASTER": NODES[0],
            "SENTINELS": ",".join(f"{s}:{self.sentinel_port}" for s in SENTINELS),
            "MASTER_NAME": MASTER_NAME,
            "REDIS_PASSWORD": PASSWORD,
            "REDIS_PORT": str(self.redis_port),
            "SENTINEL_PORT": str(self.sentinel_port),
            "BIND": host,
            "DATA_DIR": str(data),
            "CONF_DIR": str(data),
            "MIN_REPLICAS_TO_WRITE": "1",
            "MIN_REPLICAS_MAX_LAG": "10",
            "MAXMEMORY": "64mb",
            "QUORUM": "2",
            "DOWN_AFTER_MS": "1000",
            "FAILOVER_TIMEOUT_MS": "5000",
        }
        if self.tls_dir is not None:
            env["TLS_DIR"] = str(self.tls_dir)
        env.update(extra)
        return env

    def start(self, script: str, host: str) -> None:
        # Written once: sh reads a script as it runs, so rewriting it under a
        # running shell would corrupt that shell's view of it.
        path = self.workdir / script
        for name, text in self.scripts.items():  # redis.sh and sentinel.sh source tls.sh
            if not (self.workdir / name).exists():
                (self.workdir / name).write_text(text)
        log = (self.workdir / f"{host}.log").open("ab")
        self.processes[host] = subprocess.Popen(
            ["/bin/sh", str(path)], env=self.env(host), stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self, host: str) -> None:
        process = self.processes.pop(host)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for host in list(self.processes):
            process = self.processes.pop(host)
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def _tls(self) -> dict[str, Any]:
        if self.tls_dir is None:
            return {}
        return {"ssl": True, "ssl_ca_certs": str(self.tls_dir / "ca.crt")}

    def redis(self, host: str) -> Redis:
        return Redis(host, self.redis_port, password=PASSWORD, socket_timeout=2, **self._tls())

    def sentinel(self, host: str) -> Redis:
        return Redis(host, self.sentinel_port, password=PASSWORD, socket_timeout=2, **self._tls())

    def master_seen_by_sentinels(self) -> str | None:
        """The master all three Sentinels agree on, if they do."""
        seen = set()
        for host in SENTINELS:
            addr = self.sentinel(host).execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
            )
            if not addr:
                return None
            seen.add(addr[0].decode())
        return seen.pop() if len(seen) == 1 else None

    def log(self, host: str) -> str:
        return (self.workdir / f"{host}.log").read_text(errors="replace")

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """_until, with the tail of every log in the failure (the machine may be busy)."""
        try:
            return _until(check, timeout, what)
        except AssertionError as exc:
            tails = "\n".join(
                f"--- {h}\n" + "\n".join(self.log(h).splitlines()[-15:])
                for h in [*NODES, *SENTINELS]
                if (self.workdir / f"{h}.log").exists()
            )
            raise AssertionError(f"{exc}\n{tails}") from None


def _port_free_on(hosts: list[str]) -> int:
    """A port no process holds on any of these addresses (nor on 0.0.0.0)."""
    for _ in range(50):
        port = free_port()
        sockets = []
        try:
            for host in hosts:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no port free on every address")


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, helm_home: Path) -> Iterator[Topology]:
    render = template(helm_home)
    scripts = render.get("ConfigMap", f"{RELEASE}-redis-scripts")
    assert scripts is not None
    topo = Topology(
        tmp_path_factory.mktemp("sentinel"),
        _port_free_on(NODES),
        _port_free_on(SENTINELS),
        scripts["data"],
    )
    yield topo
    topo.stop_all()


def _role(topo: Topology, host: str) -> dict[str, Any]:
    info: dict[str, Any] = topo.redis(host).info("replication")
    return info


def test_fresh_nodes_form_one_master_two_replicas_and_a_sentinel_quorum(topology: Topology) -> None:
    for host in NODES:
        topology.start("redis.sh", host)
    master = NODES[0]
    topology.wait(lambda: _role(topology, master)["connected_slaves"] == 2, 40, "two replicas")
    # min-replicas-to-write: writes wait for a replica that acknowledged lately.
    topology.wait(
        lambda: _role(topology, master)["min_slaves_good_slaves"] >= 1, 10, "a good replica"
    )
    for host in NODES[1:]:
        info = _role(topology, host)
        assert info["role"] == "slave" and info["master_host"] == master
    config = topology.redis(master).config_get("*")
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    assert config["min-replicas-to-write"] == "1"
    assert config["maxmemory-policy"] == "noeviction"
    topology.redis(master).set("probe", "1")
    with pytest.raises(ReadOnlyError):
        topology.redis(NODES[1]).set("probe", "2")
    with pytest.raises(RedisError, match=r"(?i)auth"):
        Redis(master, topology.redis_port, socket_timeout=2).set("probe", "3")

    for host in SENTINELS:
        topology.start("sentinel.sh", host)
    assert topology.wait(topology.master_seen_by_sentinels, 20, "the Sentinels to agree") == master

    def sentinels_know_each_other() -> bool:
        for host in SENTINELS:
            state = topology.sentinel(host).execute_command("SENTINEL", "MASTER", MASTER_NAME)
            fields = dict(zip(state[::2], state[1::2], strict=True))
            if int(fields[b"num-other-sentinels"]) != 2 or int(fields[b"num-slaves"]) != 2:
                return False
        return True

    topology.wait(sentinels_know_each_other, 30, "each Sentinel to see two others and two replicas")


def test_a_restarted_old_master_rejoins_as_a_replica_after_failover(topology: Topology) -> None:
    old = NODES[0]
    assert topology.master_seen_by_sentinels() == old, "runs after the topology test"
    topology.kill(old)
    new = topology.wait(
        lambda: (m := topology.master_seen_by_sentinels()) not in (None, old) and m,
        30,
        "the Sentinels to promote a replica",
    )
    assert new in NODES[1:]
    topology.wait(lambda: _role(topology, new)["role"] == "master", 10, "the promotion")

    # Pod 0 restarts: the Sentinels name the new master, so it does not come
    # back as a second master (which would split writes).
    topology.start("redis.sh", old)
    topology.wait(
        lambda: (
            _role(topology, old)["role"] == "slave"
            and _role(topology, old)["master_link_status"] == "up"
        ),
        20,
        "the old master to sync from the new one",
    )
    assert _role(topology, old)["master_host"] == new
    assert f"master {new}" in topology.log(old)
    assert topology.redis(old).get("probe") == b"1", "acknowledged data survived the failover"
    topology.wait(lambda: _role(topology, new)["connected_slaves"] == 2, 20, "two replicas again")


# -- TLS (redis.tls.enabled) ---------------------------------------------------


@pytest.fixture(scope="module")
def tls_topology(tmp_path_factory: pytest.TempPathFactory, helm_home: Path) -> Iterator[Topology]:
    """The TLS scripts, with a certificate naming every node and Sentinel address."""
    render = template(helm_home, sets={"redis.tls.enabled": "true"})
    scripts = render.get("ConfigMap", f"{RELEASE}-redis-scripts")
    assert scripts is not None
    workdir = tmp_path_factory.mktemp("sentinel-tls")
    pki = make_pki(workdir / "pki", "10.0.0.1")
    cert, key = issue_certificate(
        pki.ca_cert.parent, "redis", usage="serverAuth,clientAuth",
        sans=tuple(f"IP:{h}" for h in [*NODES, *SENTINELS]),
    )  # fmt: skip
    tls_dir = workdir / "tls"  # the chart mounts the Secret's keys under these names
    tls_dir.mkdir()
    for name, source in (("tls.crt", cert), ("tls.key", key), ("ca.crt", pki.ca_cert)):
        shutil.copy(source, tls_dir / name)
    topo = Topology(
        workdir, _port_free_on(NODES), _port_free_on(SENTINELS), scripts["data"], tls_dir=tls_dir
    )
    yield topo
    topo.stop_all()


async def test_with_tls_the_group_forms_and_relayq_dispatches_through_it(
    tls_topology: Topology,
) -> None:
    topo = tls_topology
    for host in NODES:
        topo.start("redis.sh", host)
    for host in SENTINELS:
        topo.start("sentinel.sh", host)
    master = NODES[0]
    # Replication over TLS: the replicas reached the master on its TLS port.
    topo.wait(lambda: _role(topo, master)["connected_slaves"] == 2, 40, "two replicas over TLS")
    topo.wait(lambda: _role(topo, master)["min_slaves_good_slaves"] >= 1, 10, "a good replica")
    assert topo.wait(topo.master_seen_by_sentinels, 20, "the Sentinels to agree") == master

    def quorum_over_tls() -> bool:
        # Sentinels find each other through the master and talk over TLS.
        for host in SENTINELS:
            state = topo.sentinel(host).execute_command("SENTINEL", "MASTER", MASTER_NAME)
            fields = dict(zip(state[::2], state[1::2], strict=True))
            if int(fields[b"num-other-sentinels"]) != 2:
                return False
        return True

    topo.wait(quorum_over_tls, 30, "each Sentinel to see the two others")
    # No plain port: a client without TLS gets nowhere.
    with pytest.raises(RedisError):
        Redis(master, topo.redis_port, password=PASSWORD, socket_timeout=2).ping()
    with pytest.raises(RedisError):
        Redis(SENTINELS[0], topo.sentinel_port, password=PASSWORD, socket_timeout=2).ping()

    # relayq as the chart configures it: a rediss:// URL with the CA and hostname
    # checking, the Sentinels' addresses, the password.
    assert topo.tls_dir is not None
    ca = quote(str(topo.tls_dir / "ca.crt"))
    settings = Settings.from_env(
        {
            "RELAYQ_REDIS_URL": f"rediss://:{PASSWORD}@{master}:{topo.redis_port}/0"
            f"?ssl_ca_certs={ca}&ssl_check_hostname=true",
            "RELAYQ_REDIS_SENTINELS": ",".join(f"{s}:{topo.sentinel_port}" for s in SENTINELS),
            "RELAYQ_REDIS_SENTINEL_MASTER": MASTER_NAME,
            "RELAYQ_REDIS_PASSWORD": PASSWORD,
            "RELAYQ_REDIS_SENTINEL_PASSWORD": PASSWORD,
        }
    )
    redis = redis_for(settings)
    try:
        queue = Queue(redis, Keys("tls"))
        task_id = new_task_id()
        await queue.enqueue(Priority.HIGH, Message(task_id, "noop"))
        claim = await queue.claim(Priority.HIGH, "w1", 1)
        assert [d.message.task_id for d in claim.deliveries] == [task_id]
    finally:
        await redis.aclose()
