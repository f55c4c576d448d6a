"""Many purchases at once: every balance adds up exactly."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from pymongo.errors import DuplicateKeyError
from solders.keypair import Keypair

from relayq.core.clients import Clients
from relayq.core.jobs import Task, TaskState
from relayq.core.modules import ProcessContext
from relayq.relayer.relayer import Relayer
from tests.conftest import InProcessWorker, wait_until
from tests.gateway import CLIENT
from tests.integration.conftest import Api
from tests.relayer.conftest import contract_balances

PURCHASES = 200


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_200_concurrent_purchases_add_up_exactly(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext
) -> None:
    wallet = str(Keypair().pubkey())
    before = await contract_balances(relayer)

    async def one(n: int) -> dict[str, Any]:
        resp = await gateway.post(
            "/v1/buy-tokens",
            json={"wallet": wallet, "solAmount": round(0.01 + n / 1000, 3), "bundleId": "starter"},
            headers={**CLIENT, "Idempotency-Key": uuid.uuid4().hex},
        )
        body: dict[str, Any] = await resp.json()
        # 200 with status failed: the swap could not land in time (it moved nothing).
        assert resp.status in (200, 202), body
        return body

    async with (
        InProcessWorker(clients, "critical", process=process),
        InProcessWorker(clients, "high", process=process, concurrency=20),
        InProcessWorker(clients, "medium", process=process, concurrency=10),
    ):
        bodies = await asyncio.gather(*(one(n) for n in range(PURCHASES)))
        ids = [b["taskId"] for b in bodies]
        tasks = await wait_until(lambda: _all_finished(clients, ids), timeout=240, interval=0.5)
        done = [t.id for t in tasks if t.state is TaskState.COMPLETED]
        await wait_until(lambda: _all_recorded(relayer, done), timeout=120, interval=0.5)

    failed = [t for t in tasks if t.state is not TaskState.COMPLETED]
    print(f"\n{len(done)} of {PURCHASES} concurrent purchases completed; {len(failed)} swaps "
          f"failed: {sorted({t.last_error for t in failed})}")  # fmt: skip
    for t in failed:  # a swap that could not land (e.g. its blockhash expired under load)
        purchase = await relayer.purchases.get(t.id)
        assert purchase is not None and purchase.swap["state"] == "failed", t.last_error
        assert "signature" not in purchase.transfer
    assert len(done) >= PURCHASES * 0.9
    expected = _bought(bodies, done)
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in expected} == dict(expected)
    assert await relayer.purchases.holding(wallet) == dict(expected)
    signatures = {(await relayer.purchases.get(i)).transfer["signature"] for i in done}  # type: ignore[union-attr]
    assert len(signatures) == len(done)


def _bought(bodies: list[dict[str, Any]], done: list[str]) -> Counter[str]:
    """Base units per mint the completed purchases bought, as their answers said."""
    expected: Counter[str] = Counter()
    for body in bodies:
        if body["taskId"] in done:
            for token in body["tokens"]:
                expected[token["mint"]] += int(token["amount"])
    return expected


async def _all_finished(clients: Clients, ids: list[str]) -> list[Task] | None:
    tasks = [await clients.store.get(i) for i in ids]
    if all(t is not None and t.state.finished for t in tasks):
        return [t for t in tasks if t is not None]
    return None


async def _all_recorded(relayer: Relayer, ids: list[str]) -> bool:
    count = await relayer.purchases.purchases.count_documents(
        {"_id": {"$in": ids}, "recorded": True}
    )
    return count == len(ids)


IDENTICAL = 12


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_identical_purchases_at_once_each_move_their_own_tokens(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext
) -> None:
    # Same basket, same amount, same moment: without something naming the
    # purchase, their swaps and transfers are byte-identical transactions with one
    # signature, the chain runs each once, and every purchase claims that one.
    before = await contract_balances(relayer)

    async def one() -> dict[str, Any]:
        resp = await gateway.post(
            "/v1/buy-tokens",
            json={"wallet": str(Keypair().pubkey()), "solAmount": 0.1, "bundleId": "starter"},
            headers={**CLIENT, "Idempotency-Key": uuid.uuid4().hex},
        )
        body: dict[str, Any] = await resp.json()
        assert resp.status in (200, 202), body
        return body

    async with (
        InProcessWorker(clients, "critical", process=process),
        InProcessWorker(clients, "high", process=process, concurrency=IDENTICAL),
        InProcessWorker(clients, "medium", process=process, concurrency=IDENTICAL),
    ):
        bodies = await asyncio.gather(*(one() for _ in range(IDENTICAL)))
        ids = [b["taskId"] for b in bodies]
        tasks = await wait_until(lambda: _all_finished(clients, ids), timeout=120, interval=0.5)
    done = [t.id for t in tasks if t.state is TaskState.COMPLETED]
    assert len(done) >= IDENTICAL * 0.9, [t.last_error for t in tasks]

    purchases = [await relayer.purchases.get(i) for i in done]
    swaps = [p.swap["signatures"][0] for p in purchases if p is not None]
    transfers = [p.transfer["signature"] for p in purchases if p is not None]
    assert len(set(swaps)) == len(done), "two purchases recorded one swap"
    assert len(set(transfers)) == len(done), "two purchases recorded one transfer"
    expected = _bought(bodies, done)
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in expected} == dict(expected)


async def test_a_second_purchase_cannot_record_a_signature_another_holds(
    gateway: Api, relayer: Relayer
) -> None:
    # The gateway's startup created the indexes on this test's database.
    records = relayer.purchases.purchases
    await records.insert_many(
        [
            {"_id": "a", "swap": {"signatures": ["s1"]}, "transfer": {"state": "none"}},
            {"_id": "b", "swap": {"signatures": ["s2"]}, "transfer": {"state": "none"}},
        ]
    )
    with pytest.raises(DuplicateKeyError):
        await records.insert_one({"_id": "c", "swap": {"signatures": ["s2", "s3"]}})
    assert await relayer.purchases.put_transfer("a", None, {"signature": "t1", "state": "sent"})
    with pytest.raises(DuplicateKeyError):
        await relayer.purchases.put_transfer("b", None, {"signature": "t1", "state": "sent"})
    # Purchases without a transfer yet do not collide with each other.
    await records.insert_one({"_id": "d", "swap": {"signatures": ["s4"]}, "transfer": {}})
