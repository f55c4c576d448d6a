"""POST /v1/jobs: record first, then dispatch; idempotency; trace context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from tests.gateway import CLIENT, OTHER_CLIENT, dispatched, problem
from tests.integration.conftest import Api

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_submit_answers_202_with_location_and_records_then_dispatches(
    api: Api, clients: Clients
) -> None:
    resp = await api.post("/v1/jobs", json={"type": "record", "payload": {"n": 1}}, headers=CLIENT)

    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert set(body) == {"taskId", "status", "priority"}
    assert body["status"] == "queued"
    assert body["priority"] == "high"  # the type's default
    assert resp.headers["Location"] == f"/v1/tasks/{body['taskId']}"
    assert "Idempotent-Replayed" not in resp.headers
    task = await clients.store.get(body["taskId"])
    assert task is not None
    assert task.state is TaskState.QUEUED
    assert task.type == "record"
    assert task.payload == {"n": 1}
    assert (await dispatched(clients))["high"] == 1


async def test_submit_honours_priority_and_max_attempts(api: Api, clients: Clients) -> None:
    resp = await api.post(
        "/v1/jobs",
        json={"type": "noop", "priority": "critical", "maxAttempts": 7},
        headers=CLIENT,
    )

    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["priority"] == "critical"
    task = await clients.store.get(body["taskId"])
    assert task is not None
    assert task.priority is Priority.CRITICAL
    assert task.max_attempts == 7
    assert task.payload == {}  # payload defaults to an empty object
    assert (await dispatched(clients))["critical"] == 1


async def test_submit_with_delay_goes_to_the_delayed_set(api: Api, clients: Clients) -> None:
    before = datetime.now(UTC)
    resp = await api.post("/v1/jobs", json={"type": "noop", "delaySeconds": 60}, headers=CLIENT)

    assert resp.status == 202, await resp.text()
    task = await clients.store.get((await resp.json())["taskId"])
    assert task is not None and task.run_at is not None
    assert before + timedelta(seconds=59) < task.run_at < before + timedelta(seconds=62)
    keys = clients.queue.keys.of(Priority.MEDIUM)
    assert await clients.redis.zcard(keys.delayed) == 1
    assert await clients.redis.xlen(keys.stream) == 0


async def test_submit_with_run_at_keeps_the_instant_across_offsets(
    api: Api, clients: Clients
) -> None:
    due = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    in_utc = due.replace(tzinfo=None).isoformat() + "Z"
    plus_two = (due + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00"

    for value in (in_utc, plus_two):
        resp = await api.post("/v1/jobs", json={"type": "noop", "runAt": value}, headers=CLIENT)
        assert resp.status == 202, await resp.text()
        task_id = (await resp.json())["taskId"]
        task = await clients.store.get(task_id)
        assert task is not None
        assert task.run_at == due
        status = await api.get(f"/v1/tasks/{task_id}", headers=CLIENT)
        assert (await status.json())["runAt"] == due.isoformat().replace("+00:00", "Z")


# -- idempotency ----------------------------------------------------------------


async def test_idempotent_replay_returns_the_same_task_marked_replayed(
    api: Api, clients: Clients
) -> None:
    headers = {**CLIENT, "Idempotency-Key": "order-42"}
    job = {"type": "noop", "payload": {"order": 42}}

    first = await api.post("/v1/jobs", json=job, headers=headers)
    second = await api.post("/v1/jobs", json=job, headers=headers)

    assert first.status == 202 and second.status == 202
    assert (await first.json())["taskId"] == (await second.json())["taskId"]
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    assert (await clients.store.list()).tasks.__len__() == 1
    assert (await dispatched(clients))["medium"] == 1  # dispatched once


async def test_idempotency_key_with_another_body_is_a_409_conflict(
    api: Api, clients: Clients
) -> None:
    headers = {**CLIENT, "Idempotency-Key": "order-43"}
    first = await api.post("/v1/jobs", json={"type": "noop", "payload": {"a": 1}}, headers=headers)
    assert first.status == 202

    second = await api.post("/v1/jobs", json={"type": "noop", "payload": {"a": 2}}, headers=headers)

    await problem(second, 409, "idempotency-conflict")
    assert len((await clients.store.list()).tasks) == 1


async def test_same_idempotency_key_from_two_clients_makes_two_tasks(
    api: Api, clients: Clients
) -> None:
    job = {"type": "noop", "payload": {"same": True}}
    a = await api.post("/v1/jobs", json=job, headers={**CLIENT, "Idempotency-Key": "k1"})
    b = await api.post("/v1/jobs", json=job, headers={**OTHER_CLIENT, "Idempotency-Key": "k1"})

    assert a.status == 202 and b.status == 202
    assert (await a.json())["taskId"] != (await b.json())["taskId"]
    assert "Idempotent-Replayed" not in b.headers
    assert len((await clients.store.list()).tasks) == 2


async def test_idempotency_key_longer_than_255_characters_is_refused(
    api: Api, clients: Clients
) -> None:
    ok = await api.post(
        "/v1/jobs", json={"type": "noop"}, headers={**CLIENT, "Idempotency-Key": "k" * 255}
    )
    assert ok.status == 202

    resp = await api.post(
        "/v1/jobs", json={"type": "noop"}, headers={**CLIENT, "Idempotency-Key": "k" * 256}
    )

    await problem(resp, 422, "invalid-payload")
    assert len((await clients.store.list()).tasks) == 1


# -- trace context ----------------------------------------------------------------


async def test_request_id_and_traceparent_travel_into_the_task_trace(
    api: Api, clients: Clients
) -> None:
    resp = await api.post(
        "/v1/jobs",
        json={"type": "noop"},
        headers={**CLIENT, "X-Request-Id": "req-abc-123", "traceparent": TRACEPARENT},
    )

    assert resp.status == 202
    assert resp.headers["X-Request-Id"] == "req-abc-123"
    task = await clients.store.get((await resp.json())["taskId"])
    assert task is not None
    assert task.trace["requestId"] == "req-abc-123"
    assert task.trace["traceparent"] == TRACEPARENT


async def test_generated_request_id_is_the_one_in_the_task_trace(
    api: Api, clients: Clients
) -> None:
    resp = await api.post("/v1/jobs", json={"type": "noop"}, headers=CLIENT)

    assert resp.status == 202
    generated = resp.headers["X-Request-Id"]
    assert generated
    task = await clients.store.get((await resp.json())["taskId"])
    assert task is not None
    assert task.trace["requestId"] == generated
    assert "traceparent" not in task.trace
