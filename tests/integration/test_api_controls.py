"""The admin routes of an operator's hand on one task: review list, release, cancel, promote."""

from __future__ import annotations

import pytest

from relayq.core.clients import Clients
from relayq.core.jobs import Task, TaskState
from relayq.core.service import JobRequest
from tests.gateway import ADMIN, CLIENT, TASK_FIELDS, problem
from tests.integration.conftest import Api

REASON = {"reason": "checked the chain by hand"}


async def parked(clients: Clients, reason: str = "partly-landed") -> Task:
    sub = await clients.service.submit(JobRequest("noop", {}))
    active = await clients.service.lifecycle.start(sub.task.id, "w-1", redelivered=False)
    assert active is not None
    task = await clients.service.lifecycle.park(active, reason, {"landed": ["sig"]})
    assert task is not None
    return task


async def test_review_lists_parked_tasks_with_why(api: Api, clients: Clients) -> None:
    task = await parked(clients)
    await clients.service.submit(JobRequest("noop", {}))  # not parked: not listed

    resp = await api.get("/v1/admin/review", headers=ADMIN)

    assert resp.status == 200
    body = await resp.json()
    assert [t["taskId"] for t in body["tasks"]] == [task.id] and body["nextCursor"] is None
    listed = body["tasks"][0]
    assert set(listed) == TASK_FIELDS and listed["state"] == "needs_review"
    assert listed["review"]["reason"] == "partly-landed"
    assert listed["review"]["details"] == {"landed": ["sig"]}


async def test_release_requeues_a_parked_task(api: Api, clients: Clients) -> None:
    task = await parked(clients)

    resp = await api.post(f"/v1/admin/tasks/{task.id}/release", json=REASON, headers=ADMIN)

    assert resp.status == 202, await resp.text()
    assert await resp.json() == {"taskId": task.id, "status": "queued", "priority": "medium"}
    assert resp.headers["Location"] == f"/v1/tasks/{task.id}"


async def test_release_of_a_task_not_in_review_is_409(api: Api, clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))

    resp = await api.post(f"/v1/admin/tasks/{sub.task.id}/release", json=REASON, headers=ADMIN)

    body = await problem(resp, 409, "invalid-task-state")
    assert "queued" in body["detail"]


async def test_cancel_answers_the_cancelled_task(api: Api, clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}, delay_seconds=300))

    resp = await api.post(f"/v1/admin/tasks/{sub.task.id}/cancel", json=REASON, headers=ADMIN)

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["state"] == "cancelled" and body["finishedAt"] is not None
    assert body["lastError"] == "cancelled: checked the chain by hand"
    stored = await clients.store.get(sub.task.id)
    assert stored is not None and stored.state is TaskState.CANCELLED


async def test_cancel_of_an_active_task_is_409_and_changes_nothing(
    api: Api, clients: Clients
) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))
    await clients.service.lifecycle.start(sub.task.id, "w-1", redelivered=False)

    resp = await api.post(f"/v1/admin/tasks/{sub.task.id}/cancel", json=REASON, headers=ADMIN)

    await problem(resp, 409, "invalid-task-state")
    stored = await clients.store.get(sub.task.id)
    assert stored is not None and stored.state is TaskState.ACTIVE


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({}, 422, "invalid-body", "reason"),
        ({"reason": ""}, 422, "invalid-payload", "reason"),
        ({"reason": 5}, 422, "invalid-body", "reason"),
        ({"reason": "x" * 501}, 422, "invalid-payload", "reason"),
        ({"reason": "x", "force": True}, 422, "invalid-body", "force"),
    ],
)
async def test_cancel_needs_a_reason(
    api: Api, clients: Clients, body: dict[str, object], status: int, code: str, field: str
) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))

    resp = await api.post(f"/v1/admin/tasks/{sub.task.id}/cancel", json=body, headers=ADMIN)

    await problem(resp, status, code, field=field)
    stored = await clients.store.get(sub.task.id)
    assert stored is not None and stored.state is TaskState.QUEUED


async def test_promote_answers_whether_the_job_moved(api: Api, clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}, delay_seconds=300))

    first = await api.post(f"/v1/admin/tasks/{sub.task.id}/promote", headers=ADMIN)
    again = await api.post(f"/v1/admin/tasks/{sub.task.id}/promote", headers=ADMIN)

    assert first.status == 200, await first.text()
    assert await first.json() == {"taskId": sub.task.id, "state": "queued", "moved": True}
    await problem(again, 409, "invalid-task-state")  # due now: nothing left to promote


@pytest.mark.parametrize("action", ["release", "cancel", "promote"])
async def test_unknown_task_is_404_and_a_bad_id_400(api: Api, action: str) -> None:
    missing = await api.post(f"/v1/admin/tasks/{'a' * 32}/{action}", json=REASON, headers=ADMIN)
    bad = await api.post(f"/v1/admin/tasks/nope/{action}", json=REASON, headers=ADMIN)

    await problem(missing, 404, "task-not-found")
    await problem(bad, 400, "invalid-task-id")


@pytest.mark.parametrize("action", ["release", "cancel", "promote"])
async def test_a_client_key_cannot_act_on_tasks(api: Api, clients: Clients, action: str) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}, delay_seconds=300))

    resp = await api.post(f"/v1/admin/tasks/{sub.task.id}/{action}", json=REASON, headers=CLIENT)

    assert resp.status in (401, 403)
    stored = await clients.store.get(sub.task.id)
    assert stored is not None and stored.state is TaskState.QUEUED and stored.run_at is not None
