"""Redis through Sentinel: dispatch, forced failover, a killed master, blocking reads.

A master, a replica and three Sentinels run on loopback for each test; the
clients find the master through the Sentinels only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import AuthenticationError, ConnectionError

from relayq.core.clients import Clients, open_clients, redis_database, redis_for
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.settings import Settings, SettingsError
from relayq.dev.servers import redis_server
from relayq.recovery.settings import RecoverySettings
from relayq.recovery.sweep import Recovery
from tests.chaos.redis_group import RedisGroup
from tests.conftest import InProcessWorker, WorkerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def group(tmp_path: Path) -> Iterator[RedisGroup]:
    g = RedisGroup(tmp_path / "redis").start()
    yield g
    g.stop()


@pytest.fixture
def sentinel_settings(settings: Settings, group: RedisGroup) -> Settings:
    # The URL's host points nowhere: only the Sentinels may lead to Redis.
    return replace(settings, redis_url="redis://127.0.0.1:1/0", redis_sentinels=group.addresses)


@pytest.fixture
async def sclients(sentinel_settings: Settings) -> AsyncIterator[Clients]:
    from tests import jobtypes

    jobtypes.configure(sentinel_settings)
    async with open_clients(sentinel_settings) as c:
        yield c
        await c.store.client.drop_database(sentinel_settings.mongo_database)


async def _submit(c: Clients, n: int, **payload: float) -> list[str]:
    ids = []
    for _ in range(n):
        sub = await c.service.submit(JobRequest("record", dict(payload), priority=Priority.HIGH))
        ids.append(sub.task.id)
    return ids


async def _finish(c: Clients, ids: list[str], timeout: float) -> float:
    """Wait until every task completed, running recovery (as the CronJob would) meanwhile.

    A failover may lose the newest writes of the old master: those jobs are
    dispatched again from their records. Returns the seconds it took.
    """
    t0 = time.monotonic()
    rec = Recovery(
        c.settings, RecoverySettings(grace_seconds=2.0), c.queue, c.store
    )  # fmt: skip
    last_recovery = time.monotonic()
    while True:
        done = await c.store.tasks.count_documents(
            {"_id": {"$in": ids}, "state": TaskState.COMPLETED.value}
        )
        if done == len(ids):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{done}/{len(ids)} completed within {timeout}s")
        if time.monotonic() - last_recovery > 5:
            await rec.run_once()
            last_recovery = time.monotonic()
        await asyncio.sleep(0.2)


# -- settings ----------------------------------------------------------------------


def test_sentinel_settings_are_read_and_checked() -> None:
    s = Settings.from_env(
        {"RELAYQ_REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380,",
         "RELAYQ_REDIS_SENTINEL_MASTER": "relayq", "RELAYQ_REDIS_PASSWORD": "pw",
         "RELAYQ_REDIS_SENTINEL_PASSWORD": "spw"}
    )  # fmt: skip
    assert s.redis_sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert s.redis_sentinel_master == "relayq"
    assert (s.redis_password, s.redis_sentinel_password) == ("pw", "spw")
    assert "pw" not in repr(s)
    assert Settings.from_env({}).redis_sentinels == ()
    for bad in ("host", "host:0", "host:99999", ":26379", "host:port"):
        with pytest.raises(SettingsError, match="RELAYQ_REDIS_SENTINELS"):
            Settings.from_env({"RELAYQ_REDIS_SENTINELS": bad})
    with pytest.raises(SettingsError, match="RELAYQ_REDIS_SENTINEL_MASTER"):
        Settings.from_env({"RELAYQ_REDIS_SENTINEL_MASTER": " "})
    assert redis_database("redis://h:1/3") == 3 and redis_database("redis://h:1") == 0


# -- through Sentinel ----------------------------------------------------------------


async def test_jobs_are_enqueued_and_processed_through_sentinel(
    sclients: Clients, group: RedisGroup
) -> None:
    ids = await _submit(sclients, 10)
    master = group.data_client(group.master_port())
    assert master.xlen(sclients.queue.keys.of(Priority.HIGH).stream) == 10
    async with InProcessWorker(sclients, "high"):
        await _finish(sclients, ids, 30)


async def test_passwords_of_redis_and_sentinel_are_used(settings: Settings, tmp_path: Path) -> None:
    g = RedisGroup(tmp_path / "auth", password="data-pw", sentinel_password="sentinel-pw").start()
    try:
        good = replace(
            settings, redis_sentinels=g.addresses, redis_password="data-pw",
            redis_sentinel_password="sentinel-pw",
        )  # fmt: skip
        client = redis_for(good)
        assert await client.ping()
        await client.aclose()
        wrong = redis_for(replace(good, redis_password="nope"))
        with pytest.raises((AuthenticationError, ConnectionError)):
            await wrong.ping()
        await wrong.aclose()
    finally:
        g.stop()


async def test_a_worker_keeps_claiming_across_a_forced_failover(
    sclients: Clients, group: RedisGroup, sentinel_settings: Settings, tmp_path: Path
) -> None:
    worker = WorkerProcess(
        sentinel_settings, "high", tmp_path, RELAYQ_REDIS_SENTINELS=group.sentinels_env
    ).wait_started()
    try:
        before = await _submit(sclients, 30, seconds=0.05)
        old, new = await asyncio.to_thread(group.failover)
        assert old != new
        t_failover = time.monotonic()
        after = await _submit(sclients, 30, seconds=0.05)
        assert group.data_client(new).exists(sclients.queue.keys.of(Priority.HIGH).stream)
        await _finish(sclients, after, 60)
        # The bound: jobs submitted after the failover all ran within it.
        assert time.monotonic() - t_failover < 60
        await _finish(sclients, before, 60)
        assert worker.process.poll() is None, worker.log()
    finally:
        worker.kill()
        print(worker.log()[-3000:])


async def test_killing_the_master_promotes_the_replica_and_service_recovers(
    sclients: Clients, group: RedisGroup
) -> None:
    first = await _submit(sclients, 5)
    replica_port = group.replica().port
    _, new = await asyncio.to_thread(group.kill_master)
    assert new == replica_port
    # The same clients, connected to the dead master, find the new one.
    after = await _submit(sclients, 5)
    async with InProcessWorker(sclients, "high"):
        await _finish(sclients, first + after, 60)
    stream = sclients.queue.keys.of(Priority.HIGH).stream
    assert await sclients.redis.exists(stream)
    await asyncio.to_thread(group.restart_stopped)
    await asyncio.to_thread(group.wait_ready, 30)
    assert group.master_port() == new  # the old master came back as a replica


async def test_a_blocking_read_recovers_after_the_master_dies(
    sclients: Clients, group: RedisGroup
) -> None:
    async with InProcessWorker(sclients, "high") as w:
        # Idle: the fetch loop sits in XREAD BLOCK on the old master.
        await asyncio.sleep(1.5)
        assert w.worker.counters.claimed == 0
        await asyncio.to_thread(group.kill_master)
        t0 = time.monotonic()
        ids = await _submit(sclients, 3)
        await _finish(sclients, ids, 40)
        took = time.monotonic() - t0
    assert took < 40
    assert w.worker.counters.claimed >= 3


async def test_a_fetch_loop_outlasting_the_client_retries_logs_counts_and_resumes(
    clients: Clients, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Its own Redis, down longer than the client's retries: the errors reach the loop.
    server = redis_server(tmp_path / "redis").start()
    own = replace(clients.settings, redis_url=f"redis://127.0.0.1:{server.port}/0")
    errors_before = _redis_errors("high")
    caplog.set_level(logging.INFO, logger="relayq.worker")
    try:
        async with open_clients(own) as c, InProcessWorker(c, "high") as w:
            await asyncio.sleep(1.0)  # blocked in XREAD
            server.kill()
            await asyncio.sleep(3.0)
            server.start()
            ids = await _submit(c, 3)
            await _finish(c, ids, 30)
            assert w.worker.counters.errors > 0
    finally:
        server.stop()
    assert _redis_errors("high") > errors_before
    messages = [r.getMessage() for r in caplog.records]
    assert any(m in ("wait failed", "claim failed") for m in messages)
    assert "redis reachable again" in messages


async def test_scripts_are_loaded_again_on_a_new_master(
    sclients: Clients, group: RedisGroup
) -> None:
    await sclients.queue.stats(Priority.HIGH)  # loads backlog.lua on this master
    await asyncio.to_thread(group.failover)
    group.data_client(group.master_port()).script_flush()
    stats = await sclients.queue.stats(Priority.HIGH)  # NOSCRIPT, loaded, run
    assert stats.backlog == 0


def _redis_errors(priority: str) -> float:
    total = 0.0
    for op in ("claim", "wait", "start"):
        value = REGISTRY.get_sample_value(
            "relayq_worker_redis_errors_total", {"priority": priority, "operation": op}
        )
        total += value or 0.0
    return total


async def test_a_worker_started_while_redis_is_down_waits_for_it(
    clients: Clients, tmp_path: Path
) -> None:
    server = redis_server(tmp_path / "late")  # not started yet
    own = replace(clients.settings, redis_url=f"redis://127.0.0.1:{server.port}/0")
    try:
        async with open_clients(own) as c, InProcessWorker(c, "high") as w:
            await asyncio.sleep(1.5)
            assert w.task is not None and not w.task.done()  # still trying, not crashed
            assert w.worker.counters.errors > 0
            server.start()
            ids = await _submit(c, 2)
            await _finish(c, ids, 30)
    finally:
        server.stop()
