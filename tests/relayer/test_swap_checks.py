"""A swap API's answer is checked before anything is signed.

A Jupiter-compatible stub at the network boundary (`jupiter_stub`) answers
honestly by default; each case bends one part of its answer. A bad answer is
refused with `502 swap-refused`: no purchase record, no task, no bundle sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import get_associated_token_address

from relayq.api.app import create_app
from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.settings import Settings
from relayq.relayer import jobs as relayer_jobs
from relayq.relayer.chain.settings import ChainSettings, SwapSourceKind
from relayq.relayer.relayer import Relayer
from tests.gateway import CLIENT, api_settings, problem
from tests.integration.conftest import Api
from tests.relayer.conftest import Devchain
from tests.relayer.jupiter_stub import (
    OUTSIDER,
    WSOL,
    Found,
    JupiterStub,
    Quote,
    ix_json,
    jupiter,
    pool_hop,
    route,
    write_declared_pools,
    wsol_transfer,
)

__all__ = ["jupiter"]  # the stub's fixture, used by the tests below

WALLET = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
SLIPPAGE_BPS = 50


@pytest.fixture
async def jupiter_gateway(
    aiohttp_client: AiohttpClient,
    settings: Settings,
    chain_env: dict[str, str],
    jupiter: tuple[JupiterStub, str],
    tmp_path: Path,
) -> Api:
    pools = write_declared_pools(tmp_path)
    chain = replace(
        ChainSettings.from_env({**chain_env, "RELAYQ_SWAP_POOLS_FILE": pools}),
        swap_source=SwapSourceKind.JUPITER,
        swap_api_url=jupiter[1],
        slippage_bps=SLIPPAGE_BPS,
    )
    app = create_app(
        settings, api_settings(mongo_timeout_seconds=15.0), {relayer_jobs.CHAIN_SETTINGS: chain}
    )
    return await aiohttp_client(app)


def _swap(found: Found, **changes: Any) -> Found:
    return {**found, "swapInstruction": {**found["swapInstruction"], **changes}}


def _add_setup(found: Found, ix: Instruction) -> Found:
    return {**found, "setupInstructions": [*found["setupInstructions"], ix_json(ix)]}


def _outsider_program(f: Found, user: Pubkey, q: Quote) -> Found:
    return _swap(f, programId=str(OUTSIDER))


def _drain_sol(f: Found, user: Pubkey, q: Quote) -> Found:
    # An allowed program (System) moving the relayer's SOL to someone else.
    return _add_setup(
        f, transfer(TransferParams(from_pubkey=user, to_pubkey=OUTSIDER, lamports=10**9))
    )


def _wrap_more(f: Found, user: Pubkey, q: Quote) -> Found:
    return _add_setup(f, wsol_transfer(user, 10**9))


def _elsewhere(f: Found, user: Pubkey, q: Quote) -> Found:
    out_mint = Pubkey.from_string(q["outputMint"])
    theirs = get_associated_token_address(OUTSIDER, out_mint)
    return _swap(f, **ix_json(route(user, out_mint, int(q["inAmount"]), dest=theirs)))


def _payee_elsewhere(f: Found, user: Pubkey, q: Quote) -> Found:
    out_mint = Pubkey.from_string(q["outputMint"])
    theirs = get_associated_token_address(OUTSIDER, out_mint)
    return _swap(f, **ix_json(route(user, out_mint, int(q["inAmount"]), payee=theirs)))


def _second_route_elsewhere(f: Found, user: Pubkey, q: Quote) -> Found:
    # An allowed swap program, but in the setup and delivering to someone else.
    out_mint = Pubkey.from_string(q["outputMint"])
    theirs = get_associated_token_address(OUTSIDER, out_mint)
    return _add_setup(f, route(user, out_mint, int(q["inAmount"]), dest=theirs))


def _through(f: Found, user: Pubkey, q: Quote, hop: list[AccountMeta]) -> Found:
    out_mint = Pubkey.from_string(q["outputMint"])
    return _swap(f, **ix_json(route(user, out_mint, int(q["inAmount"]), hop=hop)))


def _undeclared_pool(f: Found, user: Pubkey, q: Quote) -> Found:
    # An allowed router, delivering to the relayer, but through a pool nobody declared.
    return _through(f, user, q, pool_hop(pool=OUTSIDER))


def _undeclared_vault(f: Found, user: Pubkey, q: Quote) -> Found:
    return _through(f, user, q, [*pool_hop(), AccountMeta(OUTSIDER, False, True)])


def _fixed_account_written(f: Found, user: Pubkey, q: Quote) -> Found:
    # The AMM's authority is declared read-only: a leg may not write it.
    return _through(f, user, q, pool_hop(authority_writable=True))


def _delegate(f: Found, user: Pubkey, q: Quote) -> Found:
    # SPL Token Approve (tag 4): lets OUTSIDER spend the relayer's WSOL account.
    wsol = get_associated_token_address(user, WSOL)
    approve = Instruction(
        TOKEN_PROGRAM_ID,
        bytes([4]) + (10**9).to_bytes(8, "little"),
        [
            AccountMeta(wsol, False, True),
            AccountMeta(OUTSIDER, False, False),
            AccountMeta(user, True, False),
        ],
    )
    return _add_setup(f, approve)


def _another_signer(f: Found, user: Pubkey, q: Quote) -> Found:
    accounts = [
        *f["swapInstruction"]["accounts"],
        {"pubkey": str(OUTSIDER), "isSigner": True, "isWritable": False},
    ]
    return _swap(f, accounts=accounts)


def _missing_swap(f: Found, user: Pubkey, q: Quote) -> Found:
    return {k: v for k, v in f.items() if k != "swapInstruction"}


def _accounts_not_a_list(f: Found, user: Pubkey, q: Quote) -> Found:
    return _swap(f, accounts="everything")


def _data_not_base64(f: Found, user: Pubkey, q: Quote) -> Found:
    return _swap(f, data=12)


def _not_an_object(f: Found, user: Pubkey, q: Quote) -> Any:
    return ["swapInstruction"]


QUOTE_CASES: dict[str, Callable[[Quote], Any]] = {
    "input-mint": lambda q: {**q, "inputMint": str(OUTSIDER)},
    "input-amount": lambda q: {**q, "inAmount": str(int(q["inAmount"]) * 2)},
    "output-mint": lambda q: {**q, "outputMint": str(OUTSIDER)},
    "threshold-beyond-slippage": lambda q: {
        **q,
        "otherAmountThreshold": str(int(q["outAmount"]) // 2),
    },
    "threshold-above-out-amount": lambda q: {
        **q,
        "otherAmountThreshold": str(int(q["outAmount"]) * 2),
    },
    "wider-slippage": lambda q: {**q, "slippageBps": 5_000},
    "exact-out": lambda q: {**q, "swapMode": "ExactOut"},
    "quote-missing-threshold": lambda q: {
        k: v for k, v in q.items() if k != "otherAmountThreshold"
    },
    "quote-threshold-not-a-number": lambda q: {**q, "otherAmountThreshold": {"n": 1}},
    "quote-not-an-object": lambda q: "no",
}

INSTRUCTION_CASES: dict[str, Callable[[Found, Pubkey, Quote], Any]] = {
    "program-not-allowed": _outsider_program,
    "sol-to-an-outsider": _drain_sol,
    "more-sol-wrapped-than-asked": _wrap_more,
    "destination-not-the-relayers": _elsewhere,
    "payee-not-the-relayer": _payee_elsewhere,
    "second-route-in-setup": _second_route_elsewhere,
    "delegate-approved": _delegate,
    "undeclared-pool": _undeclared_pool,
    "undeclared-vault": _undeclared_vault,
    "fixed-account-written": _fixed_account_written,
    "another-signer": _another_signer,
    "missing-swap-instruction": _missing_swap,
    "accounts-not-a-list": _accounts_not_a_list,
    "data-not-base64": _data_not_base64,
    "answer-not-an-object": _not_an_object,
}


# The check each case must fail, as named in the problem's detail.
EXPECTED_CHECK = {
    "input-mint": "mint",
    "input-amount": "amount",
    "output-mint": "mint",
    "threshold-beyond-slippage": "slippage",
    "threshold-above-out-amount": "slippage",
    "wider-slippage": "slippage",
    "exact-out": "amount",
    "quote-missing-threshold": "malformed",
    "quote-threshold-not-a-number": "malformed",
    "quote-not-an-object": "malformed",
    "program-not-allowed": "program",
    "sol-to-an-outsider": "destination",
    "more-sol-wrapped-than-asked": "amount",
    "destination-not-the-relayers": "destination",
    "payee-not-the-relayer": "destination",
    "second-route-in-setup": "destination",
    "delegate-approved": "program",
    "undeclared-pool": "account",
    "undeclared-vault": "account",
    "fixed-account-written": "account",
    "another-signer": "authority",
    "missing-swap-instruction": "malformed",
    "accounts-not-a-list": "malformed",
    "data-not-base64": "malformed",
    "answer-not-an-object": "malformed",
}


async def _refused(
    gateway: Api, clients: Clients, relayer: Relayer, chain: Devchain, case: str
) -> None:
    before = (await chain.state())["bundlesLanded"]
    resp = await gateway.post(
        "/v1/buy-tokens",
        json={"wallet": WALLET, "solAmount": 0.5, "bundleId": "starter"},
        headers={**CLIENT, "Idempotency-Key": uuid.uuid4().hex},
    )
    body = await problem(resp, 502, "swap-refused")
    assert body["detail"].startswith(f"swap refused ({EXPECTED_CHECK[case]})"), body
    # Refused before signing: no record of signed bytes, no task, nothing sent.
    assert await relayer.purchases.purchases.count_documents({}) == 0
    for state in TaskState:
        assert await clients.store.count(state=state) == 0
    assert (await chain.state())["bundlesLanded"] == before


@pytest.mark.parametrize("case", list(QUOTE_CASES))
async def test_a_quote_that_is_not_what_was_asked_is_refused_before_signing(
    case: str,
    jupiter: tuple[JupiterStub, str],
    jupiter_gateway: Api,
    clients: Clients,
    relayer: Relayer,
    chain: Devchain,
) -> None:
    jupiter[0].bend_quote = QUOTE_CASES[case]
    await _refused(jupiter_gateway, clients, relayer, chain, case)


@pytest.mark.parametrize("case", list(INSTRUCTION_CASES))
async def test_swap_instructions_outside_the_allow_list_are_refused_before_signing(
    case: str,
    jupiter: tuple[JupiterStub, str],
    jupiter_gateway: Api,
    clients: Clients,
    relayer: Relayer,
    chain: Devchain,
) -> None:
    jupiter[0].bend_instructions = INSTRUCTION_CASES[case]
    await _refused(jupiter_gateway, clients, relayer, chain, case)
