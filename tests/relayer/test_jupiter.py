"""The Jupiter-compatible swap source against a stub of that API at the network boundary.

The stub (`jupiter_stub`) answers `GET /quote` and `POST /swap-instructions` in
Jupiter's documented shapes; the relayer's side (parsing, checks, amounts,
errors) is real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from relayq.relayer.allowlist import (
    DEFAULT_SWAP_ACCOUNTS,
    JUPITER_V6_PROGRAM_ID,
    Allowlist,
    PoolsError,
    SwapProgramAccounts,
    build_allowlist,
    load_swap_accounts,
    parse_swap_accounts,
)
from relayq.relayer.baskets import Basket, BasketToken
from relayq.relayer.chain.errors import ChainUnavailable, SwapRefused
from relayq.relayer.chain.rpc import SolanaRpc
from relayq.relayer.chain.swap import WRAPPED_SOL_MINT, InsufficientLiquidity, JupiterSwap
from tests.relayer.jupiter_stub import (
    AMM,
    POOL,
    POOL_VAULTS,
    JupiterStub,
    declared_pools,
    jupiter,
    write_declared_pools,
)

__all__ = ["jupiter"]  # the stub's fixture

MINT = Keypair().pubkey()
TOKEN = BasketToken("JUPT", MINT, 6, 1, None)


def allowlist_of(
    relayer: Pubkey, pools: tuple[SwapProgramAccounts, ...] | None = None
) -> Allowlist:
    """The allow-list of a relayer selling TOKEN, the stub's pool declared unless `pools`."""
    basket = Basket("b", "B", (TOKEN,), 1, 10**12)
    declared = parse_swap_accounts(declared_pools()) if pools is None else pools
    return build_allowlist(relayer, Keypair().pubkey(), [basket], swap_accounts=declared)


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


async def test_without_a_pools_file_a_route_through_any_pool_is_refused(
    jupiter: tuple[JupiterStub, str],
) -> None:
    # The default declares Jupiter's own fixed account and no pool: it fails closed.
    _, url = jupiter
    rpc = SolanaRpc("http://127.0.0.1:1")
    relayer = Keypair().pubkey()
    swap = JupiterSwap(url, rpc, 50, allowlist_of(relayer, DEFAULT_SWAP_ACCOUNTS))
    try:
        with pytest.raises(SwapRefused) as refused:
            await swap.plan(relayer, TOKEN, 1000)
    finally:
        await swap.close()
        await rpc.close()
    assert refused.value.check == "account"


def test_the_pools_file_is_read_as_declared(tmp_path: Path) -> None:
    declared = load_swap_accounts(write_declared_pools(tmp_path))
    amm = next(p for p in declared if p.program == AMM)
    assert [(p.address, p.accounts) for p in amm.pools] == [(POOL, frozenset(POOL_VAULTS))]
    assert load_swap_accounts("") == DEFAULT_SWAP_ACCOUNTS


BAD_POOLS: dict[str, Any] = {
    "not-an-object": ["programs"],
    "no-programs": {"pools": []},
    "program-missing": {"programs": [{"accounts": []}]},
    "program-not-base58": {"programs": [{"program": "not a key!"}]},
    "accounts-not-a-list": {"programs": [{"program": str(AMM), "accounts": str(AMM)}]},
    "pool-without-address": {"programs": [{"program": str(AMM), "pools": [{"accounts": []}]}]},
    "pools-not-a-list": {"programs": [{"program": str(AMM), "pools": {"address": str(POOL)}}]},
    "key-not-a-string": {"programs": [{"program": 12}]},
    "declared-twice": {"programs": [{"program": str(AMM)}, {"program": str(AMM)}]},
}


@pytest.mark.parametrize("case", list(BAD_POOLS))
def test_a_malformed_pools_file_is_refused_with_where(case: str, tmp_path: Path) -> None:
    path = tmp_path / "pools.json"
    path.write_text(json.dumps(BAD_POOLS[case]))
    with pytest.raises(PoolsError):
        load_swap_accounts(path)


def test_an_unreadable_pools_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PoolsError, match="cannot read"):
        load_swap_accounts(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PoolsError, match="cannot read"):
        load_swap_accounts(tmp_path / "bad.json")
