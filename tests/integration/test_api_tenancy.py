"""Tenancy: a client sees only its own tasks; another client's task does not exist for it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relayq.core.clients import Clients
from relayq.core.jobs import InvalidPayload
from relayq.core.service import JobRequest
from tests.gateway import ADMIN, CLIENT, OTHER_CLIENT, problem
from tests.integration.conftest import Api


async def submit(api: Api, headers: dict[str, str], **job: Any) -> str:
    resp = await api.post("/v1/jobs", json={"type": "noop", **job}, headers=headers)
    assert resp.status == 202, await resp.text()
    task_id: str = (await resp.json())["taskId"]
    return task_id


async def test_another_clients_task_is_not_found(api: Api) -> None:
    mine = await submit(api, CLIENT, payload={"secret": "a's"})

    theirs = await api.get(f"/v1/tasks/{mine}", headers=OTHER_CLIENT)
    own = await api.get(f"/v1/tasks/{mine}", headers=CLIENT)

    await problem(theirs, 404, "task-not-found")  # 404, not 403: no existence oracle
    assert own.status == 200 and (await own.json())["payload"] == {"secret": "a's"}


async def test_listings_show_only_the_callers_tasks(api: Api) -> None:
    a = {await submit(api, CLIENT) for _ in range(3)}
    b = {await submit(api, OTHER_CLIENT) for _ in range(2)}

    for headers, expected in ((CLIENT, a), (OTHER_CLIENT, b)):
        listed = await (await api.get("/v1/tasks", headers=headers)).json()
        assert {t["taskId"] for t in listed["tasks"]} == expected
        by_state = await (await api.get("/v1/tasks?state=queued", headers=headers)).json()
        assert {t["taskId"] for t in by_state["tasks"]} == expected
        by_type = await (await api.get("/v1/tasks?type=noop&limit=1", headers=headers)).json()
        assert len(by_type["tasks"]) == 1 and by_type["tasks"][0]["taskId"] in expected


async def test_tasks_created_outside_the_gateway_are_no_clients(api: Api, clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))  # the CLI, a job module

    await problem(await api.get(f"/v1/tasks/{sub.task.id}", headers=CLIENT), 404, "task-not-found")
    listed = await (await api.get("/v1/tasks", headers=CLIENT)).json()
    assert listed["tasks"] == []


async def test_admin_sees_every_task_and_filters_by_client(api: Api) -> None:
    a = await submit(api, CLIENT)
    b = await submit(api, OTHER_CLIENT)

    everything = await (await api.get("/v1/admin/tasks", headers=ADMIN)).json()
    only_b = await (await api.get("/v1/admin/tasks?client=client-b", headers=ADMIN)).json()
    one = await api.get(f"/v1/admin/tasks/{a}", headers=ADMIN)

    assert {t["taskId"] for t in everything["tasks"]} == {a, b}
    assert [t["taskId"] for t in only_b["tasks"]] == [b]
    assert only_b["tasks"][0]["client"] == "client-b"
    assert one.status == 200 and (await one.json())["client"] == "client-a"


async def test_the_same_idempotency_key_of_two_clients_makes_two_tasks(api: Api) -> None:
    key = {"Idempotency-Key": "order-1"}
    a = await submit(api, {**CLIENT, **key})
    b = await submit(api, {**OTHER_CLIENT, **key})
    again = await submit(api, {**CLIENT, **key})

    assert a != b and again == a


@pytest.mark.parametrize(
    "key",
    ["x" * 256, "caf\u00e9", "tab\there", ""],
    ids=["too-long", "not-ascii", "control", "empty"],
)
async def test_an_idempotency_key_outside_printable_ascii_or_255_is_422(
    api: Api, clients: Clients, key: str
) -> None:
    resp = await api.post(
        "/v1/jobs", json={"type": "noop"}, headers={**CLIENT, "Idempotency-Key": key}
    )

    await problem(resp, 422, "invalid-payload", field="Idempotency-Key")
    assert await clients.store.tasks.count_documents({}) == 0


async def test_non_utf8_bytes_in_the_idempotency_key_are_422(api: Api, clients: Clients) -> None:
    # Raw bytes on the wire: an HTTP client library would refuse to send them.
    r, w = await asyncio.open_connection(api.server.host, api.server.port)
    body = b'{"type": "noop"}'
    w.write(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-of-client-a\r\n"
        b"Content-Type: application/json\r\nIdempotency-Key: \xff\xfe-order\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await w.drain()
    answer = await r.read()
    w.close()
    status = int(answer.split(b" ", 2)[1])
    assert status == 422, answer[:500]
    assert b'"code": "invalid-payload"' in answer
    assert await clients.store.tasks.count_documents({}) == 0


async def test_migrate_owners_backfills_from_the_scoped_key(clients: Clients) -> None:
    # Records as written before owners: no `owner` field at all.
    keyed = await clients.service.submit(
        JobRequest("noop", {}, idempotency_key="order-9", client="client-a")
    )
    bare = await clients.service.submit(JobRequest("noop", {}))
    await clients.store.tasks.update_many({}, {"$unset": {"owner": ""}})

    assert await clients.store.backfill_owners(batch=1) == (1, 1)
    assert await clients.store.backfill_owners() == (0, 0)  # once
    keyed_now = await clients.store.get(keyed.task.id)
    bare_now = await clients.store.get(bare.task.id)
    assert keyed_now is not None and keyed_now.owner == "client-a"
    assert bare_now is not None and bare_now.owner is None


@pytest.mark.parametrize("client", ["a:b", "", "-lead", "x" * 65, "caf\u00e9"])
async def test_a_client_id_outside_the_charset_is_refused(clients: Clients, client: str) -> None:
    with pytest.raises(InvalidPayload):
        await clients.service.submit(JobRequest("noop", {}, idempotency_key="k", client=client))


async def test_a_bare_key_written_before_scoping_still_replays(clients: Clients) -> None:
    # relayq's own follow-up tasks stored their keys bare before keys were scoped.
    first = await clients.service.submit(JobRequest("noop", {}, idempotency_key="settle:1"))
    await clients.store.tasks.update_one({"_id": first.task.id}, {"$set": {"idem": "settle:1"}})

    again = await clients.service.submit(JobRequest("noop", {}, idempotency_key="settle:1"))
    held = await clients.service.submit_held(JobRequest("noop", {}, idempotency_key="settle:1"))

    assert (again.task.id, again.created) == (first.task.id, False)
    assert (held.task.id, held.created) == (first.task.id, False)
