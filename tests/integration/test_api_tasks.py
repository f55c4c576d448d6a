"""GET /v1/tasks/{taskId} and GET /v1/tasks: status, listing, pagination, query checks."""

from __future__ import annotations

from typing import Any

import pytest

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.service import JobRequest
from tests.conftest import InProcessWorker, wait_until
from tests.gateway import ADMIN, CLIENT, RFC3339_UTC, TASK_FIELDS, problem
from tests.integration.conftest import Api


async def submit(api: Api, **job: Any) -> str:
    resp = await api.post("/v1/jobs", json=job, headers=CLIENT)
    assert resp.status == 202, await resp.text()
    task_id: str = (await resp.json())["taskId"]
    return task_id


async def status_of(api: Api, task_id: str) -> dict[str, Any]:
    resp = await api.get(f"/v1/tasks/{task_id}", headers=CLIENT)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_new_task_shows_every_field_with_rfc3339_utc_timestamps(api: Api) -> None:
    task_id = await submit(api, type="noop", payload={"x": 1}, priority="low", maxAttempts=4)

    body = await status_of(api, task_id)

    assert set(body) == TASK_FIELDS
    assert body["taskId"] == task_id
    assert (body["type"], body["priority"], body["state"]) == ("noop", "low", "queued")
    assert (body["attempts"], body["maxAttempts"]) == (0, 4)
    assert body["payload"] == {"x": 1}
    assert body["lastError"] is None and body["result"] is None
    assert RFC3339_UTC.fullmatch(body["createdAt"]), body["createdAt"]
    assert RFC3339_UTC.fullmatch(body["queuedAt"]), body["queuedAt"]
    assert body["startedAt"] is None and body["finishedAt"] is None and body["runAt"] is None


async def test_task_shows_completed_with_result_after_a_worker_ran_it(
    api: Api, clients: Clients
) -> None:
    task_id = await submit(api, type="record", payload={"seconds": 0})

    async with InProcessWorker(clients, "high"):

        async def completed() -> dict[str, Any] | None:
            body = await status_of(api, task_id)
            return body if body["state"] == "completed" else None

        body = await wait_until(completed, timeout=20)

    assert body["attempts"] == 1
    assert body["result"] == {"attempt": 1}
    assert body["lastError"] is None
    for stamp in ("startedAt", "finishedAt"):
        assert RFC3339_UTC.fullmatch(body[stamp]), body[stamp]
    assert body["createdAt"] <= body["startedAt"] <= body["finishedAt"]


async def test_task_shows_failed_with_last_error_after_a_permanent_failure(
    api: Api, clients: Clients
) -> None:
    task_id = await submit(api, type="fail", payload={"permanent": True, "message": "no funds"})

    async with InProcessWorker(clients, "medium"):

        async def failed() -> dict[str, Any] | None:
            body = await status_of(api, task_id)
            return body if body["state"] == "failed" else None

        body = await wait_until(failed, timeout=20)

    assert body["lastError"] is not None and "no funds" in body["lastError"]
    assert body["finishedAt"] is not None


async def test_unknown_task_is_404_task_not_found(api: Api) -> None:
    resp = await api.get(f"/v1/tasks/{'0' * 32}", headers=CLIENT)

    await problem(resp, 404, "task-not-found")


@pytest.mark.parametrize(
    "bad_id", ["abc", "A" * 32, "g" * 32, "0" * 31, "0" * 33, "0" * 31 + "%20"], ids=repr
)
async def test_malformed_task_id_is_400_invalid_task_id(api: Api, bad_id: str) -> None:
    resp = await api.get(f"/v1/tasks/{bad_id}", headers=CLIENT)

    await problem(resp, 400, "invalid-task-id")


async def test_task_routes_need_a_client_key_not_the_admin_token(api: Api) -> None:
    resp = await api.get("/v1/tasks", headers=ADMIN)

    await problem(resp, 403, "forbidden")


# -- listing ------------------------------------------------------------------------

A = "client-a"  # CLIENT's id: a client lists only its own tasks


async def test_listing_pages_newest_first_and_shows_each_task_once(
    api: Api, clients: Clients
) -> None:
    created = [
        (await clients.service.submit(JobRequest("noop", {"i": i}, client=A))).task.id
        for i in range(7)
    ]

    seen: list[str] = []
    sizes = []
    cursor: str | None = None
    while True:
        query = {"limit": "3"} if cursor is None else {"limit": "3", "cursor": cursor}
        resp = await api.get("/v1/tasks", params=query, headers=CLIENT)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert set(page) == {"tasks", "nextCursor"}
        assert all(set(t) == TASK_FIELDS for t in page["tasks"])
        seen += [t["taskId"] for t in page["tasks"]]
        sizes.append(len(page["tasks"]))
        cursor = page["nextCursor"]
        if cursor is None:
            break

    assert sizes == [3, 3, 1]
    assert seen == sorted(created, reverse=True)


async def test_listing_defaults_to_50_per_page(api: Api, clients: Clients) -> None:
    await clients.service.submit_many([JobRequest("noop", {"i": i}, client=A) for i in range(52)])

    first = await (await api.get("/v1/tasks", headers=CLIENT)).json()
    rest = await (
        await api.get("/v1/tasks", params={"cursor": first["nextCursor"]}, headers=CLIENT)
    ).json()

    assert len(first["tasks"]) == 50 and first["nextCursor"] is not None
    assert len(rest["tasks"]) == 2 and rest["nextCursor"] is None


async def test_listing_filters_by_state_and_type(api: Api, clients: Clients) -> None:
    noop = (await clients.service.submit(JobRequest("noop", {}, client=A))).task
    sleep = (await clients.service.submit(JobRequest("sleep", {"seconds": 1}, client=A))).task
    done = await clients.store.transition(noop.id, [TaskState.QUEUED], TaskState.COMPLETED)
    assert done is not None

    async def ids(**query: str) -> list[str]:
        resp = await api.get("/v1/tasks", params=query, headers=CLIENT)
        assert resp.status == 200, await resp.text()
        return [t["taskId"] for t in (await resp.json())["tasks"]]

    assert await ids(state="completed") == [noop.id]
    assert await ids(state="queued") == [sleep.id]
    assert await ids(type="sleep") == [sleep.id]
    assert await ids(type="sleep", state="completed") == []
    assert await ids(type="no-such-type") == []
    assert await ids() == [sleep.id, noop.id]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "2.5"}, "limit"),
        ({"state": "bogus"}, "state"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
    ids=lambda v: "&".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else v,
)
async def test_malformed_query_is_400_invalid_query(
    api: Api, query: dict[str, str], field: str
) -> None:
    resp = await api.get("/v1/tasks", params=query, headers=CLIENT)

    await problem(resp, 400, "invalid-query", field=field)


async def test_limit_bounds_1_and_500_are_accepted(api: Api) -> None:
    for limit in ("1", "500"):
        resp = await api.get("/v1/tasks", params={"limit": limit}, headers=CLIENT)
        assert resp.status == 200, await resp.text()
