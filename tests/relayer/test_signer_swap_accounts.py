"""The accounts a swap leg may name, judged by the signer and by the relayer, from one declaration.

The pools file (`RELAYQ_SWAP_POOLS_FILE`) declares, per swap program, its fixed
accounts and its pools; a leg may name only those, the relayer's own accounts
and well-known programs, and write only the relayer's token accounts and the
declared pools'. The signer runs in-process on a free loopback port on the
devchain (real policy, real RPC for address lookup tables, created on the chain
by the tests); the swap API is the Jupiter-compatible stub at the network
boundary.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from solders.address_lookup_table_account import ID as LOOKUP_TABLE_PROGRAM_ID
from solders.address_lookup_table_account import (
    AddressLookupTableAccount,
    derive_lookup_table_address,
)
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.transaction import VersionedTransaction

from relayq.relayer.allowlist import PoolsError
from relayq.relayer.baskets import BasketToken
from relayq.relayer.chain.errors import SwapRefused
from relayq.relayer.chain.rpc import SolanaRpc
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.chain.swap import JupiterSwap, LegPlan
from relayq.relayer.relayer import Relayer
from relayq.signer.service import SignerSettings, open_signing
from tests.conftest import wait_until
from tests.relayer.conftest import Devchain
from tests.relayer.jupiter_stub import (
    AMM_AUTHORITY,
    EVENT_AUTHORITY,
    JUPITER_V6,
    POOL,
    POOL_VAULTS,
    Found,
    JupiterStub,
    Quote,
    ix_json,
    jupiter,
    pool_hop,
    route,
    write_declared_pools,
)
from tests.relayer.test_remote_signer import (
    TOKEN,
    SignerService,
    refusal,
    refused,
    signed,
    signer,
    start_signer,
    tip,
    tip_account,
)

__all__ = ["jupiter", "signer", "start_signer", "tip_account"]  # fixtures used below

STRANGER_POOL = Keypair().pubkey()
STRANGER_VAULTS = (Keypair().pubkey(), Keypair().pubkey())


@pytest.fixture
def chain_env(
    chain_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The chain's settings with the stub's pool declared, for the signer and the relayer."""
    pools = write_declared_pools(tmp_path_factory.mktemp("pools"))
    return {**chain_env, "RELAYQ_SWAP_POOLS_FILE": pools}


@pytest.fixture
async def rpc(chain: Devchain) -> AsyncIterator[SolanaRpc]:
    rpc = SolanaRpc(chain.url)
    yield rpc
    await rpc.close()


def basket_token(relayer: Relayer) -> BasketToken:
    return next(t for b in relayer.baskets.values() for t in b.tokens)


async def plan_leg(relayer: Relayer, rpc: SolanaRpc, url: str) -> LegPlan:
    """The relayer's own checks of the stub's answer (its allow-list, its pools file)."""
    swap = JupiterSwap(url, rpc, 50, relayer.allowlist)
    try:
        return await swap.plan(relayer.allowlist.relayer, basket_token(relayer), 2_000_000)
    finally:
        await swap.close()


async def sign(
    signer: SignerService,
    instructions: list[Instruction],
    tables: list[AddressLookupTableAccount] | None = None,
    purpose: str = "swap",
) -> aiohttp.ClientResponse:
    """Ask the signer to sign `instructions`, compiled with `tables`."""
    message = MessageV0.try_compile(signer.relayer, instructions, tables or [], Hash.new_unique())
    payload = {"message": base64.b64encode(to_bytes_versioned(message)).decode(),
               "purpose": purpose}  # fmt: skip
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{signer.url}/v1/sign", json=payload, headers=headers) as resp,
    ):
        await resp.read()
        return resp


