"""The gateway with Redis or MongoDB unreachable: record first, never a 500, never a lost task."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from pytest_aiohttp import AiohttpClient

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.settings import Settings
from relayq.dev.servers import free_port
from tests.gateway import ADMIN, CLIENT, PROBLEM_TYPE, dispatched, make_dead, problem, scrape
from tests.integration.conftest import Api, MakeApi


@pytest.fixture
async def redis_down(make_api: MakeApi, settings: Settings, clients: Clients) -> Api:
    """The gateway on the test's MongoDB database, with Redis at a closed port."""
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    return await make_api(settings=down, rate_limit_per_s=1)


@pytest.fixture
async def mongo_down(make_api: MakeApi, settings: Settings, clients: Clients) -> Api:
    """The gateway on the test's Redis, with MongoDB at a closed port."""
    down = replace(settings, mongo_url=f"mongodb://127.0.0.1:{free_port()}/")
    return await make_api(settings=down, mongo_timeout_seconds=0.5)


# -- Redis down -------------------------------------------------------------------------


async def test_redis_down_still_accepts_the_job_as_pending_recorded_in_mongo(
    redis_down: Api, clients: Clients
) -> None:
    resp = await redis_down.post("/v1/jobs", json={"type": "noop"}, headers=CLIENT)

    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "pending"
    task = await clients.store.get(body["taskId"])
    assert task is not None
    assert task.state is TaskState.PENDING
    status = await redis_down.get(f"/v1/tasks/{body['taskId']}", headers=CLIENT)
    assert (await status.json())["state"] == "pending"


async def test_redis_down_does_not_enforce_the_rate_limit(redis_down: Api) -> None:
    statuses = [(await redis_down.get("/v1/tasks", headers=CLIENT)).status for _ in range(5)]

    assert statuses == [200] * 5


async def test_redis_down_retried_dead_letter_is_accepted_as_pending(
    redis_down: Api, clients: Clients
) -> None:
    dead = await make_dead(clients, "noop")

    resp = await redis_down.post(f"/v1/admin/dead-letters/{dead.id}/retry", headers=ADMIN)

    assert resp.status == 202, await resp.text()
    assert (await resp.json())["status"] == "pending"
    task = await clients.store.get(dead.id)
    assert task is not None and task.state is TaskState.PENDING


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/queues"),
        ("POST", "/v1/admin/queues/high/pause"),
        ("POST", "/v1/admin/queues/high/resume"),
    ],
)
async def test_redis_down_queue_administration_is_503_not_a_500(
    redis_down: Api, method: str, path: str
) -> None:
    # A dependency outage is not a bug: 500 `internal` is reserved for bugs.
    resp = await redis_down.request(method, path, headers=ADMIN)

    assert resp.status == 503, await resp.text()
    assert resp.content_type == PROBLEM_TYPE


async def test_readyz_names_redis_unreachable(redis_down: Api) -> None:
    resp = await redis_down.get("/readyz")

    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unready" and body["redis"] == "unreachable" and body["mongo"] == "ok"


# -- MongoDB down ---------------------------------------------------------------------------


async def test_mongo_down_refuses_the_job_with_503_and_dispatches_nothing(
    mongo_down: Api, clients: Clients
) -> None:
    started = time.monotonic()
    resp = await mongo_down.post("/v1/jobs", json={"type": "noop"}, headers=CLIENT)

    await problem(resp, 503, "store-unavailable")
    assert resp.headers["Retry-After"] == "5"
    assert time.monotonic() - started < 10
    assert set((await dispatched(clients)).values()) == {0}


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", f"/v1/tasks/{'0' * 32}", CLIENT),
        ("GET", "/v1/tasks", CLIENT),
        ("GET", "/v1/admin/dead-letters", ADMIN),
        ("GET", "/v1/admin/queues", ADMIN),
        ("POST", f"/v1/admin/dead-letters/{'0' * 32}/retry", ADMIN),
    ],
)
async def test_mongo_down_reads_are_503_store_unavailable(
    mongo_down: Api, method: str, path: str, headers: dict[str, str]
) -> None:
    resp = await mongo_down.request(method, path, headers=headers)

    await problem(resp, 503, "store-unavailable")
    assert resp.headers["Retry-After"] == "5"


async def test_mongo_down_key_not_in_settings_is_503_not_500(mongo_down: Api) -> None:
    # The key could be in MongoDB's api_keys: the gateway cannot tell, so it is unavailable.
    resp = await mongo_down.get("/v1/tasks", headers={"Authorization": "Bearer maybe-in-mongo"})

    await problem(resp, 503, "store-unavailable")


async def test_readyz_names_mongo_unreachable(mongo_down: Api) -> None:
    resp = await mongo_down.get("/readyz")

    assert resp.status == 503
    assert await resp.json() == {
        "status": "unready",
        "redis": "ok",
        "mongo": "unreachable",
        "indexes": "pending",
    }


async def test_mongo_down_leaves_health_metrics_and_docs_serving(
    mongo_down: Api, aiohttp_client: AiohttpClient
) -> None:
    for path in ("/healthz", "/openapi.json", "/docs"):
        resp = await mongo_down.get(path)
        assert resp.status == 200, path
    assert 'relayq_dependency_up{dependency="mongodb"} 0.0' in await scrape(
        aiohttp_client, mongo_down
    )
