"""Admin routes: queues, pause and resume, dead letters (list, retry, retry by type, delete)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from tests.conftest import InProcessWorker, wait_until
from tests.gateway import ADMIN, CLIENT, TASK_FIELDS, make_dead, problem
from tests.integration.conftest import Api

QUEUE_FIELDS = {
    "priority", "waiting", "active", "delayed", "dead", "paused", "backlog",
    "oldestWaitingAgeSeconds",
}  # fmt: skip


async def queues(api: Api) -> dict[str, dict[str, Any]]:
    resp = await api.get("/v1/admin/queues", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"queues"}
    return {q["priority"]: q for q in body["queues"]}


async def test_queues_lists_all_five_in_priority_order(api: Api, clients: Clients) -> None:
    resp = await api.get("/v1/admin/queues", headers=ADMIN)

    assert resp.status == 200
    listed = (await resp.json())["queues"]
    assert [q["priority"] for q in listed] == [p.value for p in Priority]
    for q in listed:
        assert set(q) == QUEUE_FIELDS
        assert q == {**q, "waiting": 0, "active": 0, "delayed": 0, "dead": 0, "paused": False}


async def test_queues_count_waiting_delayed_and_dead(api: Api, clients: Clients) -> None:
    await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    await clients.service.submit(JobRequest("noop", {}, priority=Priority.LOW, delay_seconds=60))
    await make_dead(clients, "noop", priority=Priority.BATCH)

    by_priority = await queues(api)

    assert by_priority["high"]["waiting"] == 2
    assert by_priority["high"]["backlog"] == 2
    assert by_priority["low"]["delayed"] == 1
    assert by_priority["low"]["waiting"] == 0
    assert by_priority["batch"]["dead"] == 1
    assert by_priority["critical"]["waiting"] == 0


async def test_pause_stops_workers_and_resume_lets_them_run(api: Api, clients: Clients) -> None:
    resp = await api.post("/v1/admin/queues/high/pause", headers=ADMIN)
    assert resp.status == 200
    assert await resp.json() == {"priority": "high", "paused": True}
    assert (await queues(api))["high"]["paused"] is True
    task = (await clients.service.submit(JobRequest("record", {}))).task

    async with InProcessWorker(clients, "high"):
        await asyncio.sleep(1.0)
        current = await clients.store.get(task.id)
        assert current is not None and current.state is TaskState.QUEUED

        resp = await api.post("/v1/admin/queues/high/resume", headers=ADMIN)
        assert resp.status == 200
        assert await resp.json() == {"priority": "high", "paused": False}

        async def completed() -> bool:
            t = await clients.store.get(task.id)
            return t is not None and t.state is TaskState.COMPLETED

        await wait_until(completed, timeout=20)
    assert (await queues(api))["high"]["paused"] is False


@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_pause_or_resume_of_an_unknown_priority_is_422(api: Api, action: str) -> None:
    resp = await api.post(f"/v1/admin/queues/urgent/{action}", headers=ADMIN)

    await problem(resp, 422, "invalid-priority", field="priority")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/queues"),
        ("POST", "/v1/admin/queues/high/pause"),
        ("POST", "/v1/admin/queues/high/resume"),
        ("GET", "/v1/admin/dead-letters"),
        ("POST", "/v1/admin/dead-letters/retry"),
        ("POST", f"/v1/admin/dead-letters/{'0' * 32}/retry"),
        ("DELETE", f"/v1/admin/dead-letters/{'0' * 32}"),
    ],
)
async def test_admin_routes_refuse_a_client_key_with_403(
    api: Api, clients: Clients, method: str, path: str
) -> None:
    resp = await api.request(method, path, headers=CLIENT)

    await problem(resp, 403, "forbidden")
    assert await clients.redis.exists(clients.queue.keys.of(Priority.HIGH).paused) == 0


# -- dead letters --------------------------------------------------------------------


async def test_dead_letters_lists_only_failed_tasks_paged_each_once(
    api: Api, clients: Clients
) -> None:
    dead = [(await make_dead(clients, "noop", payload={"i": i})).id for i in range(5)]
    await clients.service.submit(JobRequest("noop", {}))  # queued: not a dead letter

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        resp = await api.get("/v1/admin/dead-letters", params=params, headers=ADMIN)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert set(page) == {"tasks", "nextCursor"}
        assert all(set(t) == TASK_FIELDS and t["state"] == "failed" for t in page["tasks"])
        seen += [t["taskId"] for t in page["tasks"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break

    assert seen == sorted(dead, reverse=True)


async def test_dead_letters_filter_by_type(api: Api, clients: Clients) -> None:
    await make_dead(clients, "noop")
    failing = await make_dead(clients, "fail")

    resp = await api.get("/v1/admin/dead-letters", params={"type": "fail"}, headers=ADMIN)

    assert resp.status == 200
    assert [t["taskId"] for t in (await resp.json())["tasks"]] == [failing.id]


@pytest.mark.parametrize(
    "query", [{"limit": "0"}, {"limit": "x"}, {"cursor": "zz"}], ids=lambda q: str(q)
)
async def test_dead_letters_malformed_query_is_400(api: Api, query: dict[str, str]) -> None:
    resp = await api.get("/v1/admin/dead-letters", params=query, headers=ADMIN)

    await problem(resp, 400, "invalid-query")


async def test_retrying_a_dead_letter_requeues_it_and_a_worker_completes_it(
    api: Api, clients: Clients
) -> None:
    dead = await make_dead(clients, "noop", priority=Priority.CRITICAL)

    resp = await api.post(f"/v1/admin/dead-letters/{dead.id}/retry", headers=ADMIN)

    assert resp.status == 202, await resp.text()
    assert await resp.json() == {"taskId": dead.id, "status": "queued", "priority": "critical"}
    async with InProcessWorker(clients, "critical"):

        async def completed() -> bool:
            t = await clients.store.get(dead.id)
            return t is not None and t.state is TaskState.COMPLETED

        await wait_until(completed, timeout=20)


async def test_retrying_a_task_that_is_not_failed_is_404_not_a_dead_letter(
    api: Api, clients: Clients
) -> None:
    queued = (await clients.service.submit(JobRequest("noop", {}))).task

    resp = await api.post(f"/v1/admin/dead-letters/{queued.id}/retry", headers=ADMIN)

    await problem(resp, 404, "not-a-dead-letter")
    current = await clients.store.get(queued.id)
    assert current is not None and current.state is TaskState.QUEUED


async def test_retrying_an_unknown_task_is_404_task_not_found(api: Api) -> None:
    resp = await api.post(f"/v1/admin/dead-letters/{'a' * 32}/retry", headers=ADMIN)

    await problem(resp, 404, "task-not-found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/admin/dead-letters/XYZ/retry"), ("DELETE", "/v1/admin/dead-letters/XYZ")],
)
async def test_dead_letter_routes_refuse_a_malformed_id_with_400(
    api: Api, method: str, path: str
) -> None:
    resp = await api.request(method, path, headers=ADMIN)

    await problem(resp, 400, "invalid-task-id")


async def test_retry_by_type_retries_only_that_type(api: Api, clients: Clients) -> None:
    noops = [await make_dead(clients, "noop") for _ in range(2)]
    failing = await make_dead(clients, "fail")

    resp = await api.post("/v1/admin/dead-letters/retry", params={"type": "noop"}, headers=ADMIN)

    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"retried": 2}
    for task in noops:
        current = await clients.store.get(task.id)
        assert current is not None and current.state is TaskState.QUEUED
    still = await clients.store.get(failing.id)
    assert still is not None and still.state is TaskState.FAILED


async def test_retry_without_type_retries_every_dead_letter(api: Api, clients: Clients) -> None:
    await make_dead(clients, "noop")
    await make_dead(clients, "fail")

    resp = await api.post("/v1/admin/dead-letters/retry", headers=ADMIN)
    again = await api.post("/v1/admin/dead-letters/retry", headers=ADMIN)

    assert await resp.json() == {"retried": 2}
    assert await again.json() == {"retried": 0}


async def test_deleting_a_dead_letter_answers_204_and_removes_it(
    api: Api, clients: Clients
) -> None:
    dead = await make_dead(clients, "noop")

    resp = await api.delete(f"/v1/admin/dead-letters/{dead.id}", headers=ADMIN)

    assert resp.status == 204
    assert await resp.read() == b""
    assert await clients.store.get(dead.id) is None
    gone = await api.delete(f"/v1/admin/dead-letters/{dead.id}", headers=ADMIN)
    await problem(gone, 404, "task-not-found")


async def test_deleting_a_task_that_is_not_failed_is_404_and_keeps_it(
    api: Api, clients: Clients
) -> None:
    queued = (await clients.service.submit(JobRequest("noop", {}))).task

    resp = await api.delete(f"/v1/admin/dead-letters/{queued.id}", headers=ADMIN)

    await problem(resp, 404, "not-a-dead-letter")
    assert await clients.store.get(queued.id) is not None