async def lookup_table(
    chain: Devchain, rpc: SolanaRpc, addresses: list[Pubkey]
) -> AddressLookupTableAccount:
    """An address lookup table holding `addresses`, created on the chain and readable there."""
    owner = Keypair()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            chain.url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "requestAirdrop",
                "params": [str(owner.pubkey()), 10**9],
            },
        ) as resp,  # fmt: skip
    ):
        assert "result" in await resp.json(), await resp.text()
    await wait_until(lambda: rpc.balance(owner.pubkey()))
    # Slot 0 is among the devchain's recent slots; one table per fresh owner.
    table, bump = derive_lookup_table_address(owner.pubkey(), 0)
    metas = [
        AccountMeta(table, False, True),
        AccountMeta(owner.pubkey(), True, True),
        AccountMeta(owner.pubkey(), True, True),
        AccountMeta(SYSTEM_PROGRAM_ID, False, False),
    ]
    create = Instruction(LOOKUP_TABLE_PROGRAM_ID, struct.pack("<IQB", 0, 0, bump), metas)
    extend_data = struct.pack("<IQ", 2, len(addresses)) + b"".join(bytes(a) for a in addresses)
    extend = Instruction(LOOKUP_TABLE_PROGRAM_ID, extend_data, metas)
    blockhash = (await rpc.latest_blockhash()).value
    message = MessageV0.try_compile(owner.pubkey(), [create, extend], [], blockhash)
    await rpc.send(VersionedTransaction(message, [owner]))
    await wait_until(lambda: rpc.account_data(table), timeout=20)
    return AddressLookupTableAccount(table, addresses)


def with_route(instructions: list[Instruction], swap: Instruction) -> list[Instruction]:
    """`instructions` with their Jupiter route replaced by `swap`."""
    return [swap if ix.program_id == JUPITER_V6 else ix for ix in instructions]


def hop_through(hop: list[AccountMeta]) -> Callable[[Found, Pubkey, Quote], Found]:
    """A stub bend: the route goes through `hop` instead of the declared pool."""

    def bend(found: Found, user: Pubkey, quote: Quote) -> Found:
        mint = Pubkey.from_string(quote["outputMint"])
        swap = route(user, mint, int(quote["inAmount"]), hop=hop)
        return {**found, "swapInstruction": ix_json(swap)}

    return bend


async def test_a_route_through_a_declared_pool_is_checked_then_signed(
    signer: SignerService, relayer: Relayer, rpc: SolanaRpc, chain: Devchain,
    jupiter: tuple[JupiterStub, str], tip_account: Pubkey,
) -> None:  # fmt: skip
    plan = await plan_leg(relayer, rpc, jupiter[1])
    swaps = signed("swap")
    instructions = [*plan.instructions, tip(signer, tip_account)]
    resp = await sign(signer, instructions)
    assert resp.status == 200, await resp.text()
    # The pool's accounts and the program's fixed ones behind a lookup table, as Jupiter does.
    table = await lookup_table(chain, rpc, [POOL, *POOL_VAULTS, AMM_AUTHORITY, EVENT_AUTHORITY])
    resp = await sign(signer, instructions, [table])
    assert resp.status == 200, await resp.text()
    assert signed("swap") == swaps + 2


async def test_a_route_through_an_undeclared_pool_is_refused_by_the_relayer_and_the_signer(
    signer: SignerService, relayer: Relayer, rpc: SolanaRpc,
    jupiter: tuple[JupiterStub, str], tip_account: Pubkey,
) -> None:  # fmt: skip
    honest = await plan_leg(relayer, rpc, jupiter[1])
    user, mint = relayer.allowlist.relayer, basket_token(relayer).mint
    cases = {
        "pool": pool_hop(pool=STRANGER_POOL),
        "vault": pool_hop(vaults=(POOL_VAULTS[0], STRANGER_VAULTS[1])),
        "read-only account": [*pool_hop(), AccountMeta(STRANGER_VAULTS[0], False, False)],
    }
    for case, hop in cases.items():
        jupiter[0].bend_instructions = hop_through(hop)
        with pytest.raises(SwapRefused) as refused_by_relayer:
            await plan_leg(relayer, rpc, jupiter[1])
        assert refused_by_relayer.value.check == "account", case
        # The same leg asked of the signer directly (a compromised caller skips the checks).
        swap = route(user, mint, 2_000_000, hop=hop)
        counted = refused("account-not-allowed")
        resp = await sign(
            signer, [*with_route(honest.instructions, swap), tip(signer, tip_account)]
        )
        await refusal(signer, resp, "account-not-allowed")
        assert refused("account-not-allowed") == counted + 1, case


