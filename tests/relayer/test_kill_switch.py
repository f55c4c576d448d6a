"""The purchase kill switch: new purchases stop at once, what is in flight finishes."""

from __future__ import annotations

import uuid
from dataclasses import replace

from relayq.core.clients import Clients, open_clients
from relayq.core.jobs import TaskState
from relayq.core.modules import ProcessContext
from relayq.core.settings import Settings
from relayq.core.switches import REFRESH_SECONDS, Switches
from relayq.dev.servers import free_port
from tests.conftest import InProcessWorker, wait_until
from tests.gateway import ADMIN, CLIENT, problem
from tests.integration.conftest import Api

WALLET = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
BODY = {"wallet": WALLET, "solAmount": 0.1, "bundleId": "starter"}


def buyer() -> dict[str, str]:
    return {**CLIENT, "Idempotency-Key": uuid.uuid4().hex}


async def test_paused_purchases_answer_503_and_sign_nothing(gateway: Api, clients: Clients) -> None:
    paused = await gateway.post(
        "/v1/admin/purchases/pause", json={"reason": "contract upgrade"}, headers=ADMIN
    )
    assert paused.status == 200, await paused.text()
    assert (await paused.json())["paused"] is True

    resp = await gateway.post("/v1/buy-tokens", json=BODY, headers=buyer())

    body = await problem(resp, 503, "purchases-paused")
    assert "contract upgrade" in body["detail"] and int(resp.headers["Retry-After"]) >= 1
    assert await clients.store.tasks.count_documents({}) == 0
    assert await clients.store.tasks.database["purchases"].count_documents({}) == 0
    state = await (await gateway.get("/v1/admin/purchases", headers=ADMIN)).json()
    assert state["paused"] is True and state["reason"] == "contract upgrade" and state["since"]


async def test_resumed_purchases_are_accepted_again(gateway: Api) -> None:
    await gateway.post("/v1/admin/purchases/pause", json={"reason": "x"}, headers=ADMIN)
    resumed = await gateway.post("/v1/admin/purchases/resume", headers=ADMIN)
    assert (await resumed.json()) == {"paused": False, "reason": None, "since": None}

    resp = await gateway.post("/v1/buy-tokens", json=BODY, headers=buyer())

    assert resp.status == 202, await resp.text()


async def test_a_transfer_in_flight_finishes_while_purchases_are_paused(
    gateway: Api, clients: Clients, process: ProcessContext
) -> None:
    bought = await gateway.post("/v1/buy-tokens", json=BODY, headers=buyer())
    assert bought.status == 202, await bought.text()
    task_id = (await bought.json())["taskId"]
    await gateway.post("/v1/admin/purchases/pause", json={"reason": "incident"}, headers=ADMIN)

    workers = [InProcessWorker(clients, p, process=process) for p in ("critical", "high", "medium")]
    for worker in workers:
        await worker.__aenter__()
    try:

        async def done() -> bool:
            task = await clients.store.get(task_id)
            return task is not None and task.state is TaskState.COMPLETED

        await wait_until(done, timeout=60)
    finally:
        for worker in workers:
            await worker.__aexit__(None, None, None)


async def test_a_pause_set_before_redis_went_away_holds_through_the_outage(
    clients: Clients, settings: Settings
) -> None:
    switches = Switches(clients.redis, clients.queue.keys)
    await switches.set("purchases", "incident")
    assert (await switches.current("purchases")).on
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with open_clients(down) as gone:
        # The same reader, now pointed at a Redis that does not answer.
        switches.redis = gone.redis
        await wait_until(lambda: _later(REFRESH_SECONDS), timeout=5)
        assert (await switches.current("purchases")).on


async def _later(seconds: float) -> bool:
    import asyncio

    await asyncio.sleep(seconds)
    return True


async def test_pausing_needs_a_reason_and_the_admin_token(gateway: Api) -> None:
    no_reason = await gateway.post("/v1/admin/purchases/pause", json={}, headers=ADMIN)
    as_client = await gateway.post(
        "/v1/admin/purchases/pause", json={"reason": "x"}, headers=CLIENT
    )

    await problem(no_reason, 422, "invalid-body", field="reason")
    await problem(as_client, 403, "forbidden")
