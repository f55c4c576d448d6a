"""Personal data a job type declares (JobType.redact) never leaves through a view: the
client's and the administrators' task views and listings, the dead-letter and review
listings, and the log lines all show it redacted, while the handler gets it whole.
A task finished for good loses it from its stored record too; an idempotent replay
still works. (The CLI's output: tests/e2e/test_cli.py.)"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.redaction import REDACTED
from relayq.core.service import JobRequest
from relayq.core.telemetry import DOCUMENT_LOGGERS, JsonFormatter
from tests.conftest import InProcessWorker, wait_until
from tests.gateway import ADMIN, CLIENT
from tests.integration.conftest import Api

ADDRESS = "alice@example.com"
TOKEN = "reset-token-5f2c9a"


def mail_payload(**extra: Any) -> dict[str, Any]:
    return {
        "to": ADDRESS,
        "user": {"name": "Alice", "email": ADDRESS},
        "link": f"https://shop.example/reset?token={TOKEN}",
        **extra,
    }


def assert_clean(text: str) -> None:
    assert ADDRESS not in text and TOKEN not in text, text


async def get_json(api: Api, path: str, headers: dict[str, str]) -> tuple[dict[str, Any], str]:
    resp = await api.get(path, headers=headers)
    text = await resp.text()
    assert resp.status == 200, text
    body: dict[str, Any] = await resp.json()
    return body, text


async def wait_state(clients: Clients, task_id: str, state: TaskState) -> None:
    async def reached() -> bool:
        task = await clients.store.get(task_id)
        return task is not None and task.state is state

    await wait_until(reached, timeout=20)


async def handler_saw(clients: Clients, task_id: str) -> dict[str, Any]:
    effects = clients.store.tasks.database["effects"]
    doc = await effects.find_one({"task_id": task_id, "phase": "mail"})
    assert doc is not None
    payload: dict[str, Any] = doc["payload"]
    return payload


REDACTED_PAYLOAD = {"to": REDACTED, "user": {"name": "Alice", "email": REDACTED}, "link": REDACTED}


async def every_view(api: Api, task_id: str) -> list[tuple[dict[str, Any], str]]:
    """The task as each view and listing shows it, with the response text."""
    views = [
        await get_json(api, f"/v1/tasks/{task_id}", CLIENT),
        await get_json(api, f"/v1/admin/tasks/{task_id}", ADMIN),
    ]
    for path, headers in (
        ("/v1/tasks", CLIENT),
        ("/v1/tasks?type=mail", CLIENT),
        ("/v1/admin/tasks", ADMIN),
        ("/v1/admin/tasks?client=client-a", ADMIN),
    ):
        page, text = await get_json(api, path, headers)
        (view,) = page["tasks"]
        assert view["taskId"] == task_id
        views.append((view, text))
    return views


async def test_every_view_of_a_completed_task_is_redacted_and_the_handler_got_it_whole(
    api: Api, clients: Clients
) -> None:
    resp = await api.post("/v1/jobs", json={"type": "mail", "payload": mail_payload()},
                          headers=CLIENT)  # fmt: skip
    assert resp.status == 202, await resp.text()
    task_id = (await resp.json())["taskId"]
    # Queued, the record holds the data whole: the views redact it.
    for view, text in await every_view(api, task_id):
        assert_clean(text)
        assert view["payload"] == REDACTED_PAYLOAD and view["result"] is None
    async with InProcessWorker(clients, "high"):
        await wait_state(clients, task_id, TaskState.COMPLETED)

    assert await handler_saw(clients, task_id) == mail_payload()
    for view, text in await every_view(api, task_id):
        assert_clean(text)
        assert view["payload"] == REDACTED_PAYLOAD
        assert view["result"] == {"sentTo": REDACTED, "messageId": f"<{task_id}@relayq.test>"}
    # Finished for good: the stored record holds the data no more.
    doc = await clients.store.tasks.find_one({"_id": task_id})
    assert doc is not None
    assert_clean(repr(doc))


async def test_dead_letter_and_review_listings_and_errors_are_redacted(
    api: Api, clients: Clients
) -> None:
    dead = (
        await clients.service.submit(JobRequest("mail", mail_payload(outcome="permanent")))
    ).task
    parked = (await clients.service.submit(JobRequest("mail", mail_payload(outcome="review")))).task
    async with InProcessWorker(clients, "high"):
        await wait_state(clients, dead.id, TaskState.FAILED)
        await wait_state(clients, parked.id, TaskState.NEEDS_REVIEW)

    assert await handler_saw(clients, dead.id) == mail_payload(outcome="permanent")
    letters, text = await get_json(api, "/v1/admin/dead-letters", ADMIN)
    assert_clean(text)
    (letter,) = letters["tasks"]
    assert letter["payload"]["to"] == REDACTED and letter["payload"]["outcome"] == "permanent"
    assert letter["lastError"] == f"PermanentError: mailbox {REDACTED} does not exist"
    review, text = await get_json(api, "/v1/admin/review", ADMIN)
    assert_clean(text)
    (in_review,) = review["tasks"]
    assert in_review["taskId"] == parked.id and in_review["payload"]["link"] == REDACTED
    # Either may run again (an operator retries or releases it): the record keeps the data.
    for task_id in (dead.id, parked.id):
        stored = await clients.store.get(task_id)
        assert stored is not None and stored.payload["to"] == ADDRESS
    assert in_review["review"]["details"]["bounce"] == f"550 {REDACTED} unknown"
    retried = await clients.service.retry_dead_letter(dead.id)
    assert retried is not None and retried.payload["to"] == ADDRESS
    # Cancelled, the parked task is finished for good: its review loses the values too.
    await clients.service.cancel(parked.id, "the user gave up")
    doc = await clients.store.tasks.find_one({"_id": parked.id})
    assert doc is not None and doc["review"]["reason"] == "bounced"
    assert_clean(repr(doc))


async def test_a_cancelled_task_loses_its_declared_fields_from_the_record(
    api: Api, clients: Clients
) -> None:
    task = (await clients.service.submit(JobRequest("mail", mail_payload(), delay_seconds=60))).task

    resp = await api.post(f"/v1/admin/tasks/{task.id}/cancel", json={"reason": "asked"},
                          headers=ADMIN)  # fmt: skip

    assert resp.status == 200
    assert_clean(await resp.text())
    doc = await clients.store.tasks.find_one({"_id": task.id})
    assert doc is not None and doc["state"] == "cancelled"
    assert_clean(repr(doc))
    assert doc["payload"]["user"] == {"name": "Alice", "email": REDACTED}


async def test_an_idempotent_replay_after_the_record_was_stripped_still_replays(
    api: Api, clients: Clients
) -> None:
    job = {"type": "mail", "payload": mail_payload()}
    key = {**CLIENT, "Idempotency-Key": "reset-alice-1"}
    first = await api.post("/v1/jobs", json=job, headers=key)
    assert first.status == 202
    task_id = (await first.json())["taskId"]
    async with InProcessWorker(clients, "high"):
        await wait_state(clients, task_id, TaskState.COMPLETED)
    doc = await clients.store.tasks.find_one({"_id": task_id})
    assert doc is not None and doc["payload"]["to"] == REDACTED

    replay = await api.post("/v1/jobs", json=job, headers=key)
    other = await api.post("/v1/jobs", json={**job, "payload": mail_payload(to="eve@example.com")},
                           headers=key)  # fmt: skip

    assert replay.status == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert (await replay.json())["taskId"] == task_id
    assert other.status == 409
    assert (await other.json())["code"] == "idempotency-conflict"


async def test_no_log_line_carries_the_declared_data(
    api: Api, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # As relayq's logging keeps them (tests/unit/test_redaction.py): PyMongo's command
    # log would print every document whole.
    for name in DOCUMENT_LOGGERS:
        caplog.set_level(logging.INFO, logger=name)
    ids = [
        (await clients.service.submit(JobRequest("mail", mail_payload(outcome=o)))).task.id
        for o in ("permanent", "review", "sent")
    ]
    async with InProcessWorker(clients, "high"):
        for task_id, state in zip(
            ids, (TaskState.FAILED, TaskState.NEEDS_REVIEW, TaskState.COMPLETED), strict=True
        ):
            await wait_state(clients, task_id, state)
    await api.get(f"/v1/admin/tasks/{ids[0]}", headers=ADMIN)

    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any("job dead-lettered" in line for line in lines)
    for line in lines:
        assert_clean(line)
