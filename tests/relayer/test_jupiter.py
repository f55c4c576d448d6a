"""The Jupiter-compatible swap source against a stub of that API at the network boundary.

The stub (`jupiter_stub`) answers `GET /quote` and `POST /swap-instructions` in
Jupiter's documented shapes; the relayer's side (parsing, checks, amounts,
errors) is real.
"""

from __future__ import annotations

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from relayq.relayer.allowlist import JUPITER_V6_PROGRAM_ID, Allowlist, build_allowlist
from relayq.relayer.baskets import Basket, BasketToken
from relayq.relayer.chain.errors import ChainUnavailable
from relayq.relayer.chain.rpc import SolanaRpc
from relayq.relayer.chain.swap import WRAPPED_SOL_MINT, InsufficientLiquidity, JupiterSwap
from tests.relayer.jupiter_stub import JupiterStub, jupiter

__all__ = ["jupiter"]  # the stub's fixture

MINT = Keypair().pubkey()
TOKEN = BasketToken("JUPT", MINT, 6, 1, None)


def allowlist_of(relayer: Pubkey) -> Allowlist:
    basket = Basket("b", "B", (TOKEN,), 1, 10**12)
    return build_allowlist(relayer, Keypair().pubkey(), [basket])


async def test_a_leg_is_the_quotes_guaranteed_amount_with_its_checked_instructions(
    jupiter: tuple[JupiterStub, str],
) -> None:
    stub, url = jupiter
    rpc = SolanaRpc("http://127.0.0.1:1")  # no lookup tables: the RPC is never called
    relayer = Keypair().pubkey()
    swap = JupiterSwap(url, rpc, slippage_bps=50, allowlist=allowlist_of(relayer))
    try:
        plan = await swap.plan(relayer, TOKEN, 2_000_000)
    finally:
        await swap.close()
        await rpc.close()
    assert stub.quotes == [{"inputMint": WRAPPED_SOL_MINT, "outputMint": str(MINT),
                            "amount": "2000000", "slippageBps": "50"}]  # fmt: skip
    assert stub.bodies[0]["userPublicKey"] == str(relayer)
    assert stub.bodies[0]["quoteResponse"]["outAmount"] == "2000000000"
    assert plan.leg.amount == 2_000_000_000 * 9950 // 10_000  # otherAmountThreshold
    # setup (2 account creations, wrap, sync), the route, the unwrap: in Jupiter's order
    assert len(plan.instructions) == 6
    assert plan.instructions[4].program_id == JUPITER_V6_PROGRAM_ID
    assert plan.instructions[4].accounts[1].pubkey == relayer
    assert plan.instructions[4].accounts[1].is_signer and plan.signers == []


async def test_busy_api_is_retried_and_no_route_is_insufficient_liquidity(
    jupiter: tuple[JupiterStub, str],
) -> None:
    stub, url = jupiter
    rpc = SolanaRpc("http://127.0.0.1:1")
    relayer = Keypair().pubkey()
    swap = JupiterSwap(url, rpc, slippage_bps=50, allowlist=allowlist_of(relayer))
    try:
        stub.fail_next = 2  # absorbed by the retries
        plan = await swap.plan(relayer, TOKEN, 1000)
        assert plan.leg.amount > 0
        stub.fail_next = 10
        with pytest.raises(ChainUnavailable):
            await swap.plan(relayer, TOKEN, 1000)
        stub.fail_next, stub.no_route = 0, True
        with pytest.raises(InsufficientLiquidity):
            await swap.plan(relayer, TOKEN, 1000)
    finally:
        await swap.close()
        await rpc.close()
