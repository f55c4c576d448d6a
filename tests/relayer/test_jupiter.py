"""The Jupiter-compatible swap source against a stub of that API at the network boundary.

The stub answers `GET /quote` and `POST /swap-instructions` in Jupiter's
documented shapes; the relayer's side (parsing, amounts, errors) is real.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM

from relayq.relayer.baskets import BasketToken
from relayq.relayer.chain.errors import ChainUnavailable
from relayq.relayer.chain.rpc import SolanaRpc
from relayq.relayer.chain.swap import WRAPPED_SOL_MINT, InsufficientLiquidity, JupiterSwap

MINT = Keypair().pubkey()
TOKEN = BasketToken("JUPT", MINT, 6, 1, None)


def _ix(program: Pubkey, data: bytes, keys: list[tuple[Pubkey, bool, bool]]) -> dict[str, Any]:
    return {
        "programId": str(program),
        "accounts": [{"pubkey": str(k), "isSigner": s, "isWritable": w} for k, s, w in keys],
        "data": base64.b64encode(data).decode(),
    }


class JupiterStub:
    def __init__(self) -> None:
        self.quotes: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.fail_next: int = 0
        self.no_route = False

    async def quote(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"error": "busy"}, status=503)
        if self.no_route:
            return web.json_response(
                {"error": "No routes found", "errorCode": "COULD_NOT_FIND_ANY_ROUTE"}, status=400
            )
        q = dict(request.query)
        self.quotes.append(q)
        out = int(q["amount"]) * 1000
        return web.json_response({
            "inputMint": q["inputMint"], "outputMint": q["outputMint"], "inAmount": q["amount"],
            "outAmount": str(out), "otherAmountThreshold": str(out * 995 // 1000),
            "slippageBps": int(q["slippageBps"]), "swapMode": "ExactIn", "routePlan": [],
        })  # fmt: skip

    async def instructions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        user = Pubkey.from_string(body["userPublicKey"])
        swap = _ix(SYSTEM_PROGRAM, b"\x02\x03", [(user, True, True), (MINT, False, False)])
        return web.json_response({
            "computeBudgetInstructions": [],
            "setupInstructions": [_ix(SYSTEM_PROGRAM, b"\x01", [(user, True, True)])],
            "swapInstruction": swap,
            "cleanupInstruction": None,
            "otherInstructions": [],
            "addressLookupTableAddresses": [],
        })  # fmt: skip


@pytest.fixture
async def jupiter() -> AsyncIterator[tuple[JupiterStub, str]]:
    stub = JupiterStub()
    app = web.Application()
    app.router.add_get("/swap/v1/quote", stub.quote)
    app.router.add_post("/swap/v1/swap-instructions", stub.instructions)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield stub, f"http://127.0.0.1:{server.port}/swap/v1"
    await server.close()


async def test_a_leg_is_the_quotes_guaranteed_amount_with_its_instructions(
    jupiter: tuple[JupiterStub, str],
) -> None:
    stub, url = jupiter
    rpc = SolanaRpc("http://127.0.0.1:1")  # no lookup tables: the RPC is never called
    swap = JupiterSwap(url, rpc, slippage_bps=50)
    relayer = Keypair().pubkey()
    try:
        plan = await swap.plan(relayer, TOKEN, 2_000_000)
    finally:
        await swap.close()
        await rpc.close()
    assert stub.quotes == [{"inputMint": WRAPPED_SOL_MINT, "outputMint": str(MINT),
                            "amount": "2000000", "slippageBps": "50"}]  # fmt: skip
    assert stub.bodies[0]["userPublicKey"] == str(relayer)
    assert stub.bodies[0]["quoteResponse"]["outAmount"] == "2000000000"
    assert plan.leg.amount == 2_000_000_000 * 995 // 1000  # otherAmountThreshold
    assert [bytes(i.data) for i in plan.instructions] == [b"\x01", b"\x02\x03"]
    assert plan.instructions[1].accounts[0].is_signer and plan.signers == []


async def test_busy_api_is_retried_and_no_route_is_insufficient_liquidity(
    jupiter: tuple[JupiterStub, str],
) -> None:
    stub, url = jupiter
    rpc = SolanaRpc("http://127.0.0.1:1")
    swap = JupiterSwap(url, rpc, slippage_bps=50)
    try:
        stub.fail_next = 2  # absorbed by the retries
        plan = await swap.plan(Keypair().pubkey(), TOKEN, 1000)
        assert plan.leg.amount > 0
        stub.fail_next = 10
        with pytest.raises(ChainUnavailable):
            await swap.plan(Keypair().pubkey(), TOKEN, 1000)
        stub.fail_next, stub.no_route = 0, True
        with pytest.raises(InsufficientLiquidity):
            await swap.plan(Keypair().pubkey(), TOKEN, 1000)
    finally:
        await swap.close()
        await rpc.close()
