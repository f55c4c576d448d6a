"""What the operator reads from Redis: backlog, age, in flight per consumer and per pod,
through a plain URL and through Sentinel; and how a consumer name maps to its pod."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from relayq.core.clients import RedisTarget
from relayq.core.ids import new_task_id
from relayq.core.keys import Keys
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue
from relayq.dev.servers import LocalServer, find_binary, free_port
from relayq.operator.queue_reading import (
    RedisPools,
    in_flight_by_pod,
    parse_sentinels,
    pod_of_consumer,
    read_queue,
)

P = Priority.HIGH


@pytest.mark.parametrize(
    ("consumer", "pod"),
    [
        ("worker-high-7d9f8c6b5-x2x4q-1", "worker-high-7d9f8c6b5-x2x4q"),
        ("worker-high-7d9f8c6b5-x2x4q-31337", "worker-high-7d9f8c6b5-x2x4q"),
        ("laptop-1234", "laptop"),
        ("custom-worker-id", "custom-worker-id"),
        ("single", "single"),
        ("-5", "-5"),
    ],
)
def test_pod_of_consumer_drops_only_a_trailing_pid(consumer: str, pod: str) -> None:
    assert pod_of_consumer(consumer) == pod


def test_in_flight_by_pod_sums_the_processes_of_one_pod() -> None:
    assert in_flight_by_pod({"pod-a-1": 2, "pod-a-2": 3, "pod-b-1": 0, "other": 4}) == {
        "pod-a": 5,
        "pod-b": 0,
        "other": 4,
    }


def test_parse_sentinels_reads_the_environment_format() -> None:
    assert parse_sentinels(" s1:26379, 10.0.0.2:26380 ,") == (("s1", 26379), ("10.0.0.2", 26380))
    assert parse_sentinels("[::1]:26379") == (("::1", 26379),)


@pytest.mark.parametrize("text", ["", " , ", "s1", "s1:", ":26379", "s1:port", "s1:70000"])
def test_parse_sentinels_refuses_malformed_lists(text: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinels(text)


@pytest.fixture
def sentinel(redis_srv: LocalServer, tmp_path: Path) -> Iterator[LocalServer]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor relayq 127.0.0.1 {redis_srv.port} 1\n"
    )
    server = LocalServer("sentinel", port, tmp_path, [find_binary("redis-sentinel"), str(conf)])
    yield server.start()
    server.stop()


async def fill(queue: Queue) -> None:
    """12 jobs: 5 claimed by pod-a's process, 2 by pod-b's, 5 waiting."""
    await queue.enqueue_many(P, [Message(new_task_id(), "noop") for _ in range(12)])
    await queue.claim(P, "pod-a-1", 5)
    await queue.claim(P, "pod-b-7", 2)


async def test_read_queue_through_a_url(redis_url: str) -> None:
    pools = RedisPools()
    try:
        target = RedisTarget(url=redis_url)
        queue = pools.queue(target, "relayq")
        assert pools.queue(target, "relayq") is queue
        assert pools.client(RedisTarget(url=redis_url)) is queue.redis, "one pool per URL"
        empty = await read_queue(queue, P)
        assert empty.snapshot.backlog == 0 and empty.in_flight_by_consumer == {}

        await fill(queue)
        reading = await read_queue(queue, P)
        assert reading.snapshot.backlog == 12
        assert reading.snapshot.in_flight == 7
        assert not reading.snapshot.paused
        assert 0 <= reading.snapshot.oldest_age_seconds < 5
        assert reading.in_flight_by_consumer == {"pod-a-1": 5, "pod-b-7": 2}

        await queue.pause(P)
        assert (await read_queue(queue, P)).snapshot.paused
        assert (await read_queue(pools.queue(target, "other"), P)).snapshot.backlog == 0
        assert list((await pools.ping()).values()) == [True]
    finally:
        await pools.close()


async def test_read_queue_through_sentinel(redis_url: str, sentinel: LocalServer) -> None:
    pools = RedisPools()
    try:
        await fill(Queue(pools.client(RedisTarget(url=redis_url)), Keys()))
        target = RedisTarget(
            url="redis://ignored/0", sentinels=(("127.0.0.1", sentinel.port),), master="relayq"
        )
        reading = await read_queue(pools.queue(target, "relayq"), P)
        assert reading.snapshot.backlog == 12
        assert reading.in_flight_by_consumer == {"pod-a-1": 5, "pod-b-7": 2}
    finally:
        await pools.close()


async def test_read_queue_through_sentinels_that_require_a_password(
    redis_url: str, redis_srv: LocalServer, tmp_path: Path
) -> None:
    # The operator once connected to Sentinels without their password.
    port = free_port()
    conf = tmp_path / "sentinel-auth.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nrequirepass s3cret\n"
        f"sentinel monitor relayq 127.0.0.1 {redis_srv.port} 1\n"
    )
    server = LocalServer(
        "sentinel-auth", port, tmp_path, [find_binary("redis-sentinel"), str(conf)]
    )
    server.start()
    pools = RedisPools()
    try:
        await fill(Queue(pools.client(RedisTarget(url=redis_url)), Keys()))
        target = RedisTarget(
            url="redis://ignored/0", sentinels=(("127.0.0.1", port),), master="relayq",
            sentinel_password="s3cret",
        )  # fmt: skip
        reading = await read_queue(pools.queue(target, "relayq"), P)
        assert reading.snapshot.backlog == 12
        without = RedisTarget(url="redis://ignored/0", sentinels=(("127.0.0.1", port),),
                              master="relayq")  # fmt: skip
        with pytest.raises(RedisError):
            await read_queue(pools.queue(without, "relayq"), P)
    finally:
        await pools.close()
        server.stop()


async def test_unknown_sentinel_master_raises_for_the_poll_to_report(
    redis_url: str, sentinel: LocalServer
) -> None:
    pools = RedisPools()
    try:
        target = RedisTarget(url="", sentinels=(("127.0.0.1", sentinel.port),), master="nope")
        with pytest.raises(RedisError):
            await read_queue(pools.queue(target, "relayq"), P)
        assert await pools.ping() == {f"sentinel://127.0.0.1:{sentinel.port}/nope": False}
    finally:
        await pools.close()


async def test_closed_port_raises_for_the_poll_to_report() -> None:
    pools = RedisPools(socket_timeout=1.0)
    try:
        target = RedisTarget(url=f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(RedisError):
            await read_queue(pools.queue(target, "relayq"), P)
    finally:
        await pools.close()
