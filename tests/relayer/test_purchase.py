"""A purchase end to end on the local chain: swap in the request, transfer and records after."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from prometheus_client import REGISTRY
from pytest_aiohttp import AiohttpClient

from relayq.api.app import create_app
from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.modules import ProcessContext
from relayq.core.settings import Settings
from relayq.relayer.relayer import Relayer
from tests.conftest import InProcessWorker, wait_until
from tests.gateway import CLIENT, api_settings, problem
from tests.integration.conftest import Api
from tests.relayer.conftest import FINALITY_LAG, VALIDITY_SLOTS, Devchain, contract_balances

WALLET = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"


def buyer(key: str | None = None) -> dict[str, str]:
    return {**CLIENT, "Idempotency-Key": key or uuid.uuid4().hex}


async def buy(gateway: Api, sol: Any = 0.5, bundle: str = "starter", key: str | None = None) -> Any:
    return await gateway.post(
        "/v1/buy-tokens",
        json={"wallet": WALLET, "solAmount": sol, "bundleId": bundle},
        headers=buyer(key),
    )


def workers(clients: Clients, process: ProcessContext) -> list[InProcessWorker]:
    return [InProcessWorker(clients, p, process=process) for p in ("critical", "high", "medium")]


async def finished(clients: Clients, task_id: str) -> Any:
    task = await clients.store.get(task_id)
    return task if task is not None and task.state.finished else None


async def test_purchase_moves_exactly_the_bought_amount_to_the_contract(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext
) -> None:
    before = await contract_balances(relayer)
    resp = await buy(gateway, sol=1.5)
    body = await resp.json()
    assert resp.status == 202, body
    assert body["status"] == "queued"
    assert len(body["swapSignatures"]) == 1
    bought = {t["mint"]: int(t["amount"]) for t in body["tokens"]}
    assert len(bought) == 3 and all(v > 0 for v in bought.values())

    ws = workers(clients, process)
    for w in ws:
        await w.__aenter__()
    try:
        task = await wait_until(lambda: finished(clients, body["taskId"]), timeout=30)
        assert task.state is TaskState.COMPLETED, task.last_error
        purchase = await wait_until(lambda: _recorded(relayer, body["taskId"]), timeout=20)
    finally:
        for w in ws:
            await w.stop()

    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in bought} == bought
    assert len(purchase.transfer["signatures"]) == 1
    holding = await relayer.purchases.holding(WALLET)
    assert all(holding[m] >= amount for m, amount in bought.items())

    view = await (await gateway.get(f"/v1/tasks/{body['taskId']}", headers=CLIENT)).json()
    p = view["purchase"]
    assert p["swap"]["state"] == "landed"
    assert [s["signature"] for s in p["swap"]["signatures"]] == body["swapSignatures"]
    assert p["swap"]["signatures"][0]["chainState"] in ("confirmed", "finalized")
    assert p["transfer"]["state"] == "confirmed"
    assert p["transfer"]["chainState"] in ("confirmed", "finalized")
    assert p["recorded"] is True


async def _recorded(relayer: Relayer, task_id: str) -> Any:
    purchase = await relayer.purchases.get(task_id)
    return purchase if purchase is not None and purchase.recorded else None


async def test_replayed_idempotency_key_returns_the_same_task_without_a_second_swap(
    gateway: Api, clients: Clients, relayer: Relayer, chain: Devchain
) -> None:
    key = uuid.uuid4().hex
    first = await buy(gateway, key=key)
    landed_before = (await chain.state())["bundlesLanded"]
    second = await buy(gateway, key=key)
    assert first.status == 202 and second.status == 202
    a, b = await first.json(), await second.json()
    assert a["taskId"] == b["taskId"] and a["swapSignatures"] == b["swapSignatures"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert (await chain.state())["bundlesLanded"] == landed_before
    conflict = await buy(gateway, sol=0.75, key=key)
    await problem(conflict, 409, "idempotency-conflict", field="Idempotency-Key")


async def test_bundles_lists_what_can_be_bought(gateway: Api, relayer: Relayer) -> None:
    resp = await gateway.get("/v1/bundles", headers=CLIENT)
    assert resp.status == 200
    bundles = {b["id"]: b for b in (await resp.json())["bundles"]}
    starter = bundles["starter"]
    assert starter["priceSource"] == "treasury"
    assert [t["symbol"] for t in starter["tokens"]] == ["RLQA", "RLQB", "RLQC"]
    assert abs(sum(t["weight"] for t in starter["tokens"]) - 1) < 1e-9
    assert starter["limits"] == {"minSol": 0.001, "maxSol": 100.0}


async def test_bad_purchases_get_clear_errors_and_write_nothing(
    gateway: Api, clients: Clients
) -> None:
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"wallet": "not-base58!", "solAmount": 1, "bundleId": "starter"}, 422,
         "invalid-payload", "wallet"),
        ({"wallet": WALLET, "solAmount": 0, "bundleId": "starter"}, 422, "invalid-payload",
         "solAmount"),
        ({"wallet": WALLET, "solAmount": -1, "bundleId": "starter"}, 422, "invalid-payload",
         "solAmount"),
        ({"wallet": WALLET, "solAmount": "0.0000000001", "bundleId": "starter"}, 422,
         "invalid-payload", "solAmount"),
        ({"wallet": WALLET, "solAmount": True, "bundleId": "starter"}, 422, "invalid-payload",
         "solAmount"),
        ({"wallet": WALLET, "solAmount": 101, "bundleId": "starter"}, 422, "invalid-payload",
         "solAmount"),
        ({"wallet": WALLET, "solAmount": 1, "bundleId": "nope"}, 422, "unknown-bundle",
         "bundleId"),
        ({"wallet": WALLET, "solAmount": "sNaN", "bundleId": "starter"}, 422, "invalid-payload",
         "solAmount"),
        ({"wallet": WALLET, "solAmount": "1e999999999", "bundleId": "starter"}, 422,
         "invalid-payload", "solAmount"),
        ({"wallet": WALLET, "solAmount": 1e300, "bundleId": "starter"}, 422, "invalid-payload",
         "solAmount"),
        ({"wallet": WALLET, "solAmount": [1], "bundleId": "starter"}, 422, "invalid-payload",
         "solAmount"),
        ({"wallet": WALLET, "bundleId": "starter"}, 422, "invalid-body", "solAmount"),
        ({"wallet": 5, "solAmount": 1, "bundleId": "starter"}, 422, "invalid-body", "wallet"),
        ({"wallet": WALLET, "solAmount": 1, "bundleId": "starter", "x": 1}, 422,
         "invalid-body", "x"),
    ]  # fmt: skip
    for body, status, code, field in cases:
        resp = await gateway.post("/v1/buy-tokens", json=body, headers=buyer())
        await problem(resp, status, code, field=field)
    missing_key = await gateway.post(
        "/v1/buy-tokens", json={"wallet": WALLET, "solAmount": 1, "bundleId": "starter"},
        headers=CLIENT,
    )  # fmt: skip
    await problem(missing_key, 428, "idempotency-key-required", field="Idempotency-Key")
    assert await clients.store.count(state=TaskState.PENDING) == 0
    assert await clients.store.count(state=TaskState.QUEUED) == 0


async def test_relayer_steps_cannot_be_submitted_by_clients(gateway: Api) -> None:
    for job_type in ("token_transfer", "swap_settle", "db_update"):
        resp = await gateway.post(
            "/v1/jobs", json={"type": job_type, "payload": {"purchaseId": "0" * 32}},
            headers=CLIENT,
        )  # fmt: skip
        await problem(resp, 422, "internal-job-type", field="type")


async def test_purchase_routes_answer_503_without_a_relayer(
    aiohttp_client: AiohttpClient, settings: Settings, clients: Clients
) -> None:
    api = await aiohttp_client(create_app(settings, api_settings()))
    resp = await api.post(
        "/v1/buy-tokens", json={"wallet": WALLET, "solAmount": 1, "bundleId": "starter"},
        headers=buyer(),
    )  # fmt: skip
    await problem(resp, 503, "relayer-unavailable")
    await problem(await api.get("/v1/bundles", headers=CLIENT), 503, "relayer-unavailable")


async def test_a_swap_that_never_landed_dead_letters_its_task_and_is_counted(
    gateway: Api, clients: Clients, relayer: Relayer, chain: Devchain
) -> None:
    labels = {"priority": "high", "reason": "refused"}
    before = REGISTRY.get_sample_value("relayq_jobs_dead_lettered_total", labels) or 0.0
    landed = (await chain.state())["bundlesLanded"]
    await chain.faults(dropBundles=1)  # accepted by the block engine, never lands
    request = asyncio.create_task(buy(gateway))

    async def sent() -> bool:
        found = await relayer.purchases.purchases.find_one({"swap.bundleId": {"$exists": True}})
        return found is not None

    await wait_until(sent, timeout=10)
    # The blockhash expires at finalized with no signature of the bundle landed: the
    # chain's verdict.
    await chain.faults(advanceSlots=VALIDITY_SLOTS + FINALITY_LAG + 20)
    resp = await request
    body = await resp.json()

    assert resp.status == 200 and body["status"] == "failed", body
    task = await clients.store.get(body["taskId"])
    assert task is not None and task.state is TaskState.FAILED
    assert REGISTRY.get_sample_value("relayq_jobs_dead_lettered_total", labels) == before + 1
    assert (await chain.state())["bundlesLanded"] == landed


async def test_a_node_error_while_polling_a_sent_swap_is_not_a_verdict(
    gateway: Api, clients: Clients, relayer: Relayer, chain: Devchain, process: ProcessContext
) -> None:
    # After the bundle is sent, a JSON-RPC error (a node behind or unhealthy)
    # says nothing about the swap: only the chain's verdict may fail a purchase.
    before = await contract_balances(relayer)
    await chain.faults(rpcErrors=1, methods=["getSignatureStatuses"], rpcErrorStatus=200)
    resp = await buy(gateway, sol=0.5)
    body = await resp.json()

    assert resp.status == 202 and body["status"] != "failed", body
    async with (
        InProcessWorker(clients, "critical", process=process),
        InProcessWorker(clients, "high", process=process),
        InProcessWorker(clients, "medium", process=process),
    ):
        task = await wait_until(lambda: finished(clients, body["taskId"]), timeout=40)
    assert task.state is TaskState.COMPLETED, task.last_error
    after = await contract_balances(relayer)
    bought = {t["mint"]: int(t["amount"]) for t in body["tokens"]}
    assert {m: after[m] - before[m] for m in bought} == bought
