"""Redis through Sentinel over TLS: a master, a replica and three Sentinels that
listen on TLS ports only (`port 0`), replicate and monitor over TLS, as the
chart's `redis.tls.enabled` runs them. A `rediss://` URL carries the CA (and
hostname checking) to the Sentinels and to the master they name, for every
process and for the operator."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from relayq.core.clients import RedisTarget, redis_for, redis_tls_options
from relayq.core.ids import new_task_id
from relayq.core.keys import Keys
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue
from relayq.core.settings import Settings
from relayq.operator.queue_reading import RedisPools, read_queue
from tests.chaos.redis_group import RedisGroup
from tests.kube.pki import ClusterPki, make_pki

pytestmark = pytest.mark.slow

PASSWORD = "tls-group-password"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return make_pki(tmp_path_factory.mktemp("pki"), "10.0.0.1")


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory, pki: ClusterPki) -> Iterator[RedisGroup]:
    g = RedisGroup(
        tmp_path_factory.mktemp("redis"), password=PASSWORD, sentinel_password=PASSWORD, tls=pki
    ).start()
    yield g
    g.stop()


def tls_url(ca: Path) -> str:
    # The host is unused through Sentinel: only the scheme, database and TLS options count.
    return f"rediss://127.0.0.1:1/0?ssl_ca_certs={quote(str(ca))}&ssl_check_hostname=true"


def settings_for(group: RedisGroup, url: str) -> Settings:
    return Settings.from_env(
        {
            "RELAYQ_REDIS_URL": url,
            "RELAYQ_REDIS_SENTINELS": group.sentinels_env,
            "RELAYQ_REDIS_SENTINEL_MASTER": group.master_name,
            "RELAYQ_REDIS_PASSWORD": PASSWORD,
            "RELAYQ_REDIS_SENTINEL_PASSWORD": PASSWORD,
            "RELAYQ_REDIS_TIMEOUT_SECONDS": "2",
        }
    )


@pytest.fixture
def keys() -> Keys:
    """Keys of this test alone: the group is shared by the module."""
    return Keys(f"tls-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def queue(group: RedisGroup, pki: ClusterPki, keys: Keys) -> AsyncIterator[Queue]:
    redis = redis_for(settings_for(group, tls_url(pki.ca_cert)))
    yield Queue(redis, keys)
    await redis.aclose()


def test_a_rediss_url_gives_tls_options_and_a_redis_url_none() -> None:
    options = redis_tls_options("rediss://h:1/0?ssl_ca_certs=/ca.crt&ssl_check_hostname=true")
    assert options == {"ssl": True, "ssl_ca_certs": "/ca.crt", "ssl_check_hostname": True}
    assert redis_tls_options("redis://h:1/0?ssl_ca_certs=/ca.crt") == {}


async def test_enqueue_and_claim_through_sentinel_over_tls(queue: Queue) -> None:
    task_id = new_task_id()
    await queue.enqueue(Priority.HIGH, Message(task_id, "noop"))
    claim = await queue.claim(Priority.HIGH, "w1", 10)
    assert [d.message.task_id for d in claim.deliveries] == [task_id]


async def test_the_operator_reads_the_backlog_through_sentinel_over_tls(
    queue: Queue, group: RedisGroup, pki: ClusterPki, keys: Keys
) -> None:
    await queue.enqueue(Priority.LOW, Message(new_task_id(), "noop"))
    # The operator builds this target from the chart's Redis Secret: the same URL.
    target = RedisTarget(
        url=tls_url(pki.ca_cert),
        sentinels=group.addresses,
        master=group.master_name,
        password=PASSWORD,
        sentinel_password=PASSWORD,
    )
    pools = RedisPools()
    try:
        reading = await read_queue(pools.queue(target, keys.prefix), Priority.LOW)
        assert reading.snapshot.backlog == 1
    finally:
        await pools.close()


async def _refused(settings: Settings) -> Exception:
    redis = redis_for(settings)
    t0 = time.monotonic()
    try:
        with pytest.raises((RedisConnectionError, OSError)) as caught:
            await redis.ping()
    finally:
        await redis.aclose()
    # Sentinel retries cover a failover, then give up (relayq.core.clients).
    assert time.monotonic() - t0 < 25
    return caught.value


async def test_a_plain_url_finds_no_master_behind_tls_sentinels(group: RedisGroup) -> None:
    await _refused(settings_for(group, "redis://127.0.0.1:1/0"))


async def test_sentinels_whose_certificate_is_not_trusted_are_refused(
    group: RedisGroup, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other", "10.0.0.1")
    error = await _refused(settings_for(group, tls_url(other.ca_cert)))
    assert "certificate verify failed" in str(error)


async def test_a_failover_over_tls_keeps_dispatch_working(queue: Queue, group: RedisGroup) -> None:
    await queue.enqueue(Priority.HIGH, Message(new_task_id(), "noop"))
    group.failover()
    await queue.enqueue(Priority.HIGH, Message(new_task_id(), "noop"))
    assert await queue.backlog(Priority.HIGH) >= 1
