"""Redis over TLS: a real redis-server listening only on a TLS port, reached with
a `rediss://` URL whose `ssl_ca_certs` names the CA (as the chart's
`redis.external.tls` option configures it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from relayq.core.clients import RedisTarget, connect_redis, redis_for
from relayq.core.ids import new_task_id
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue
from relayq.core.settings import Settings
from relayq.dev.servers import LocalServer, free_port, redis_server
from relayq.operator.queue_reading import RedisPools, read_queue
from tests.kube.pki import ClusterPki, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> ClusterPki:
    # A CA and a serving certificate for 127.0.0.1 (the service IP is unused here).
    return make_pki(tmp_path / "pki", "10.0.0.1")


@pytest.fixture
def tls_redis(tmp_path: Path, pki: ClusterPki) -> Iterator[LocalServer]:
    """redis-server with no plain port: TLS only, clients need not present a certificate."""
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = redis_server(
        workdir, port,
        "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(pki.serving_cert), "--tls-key-file", str(pki.serving_key),
        "--tls-ca-cert-file", str(pki.ca_cert), "--tls-auth-clients", "no",
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


def tls_url(server: LocalServer, ca: Path) -> str:
    return f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={quote(str(ca))}"


async def test_queue_round_trip_over_tls(tls_redis: LocalServer, pki: ClusterPki) -> None:
    redis = connect_redis(tls_url(tls_redis, pki.ca_cert))
    try:
        queue = Queue(redis)
        await queue.enqueue(Priority.HIGH, Message(new_task_id(), "noop"))
        assert await queue.backlog(Priority.HIGH) == 1
    finally:
        await redis.aclose()


async def test_processes_and_the_operator_connect_from_the_url_alone(
    tls_redis: LocalServer, pki: ClusterPki
) -> None:
    url = tls_url(tls_redis, pki.ca_cert)
    # A process reads RELAYQ_REDIS_URL; the operator reads the same URL from its Secret.
    redis = redis_for(Settings.from_env({"RELAYQ_REDIS_URL": url}))
    try:
        await Queue(redis).enqueue(Priority.LOW, Message(new_task_id(), "noop"))
    finally:
        await redis.aclose()
    pools = RedisPools()
    try:
        reading = await read_queue(pools.queue(RedisTarget(url=url), "relayq"), Priority.LOW)
        assert reading.snapshot.backlog == 1
    finally:
        await pools.close()


async def test_no_connection_to_a_server_whose_certificate_is_not_trusted(
    tls_redis: LocalServer, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other", "10.0.0.1")
    redis = connect_redis(tls_url(tls_redis, other.ca_cert), socket_timeout=2.0)
    try:
        with pytest.raises((RedisConnectionError, OSError), match="certificate verify failed"):
            await redis.ping()
    finally:
        await redis.aclose()
