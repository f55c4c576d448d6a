"""A Jupiter-compatible swap API at the network boundary, honest unless a test bends it.

It answers `GET /quote` and `POST /swap-instructions` in Jupiter's documented
shapes (v6 `route` instruction, wrapped-SOL setup and cleanup) for whatever
relayer and mint it is asked about.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    close_account,
    create_idempotent_associated_token_account,
    get_associated_token_address,
    sync_native,
)
from spl.token.models import CloseAccountParams, SyncNativeParams

WSOL = Pubkey.from_string("So11111111111111111111111111111111111111112")
JUPITER_V6 = Pubkey.from_string("JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4")
EVENT_AUTHORITY = Pubkey.from_string("D8cy77BBepLMngZx6ZukaTff5hCt1HrWyKk3Hnd9oitf")
ROUTE_DISCRIMINATOR = bytes.fromhex("e517cb977ae3ad2a")
OUTSIDER = Keypair().pubkey()
# The AMM the honest route goes through: its program, its fixed authority, one pool
# and the pool's two vaults. Jupiter names each hop's accounts after its own.
AMM = Keypair().pubkey()
AMM_AUTHORITY = Keypair().pubkey()
POOL = Keypair().pubkey()
POOL_VAULTS = (Keypair().pubkey(), Keypair().pubkey())

Quote = dict[str, Any]
Found = dict[str, Any]


def ix_json(ix: Instruction) -> dict[str, Any]:
    return {
        "programId": str(ix.program_id),
        "accounts": [
            {"pubkey": str(a.pubkey), "isSigner": a.is_signer, "isWritable": a.is_writable}
            for a in ix.accounts
        ],
        "data": base64.b64encode(bytes(ix.data)).decode(),
    }


def pool_hop(
    pool: Pubkey = POOL, vaults: tuple[Pubkey, ...] = POOL_VAULTS, authority_writable: bool = False
) -> list[AccountMeta]:
    """The accounts of one hop through `AMM`: its program, authority, pool and vaults."""
    return [
        AccountMeta(AMM, False, False),
        AccountMeta(AMM_AUTHORITY, False, authority_writable),
        AccountMeta(pool, False, True),
        *(AccountMeta(v, False, True) for v in vaults),
    ]


def declared_pools() -> dict[str, Any]:
    """The pools file declaring what the honest route names (`RELAYQ_SWAP_POOLS_FILE`)."""
    return {
        "programs": [
            {"program": str(JUPITER_V6), "accounts": [str(EVENT_AUTHORITY)]},
            {
                "program": str(AMM),
                "accounts": [str(AMM_AUTHORITY)],
                "pools": [{"address": str(POOL), "accounts": [str(v) for v in POOL_VAULTS]}],
            },
        ]
    }


def write_declared_pools(directory: Path) -> str:
    """Writes `declared_pools()` to a file in `directory`; its path."""
    path = directory / "pools.json"
    path.write_text(json.dumps(declared_pools()))
    return str(path)


def route(
    user: Pubkey,
    out_mint: Pubkey,
    lamports: int,
    dest: Pubkey | None = None,
    payee: Pubkey | None = None,
    hop: list[AccountMeta] | None = None,
) -> Instruction:
    """Jupiter v6 `route`: the user's wrapped SOL in, `dest` (default the user's account) out.

    Through `hop` (default the declared pool of `AMM`).
    """
    wsol = get_associated_token_address(user, WSOL)
    out = dest or get_associated_token_address(user, out_mint)
    return Instruction(
        JUPITER_V6,
        ROUTE_DISCRIMINATOR + lamports.to_bytes(8, "little"),
        [
            AccountMeta(TOKEN_PROGRAM_ID, False, False),
            AccountMeta(user, True, False),  # user transfer authority
            AccountMeta(wsol, False, True),  # user source token account
            AccountMeta(out, False, True),  # user destination token account
            AccountMeta(payee or JUPITER_V6, False, payee is not None),  # destination (none)
            AccountMeta(out_mint, False, False),
            AccountMeta(JUPITER_V6, False, False),  # platform fee account (none)
            AccountMeta(EVENT_AUTHORITY, False, False),
            AccountMeta(JUPITER_V6, False, False),
            *(pool_hop() if hop is None else hop),
        ],
    )


def wsol_transfer(user: Pubkey, lamports: int) -> Instruction:
    wsol = get_associated_token_address(user, WSOL)
    return transfer(TransferParams(from_pubkey=user, to_pubkey=wsol, lamports=lamports))


def honest_instructions(user: Pubkey, out_mint: Pubkey, lamports: int) -> Found:
    """What Jupiter answers for SOL -> out_mint: wrap the SOL, route, unwrap what is left."""
    wsol = get_associated_token_address(user, WSOL)
    close = CloseAccountParams(program_id=TOKEN_PROGRAM_ID, account=wsol, dest=user, owner=user)
    return {
        "computeBudgetInstructions": [],
        "setupInstructions": [
            ix_json(create_idempotent_associated_token_account(user, user, WSOL)),
            ix_json(wsol_transfer(user, lamports)),
            ix_json(sync_native(SyncNativeParams(program_id=TOKEN_PROGRAM_ID, account=wsol))),
            ix_json(create_idempotent_associated_token_account(user, user, out_mint)),
        ],
        "swapInstruction": ix_json(route(user, out_mint, lamports)),
        "cleanupInstruction": ix_json(close_account(close)),
        "otherInstructions": [],
        "addressLookupTableAddresses": [],
    }


class JupiterStub:
    """Honest answers, unless `bend_quote` or `bend_instructions` changes them.

    `fail_next` answers that many requests with 503; `no_route` answers the
    quote with Jupiter's 400 "no route".
    """

    def __init__(self) -> None:
        self.bend_quote: Callable[[Quote], Any] = lambda q: q
        self.bend_instructions: Callable[[Found, Pubkey, Quote], Any] = lambda f, u, q: f
        self.quotes: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.fail_next = 0
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
        quote = {
            "inputMint": q["inputMint"], "outputMint": q["outputMint"], "inAmount": q["amount"],
            "outAmount": str(out),
            "otherAmountThreshold": str(out * (10_000 - int(q["slippageBps"])) // 10_000),
            "slippageBps": int(q["slippageBps"]), "swapMode": "ExactIn", "routePlan": [],
        }  # fmt: skip
        return web.json_response(self.bend_quote(quote))

    async def instructions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        quote = body["quoteResponse"]
        user = Pubkey.from_string(body["userPublicKey"])
        found = honest_instructions(
            user, Pubkey.from_string(quote["outputMint"]), int(quote["inAmount"])
        )
        return web.json_response(self.bend_instructions(found, user, quote))


@pytest.fixture
async def jupiter() -> AsyncIterator[tuple[JupiterStub, str]]:
    """The stub on a free loopback port, and its base URL."""
    stub = JupiterStub()
    app = web.Application()
    app.router.add_get("/swap/v1/quote", stub.quote)
    app.router.add_post("/swap/v1/swap-instructions", stub.instructions)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield stub, f"http://127.0.0.1:{server.port}/swap/v1"
    await server.close()
