"""The signer's `refund` purpose: one SOL transfer to the buyer's wallet the request names,
with a refund memo, under the lamport caps; and a refund signed by the signer service."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.modules import ProcessContext
from relayq.relayer.memo import purchase_memo, refund_memo
from relayq.relayer.relayer import Relayer
from relayq.relayer.review import refund
from relayq.relayer.signing import RemoteSigner
from relayq.signer.policy import Limits
from tests.relayer import test_remote_signer
from tests.relayer.conftest import Devchain
from tests.relayer.test_refund import LAMPORTS, balance, parked_purchase, run_refund
from tests.relayer.test_remote_signer import (
    SOL,
    TOKEN,
    SignerService,
    StartSigner,
    refusal,
    refused,
    signed,
    tip,
    token_transfer,
)

# The signer service's fixtures: the relayer here signs through it.
chain_settings = test_remote_signer.chain_settings
signer = test_remote_signer.signer
start_signer = test_remote_signer.start_signer
tip_account = test_remote_signer.tip_account

PURCHASE = "a" * 32


async def sign_refund(
    signer: SignerService, instructions: list[Instruction], refund_to: Any, purpose: str = "refund"
) -> aiohttp.ClientResponse:
    message = MessageV0.try_compile(signer.relayer, instructions, [], Hash.new_unique())
    payload: dict[str, Any] = {
        "message": base64.b64encode(to_bytes_versioned(message)).decode(),
        "purpose": purpose,
    }
    if refund_to is not None:
        payload["refundTo"] = str(refund_to)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{signer.url}/v1/sign", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp,  # fmt: skip
    ):
        await resp.read()
        return resp


async def test_a_refund_to_the_named_wallet_with_its_memo_is_signed(signer: SignerService) -> None:
    buyer = Keypair().pubkey()
    before = signed("refund")

    resp = await sign_refund(signer, [tip(signer, buyer, SOL), refund_memo(PURCHASE)], buyer)

    assert resp.status == 200
    assert signed("refund") == before + 1


async def test_each_refund_refusal_has_its_code_and_signs_nothing(
    signer: SignerService, relayer: Relayer, tip_account: Pubkey
) -> None:
    buyer, stranger = Keypair().pubkey(), Keypair().pubkey()
    mint = next(iter(relayer.allowlist.mints))
    memo = refund_memo(PURCHASE)
    cases: list[tuple[list[Instruction], Any, str, str]] = [
        ([tip(signer, buyer), memo], None, "refund", "refund-wallet-missing"),
        ([tip(signer, tip_account), memo], buyer, "tip", "refund-wallet-missing"),
        ([tip(signer, stranger), memo], buyer, "refund", "destination-not-allowed"),
        ([tip(signer, tip_account), memo], buyer, "refund", "destination-not-allowed"),
        ([tip(signer, buyer)], buyer, "refund", "refund-memo-missing"),
        ([tip(signer, buyer), purchase_memo(PURCHASE)], buyer, "refund", "refund-memo-missing"),
        ([tip(signer, buyer), tip(signer, buyer), memo], buyer, "refund",
         "refund-not-one-transfer"),
        ([memo], buyer, "refund", "refund-not-one-transfer"),
        ([tip(signer, buyer), token_transfer(signer, mint, buyer), memo], buyer, "refund",
         "destination-not-allowed"),
        ([tip(signer, buyer, 6 * SOL), memo], buyer, "refund", "over-transaction-cap"),
    ]  # fmt: skip
    before = signed("refund")
    for instructions, refund_to, purpose, code in cases:
        counted = refused(code)
        await refusal(signer, await sign_refund(signer, instructions, refund_to, purpose), code)
        assert refused(code) == counted + 1, code
    assert signed("refund") == before
    bad = await sign_refund(signer, [tip(signer, buyer), memo], "not-a-key")
    assert bad.status == 400


async def test_refunds_count_against_the_window_cap(start_signer: StartSigner) -> None:
    signer = await start_signer(Limits(1 * SOL, int(1.5 * SOL), 3600))
    buyer = Keypair().pubkey()
    memo = refund_memo(PURCHASE)

    first = await sign_refund(signer, [tip(signer, buyer, SOL), memo], buyer)
    second = await sign_refund(signer, [tip(signer, buyer, SOL), memo], buyer)

    assert first.status == 200
    await refusal(signer, second, "over-window-cap")


async def test_a_refund_signed_by_the_signer_service_lands_once(
    clients: Clients, relayer: Relayer, process: ProcessContext, chain: Devchain,
    signer: SignerService,
) -> None:  # fmt: skip
    assert isinstance(relayer.signer, RemoteSigner)
    task, wallet = await parked_purchase(clients, relayer)
    before = signed("refund")
    await refund(relayer, task.id, "swap partly landed", "alice")

    done = await run_refund(clients, relayer, process, chain, task.id)

    assert done.state is TaskState.COMPLETED, done.last_error
    assert await balance(relayer, wallet) == LAMPORTS
    assert signed("refund") == before + 1
