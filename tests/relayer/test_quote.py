"""GET /v1/quote: what a purchase would buy now, with nothing signed or recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from relayq.core.clients import Clients
from relayq.relayer.relayer import Relayer
from tests.gateway import CLIENT, problem
from tests.integration.conftest import Api
from tests.relayer.conftest import Devchain
from tests.relayer.test_purchase import WALLET


async def quote(gateway: Api, **params: str) -> object:
    return await gateway.get("/v1/quote", params=params, headers=CLIENT)


async def test_a_quote_gives_what_the_purchase_then_buys_and_records_nothing(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    resp = await quote(gateway, bundleId="starter", solAmount="0.5")

    assert resp.status == 200, await resp.text()  # type: ignore[attr-defined]
    q = await resp.json()  # type: ignore[attr-defined]
    assert q["bundleId"] == "starter" and q["solAmount"] == 0.5
    assert q["fees"]["tipLamports"] == relayer.chain.tip_lamports
    assert q["fees"]["networkFeeLamports"] > 0
    left = datetime.fromisoformat(q["expiresAt"]) - datetime.now(UTC)
    assert 0 < left.total_seconds() <= 31
    assert sum(t["solAmount"] for t in q["tokens"]) == 0.5
    assert await clients.store.tasks.count_documents({}) == 0
    assert await clients.store.tasks.database["purchases"].count_documents({}) == 0

    bought = await gateway.post(
        "/v1/buy-tokens",
        json={"wallet": WALLET, "solAmount": 0.5, "bundleId": "starter"},
        headers={**CLIENT, "Idempotency-Key": uuid.uuid4().hex},
    )
    body = await bought.json()
    assert bought.status == 202, body
    assert [(t["mint"], t["amount"]) for t in body["tokens"]] == [
        (t["mint"], t["amount"]) for t in q["tokens"]
    ]


async def test_a_quote_refuses_what_a_purchase_would_refuse(gateway: Api) -> None:
    unknown = await quote(gateway, bundleId="nope", solAmount="0.5")
    too_much = await quote(gateway, bundleId="starter", solAmount="100000")
    not_a_number = await quote(gateway, bundleId="starter", solAmount="lots")
    no_bundle = await quote(gateway, solAmount="0.5")
    anonymous = await gateway.get("/v1/quote", params={"bundleId": "starter", "solAmount": "1"})

    await problem(unknown, 422, "unknown-bundle", field="bundleId")  # type: ignore[arg-type]
    await problem(too_much, 422, "invalid-payload", field="solAmount")  # type: ignore[arg-type]
    await problem(not_a_number, 400, "invalid-query")  # type: ignore[arg-type]
    await problem(no_bundle, 400, "invalid-query")  # type: ignore[arg-type]
    await problem(anonymous, 401, "unauthorized")


async def test_a_quote_while_the_chain_cannot_answer_is_503(gateway: Api, chain: Devchain) -> None:
    await chain.faults(rpcErrors=1000, methods=["getTokenAccountBalance"])

    resp = await quote(gateway, bundleId="starter", solAmount="0.5")

    await problem(resp, 503, "chain-unavailable")  # type: ignore[arg-type]
