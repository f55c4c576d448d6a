"""A server that accepts and then never answers (SIGSTOPped) must not hang anyone.

Every network call is bounded: the gateway answers 503 with Retry-After (or, for
Redis on submission, accepts the job as `pending`), and the store's and queue's
calls raise within their bound, so a worker retries rather than waiting forever.
Each test stops a server of its own, started here, and continues it after.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from pymongo.errors import PyMongoError
from pytest_aiohttp import AiohttpClient
from redis.exceptions import RedisError

from relayq.api.app import create_app
from relayq.core.clients import open_clients
from relayq.core.priorities import Priority
from relayq.core.settings import Settings
from relayq.dev.servers import LocalServer, mongo_server, redis_server
from tests.conftest import wait_until
from tests.gateway import ADMIN, CLIENT, api_settings, problem

# The gateway's bounds in these tests, and how much later than them an answer may come.
API_BOUND_SECONDS = 1.0
SLACK_SECONDS = 6.0


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[LocalServer]:
    server = mongo_server(tmp_path / "mongo").start()
    yield server
    _resume(server)
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalServer]:
    server = redis_server(tmp_path).start()
    yield server
    _resume(server)
    server.stop()


def _pause(server: LocalServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)


def _resume(server: LocalServer) -> None:
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)


@pytest.fixture
async def hung_settings(
    settings: Settings, own_mongo: LocalServer, own_redis: LocalServer
) -> AsyncIterator[Settings]:
    yield replace(
        settings,
        mongo_url=f"mongodb://127.0.0.1:{own_mongo.port}/",
        redis_url=f"redis://127.0.0.1:{own_redis.port}/0",
        mongo_timeout_seconds=API_BOUND_SECONDS,
        redis_timeout_seconds=API_BOUND_SECONDS,
    )


async def _gateway(aiohttp_client: AiohttpClient, settings: Settings) -> TestClient:  # type: ignore[type-arg]
    api = api_settings(
        mongo_timeout_seconds=API_BOUND_SECONDS, redis_timeout_seconds=API_BOUND_SECONDS
    )
    client = await aiohttp_client(create_app(settings, api))

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await wait_until(ready, timeout=15)
    return client


async def test_a_hung_store_is_503_with_retry_after_not_a_hang(
    aiohttp_client: AiohttpClient, hung_settings: Settings, own_mongo: LocalServer
) -> None:
    api = await _gateway(aiohttp_client, hung_settings)
    first = await api.post("/v1/jobs", json={"type": "noop"}, headers=CLIENT)
    assert first.status == 202, await first.text()
    task_id = (await first.json())["taskId"]
    _pause(own_mongo)

    for method, path in (("POST", "/v1/jobs"), ("GET", f"/v1/tasks/{task_id}"),
                         ("GET", "/v1/tasks"), ("GET", "/v1/admin/dead-letters")):  # fmt: skip
        headers = ADMIN if "/admin/" in path else CLIENT
        started = time.monotonic()
        resp = await api.request(method, path, json={"type": "noop"}, headers=headers)
        elapsed = time.monotonic() - started
        await problem(resp, 503, "store-unavailable")
        assert int(resp.headers["Retry-After"]) >= 1
        assert elapsed < API_BOUND_SECONDS + SLACK_SECONDS, (path, elapsed)


async def test_a_hung_redis_leaves_a_submission_pending_and_admin_503(
    aiohttp_client: AiohttpClient, hung_settings: Settings, own_redis: LocalServer
) -> None:
    api = await _gateway(aiohttp_client, hung_settings)
    _pause(own_redis)

    started = time.monotonic()
    submitted = await api.post("/v1/jobs", json={"type": "noop"}, headers=CLIENT)
    queues = await api.get("/v1/admin/queues", headers=ADMIN)
    elapsed = time.monotonic() - started

    assert submitted.status == 202, await submitted.text()
    assert (await submitted.json())["status"] == "pending"  # recorded; recovery dispatches it
    await problem(queues, 503, "queue-unavailable")
    assert elapsed < 2 * (API_BOUND_SECONDS + SLACK_SECONDS), elapsed


async def test_the_store_and_queue_calls_of_a_worker_are_bounded(
    hung_settings: Settings, own_mongo: LocalServer, own_redis: LocalServer
) -> None:
    async with open_clients(hung_settings) as clients:
        _pause(own_mongo)
        _pause(own_redis)
        started = time.monotonic()
        with pytest.raises(PyMongoError):
            await clients.store.get("0" * 32)
        with pytest.raises((RedisError, OSError)):
            await clients.queue.backlog(Priority.HIGH)
        assert time.monotonic() - started < 2 * (API_BOUND_SECONDS + SLACK_SECONDS)
        _resume(own_mongo)
        _resume(own_redis)