async def test_an_undeclared_pool_behind_a_lookup_table_is_refused(
    signer: SignerService, relayer: Relayer, rpc: SolanaRpc, chain: Devchain,
    jupiter: tuple[JupiterStub, str], tip_account: Pubkey,
) -> None:  # fmt: skip
    honest = await plan_leg(relayer, rpc, jupiter[1])
    user, mint = relayer.allowlist.relayer, basket_token(relayer).mint
    swap = route(user, mint, 2_000_000, hop=pool_hop(STRANGER_POOL, STRANGER_VAULTS))
    instructions = [*with_route(honest.instructions, swap), tip(signer, tip_account)]
    table = await lookup_table(chain, rpc, [STRANGER_POOL, *STRANGER_VAULTS])
    message = MessageV0.try_compile(user, instructions, [table], Hash.new_unique())
    assert message.address_table_lookups, "the pool is named through the table"
    assert STRANGER_POOL not in message.account_keys
    counted = refused("account-not-allowed")
    await refusal(signer, await sign(signer, instructions, [table]), "account-not-allowed")
    assert refused("account-not-allowed") == counted + 1


async def test_a_leg_writing_outside_the_relayers_and_the_pools_accounts_is_refused(
    signer: SignerService, relayer: Relayer, rpc: SolanaRpc, chain: Devchain,
    jupiter: tuple[JupiterStub, str], tip_account: Pubkey,
) -> None:  # fmt: skip
    honest = await plan_leg(relayer, rpc, jupiter[1])
    user, mint = relayer.allowlist.relayer, basket_token(relayer).mint
    jupiter[0].bend_instructions = hop_through(pool_hop(authority_writable=True))
    with pytest.raises(SwapRefused) as refused_by_relayer:
        await plan_leg(relayer, rpc, jupiter[1])
    assert refused_by_relayer.value.check == "account"
    swaps = signed("swap")
    writes = {
        "the program's fixed account": pool_hop(authority_writable=True),
        "a mint": [*pool_hop(), AccountMeta(mint, False, True)],
        "the router's fixed account": [*pool_hop(), AccountMeta(EVENT_AUTHORITY, False, True)],
    }
    for case, hop in writes.items():
        swap = route(user, mint, 2_000_000, hop=hop)
        counted = refused("write-not-allowed")
        resp = await sign(
            signer, [*with_route(honest.instructions, swap), tip(signer, tip_account)]
        )
        await refusal(signer, resp, "write-not-allowed")
        assert refused("write-not-allowed") == counted + 1, case
    # Written through a lookup table's writable half: the same refusal.
    swap = route(user, mint, 2_000_000, hop=pool_hop(authority_writable=True))
    table = await lookup_table(chain, rpc, [POOL, *POOL_VAULTS, AMM_AUTHORITY])
    instructions = [*with_route(honest.instructions, swap), tip(signer, tip_account)]
    await refusal(signer, await sign(signer, instructions, [table]), "write-not-allowed")
    assert signed("swap") == swaps


def test_the_signer_does_not_start_with_a_malformed_pools_file(
    chain_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "pools.json"
    bad.write_text(json.dumps({"programs": [{"program": "not a key!"}]}))
    chain = ChainSettings.from_env({**chain_env, "RELAYQ_SWAP_POOLS_FILE": str(bad)})
    with pytest.raises(PoolsError, match=r"programs\[0\]"):
        open_signing(chain, SignerSettings(TOKEN))
