"""The signer service on the local chain: what it signs, what it refuses, and the relayer using it.

The signer runs in-process on a free loopback port (its real aiohttp app, real
policy, the devchain's RPC and tip accounts); the relayer and the gateway reach
it through `RemoteSigner`, holding no keypair.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import get_associated_token_address
from spl.token.instructions import transfer_checked as spl_transfer_checked
from spl.token.models import TransferCheckedParams

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.modules import ProcessContext
from relayq.relayer.chain.jito import JitoClient
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.relayer import Relayer
from relayq.relayer.signing import RemoteSigner
from relayq.signer.policy import Limits
from relayq.signer.service import SignerSettings, Signing, create_app, open_signing
from tests.conftest import wait_until
from tests.gateway import problem
from tests.integration.conftest import Api
from tests.relayer.conftest import Devchain, contract_balances
from tests.relayer.test_purchase import buy, finished, workers

TOKEN = "signer-test-token"
SOL = 1_000_000_000


@dataclass
class SignerService:
    url: str
    signing: Signing
    runner: web.AppRunner

    @property
    def relayer(self) -> Pubkey:
        return self.signing.keypair.pubkey()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def sign(
        self, instructions: list[Instruction], purpose: str, token: str = TOKEN
    ) -> aiohttp.ClientResponse:
        message = MessageV0.try_compile(self.relayer, instructions, [], Hash.new_unique())
        payload = {
            "message": base64.b64encode(to_bytes_versioned(message)).decode(),
            "purpose": purpose,
        }
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{self.url}/v1/sign", json=payload, headers={"Authorization": f"Bearer {token}"}
            ) as resp,  # fmt: skip
        ):
            await resp.read()
            return resp


StartSigner = Callable[[Limits], Awaitable[SignerService]]


@pytest.fixture
async def start_signer(chain_env: dict[str, str]) -> AsyncIterator[StartSigner]:
    started: list[SignerService] = []

    async def start(limits: Limits) -> SignerService:
        signing = open_signing(ChainSettings.from_env(chain_env), SignerSettings(TOKEN, 0,
                               "127.0.0.1", limits))  # fmt: skip
        runner = web.AppRunner(create_app(signing))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        service = SignerService(f"http://{host}:{port}", signing, runner)
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def signer(start_signer: StartSigner) -> SignerService:
    return await start_signer(Limits(5 * SOL, 1000 * SOL, 3600))


@pytest.fixture
def chain_settings(chain_env: dict[str, str], signer: SignerService) -> ChainSettings:
    """The relayer's settings with the signer service and no keypair."""
    env = {k: v for k, v in chain_env.items() if k != "RELAYQ_RELAYER_KEYPAIR_FILE"}
    return ChainSettings.from_env(
        {**env, "RELAYQ_SIGNER_URL": signer.url, "RELAYQ_SIGNER_TOKEN": TOKEN}
    )


@pytest.fixture
async def tip_account(chain: Devchain) -> Pubkey:
    jito = JitoClient(chain.url, 1000)
    try:
        return (await jito.tip_accounts())[0]
    finally:
        await jito.close()


def signed(purpose: str) -> float:
    return REGISTRY.get_sample_value("relayq_signer_signatures_total", {"purpose": purpose}) or 0.0


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("relayq_signer_refusals_total", {"reason": reason}) or 0.0


def tip(signer: SignerService, to: Pubkey, lamports: int = 10_000) -> Instruction:
    return transfer(TransferParams(from_pubkey=signer.relayer, to_pubkey=to, lamports=lamports))


def token_transfer(signer: SignerService, mint: Pubkey, to: Pubkey) -> Instruction:
    return spl_transfer_checked(
        TransferCheckedParams(
            program_id=TOKEN_PROGRAM_ID,
            source=get_associated_token_address(signer.relayer, mint),
            mint=mint,
            dest=to,
            owner=signer.relayer,
            amount=1,
            decimals=6,
        )
    )


async def refusal(signer: SignerService, resp: aiohttp.ClientResponse, code: str) -> None:
    """A 403 problem with `code`, counted, and no signature in the answer."""
    assert resp.status == 403, resp.status
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["code"] == code, body
    assert "signature" not in body


async def test_a_purchase_signed_by_the_signer_service_lands(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext,
    signer: SignerService,
) -> None:  # fmt: skip
    assert isinstance(relayer.signer, RemoteSigner)
    assert relayer.chain.relayer_keypair_file == ""
    swaps, transfers = signed("swap"), signed("transfer")
    before = await contract_balances(relayer)
    resp = await buy(gateway, sol=0.5)
    body = await resp.json()
    assert resp.status == 202, body
    bought = {t["mint"]: int(t["amount"]) for t in body["tokens"]}
    ws = workers(clients, process)
    for w in ws:
        await w.__aenter__()
    try:
        task = await wait_until(lambda: finished(clients, body["taskId"]), timeout=30)
        assert task.state is TaskState.COMPLETED, task.last_error
    finally:
        for w in ws:
            await w.stop()
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in bought} == bought
    assert signed("swap") == swaps + 1
    assert signed("transfer") == transfers + 1


async def test_a_tip_to_a_tip_account_is_signed(signer: SignerService, tip_account: Pubkey) -> None:
    resp = await signer.sign([tip(signer, tip_account)], "tip")
    assert resp.status == 200
    async with aiohttp.ClientSession() as s:
        message = MessageV0.try_compile(
            signer.relayer, [tip(signer, tip_account)], [], Hash.new_unique()
        )
        payload = {"message": base64.b64encode(to_bytes_versioned(message)).decode(),
                   "purpose": "tip"}  # fmt: skip
        async with s.post(f"{signer.url}/v1/sign", json=payload,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as r:  # fmt: skip
            sig = Signature.from_string((await r.json())["signature"])
    assert sig.verify(signer.relayer, to_bytes_versioned(message))


async def test_each_policy_refusal_has_its_code_and_signs_nothing(
    signer: SignerService, relayer: Relayer, tip_account: Pubkey
) -> None:
    mint = next(iter(relayer.allowlist.mints))
    stranger = Keypair().pubkey()
    cases: list[tuple[list[Instruction], str, str]] = [
        ([Instruction(stranger, b"\x00", [AccountMeta(signer.relayer, True, True)])], "swap",
         "program-not-allowed"),
        ([token_transfer(signer, mint, get_associated_token_address(stranger, mint))],
         "transfer", "destination-not-allowed"),
        ([tip(signer, stranger)], "tip", "tip-not-allowed"),
        ([tip(signer, stranger)], "swap", "tip-not-allowed"),
        ([tip(signer, tip_account, 6 * SOL)], "tip", "over-transaction-cap"),
        ([tip(signer, tip_account)], "transfer", "destination-not-allowed"),
        ([tip(signer, tip_account)], "launder", "unknown-purpose"),
    ]  # fmt: skip
    before = {p: signed(p) for p in ("swap", "transfer", "tip")}
    for instructions, purpose, code in cases:
        counted = refused(code)
        await refusal(signer, await signer.sign(instructions, purpose), code)
        assert refused(code) == counted + 1, code
    assert {p: signed(p) for p in before} == before


async def test_the_window_cap_refuses_once_the_window_is_spent(
    start_signer: StartSigner, tip_account: Pubkey
) -> None:
    signer = await start_signer(Limits(1 * SOL, int(1.5 * SOL), 3600))
    first = await signer.sign([tip(signer, tip_account, SOL)], "tip")
    assert first.status == 200
    tips = signed("tip")
    await refusal(signer, await signer.sign([tip(signer, tip_account, SOL)], "tip"),
                  "over-window-cap")  # fmt: skip
    assert signed("tip") == tips
    # What the window has room for still passes.
    assert (await signer.sign([tip(signer, tip_account, SOL // 4)], "tip")).status == 200


async def test_a_bad_token_is_refused_before_anything_is_judged(
    signer: SignerService, tip_account: Pubkey
) -> None:
    tips = signed("tip")
    for token in ("wrong", "", TOKEN + "x"):
        resp = await signer.sign([tip(signer, tip_account)], "tip", token=token)
        assert resp.status == 401
    async with aiohttp.ClientSession() as s, s.get(f"{signer.url}/v1/pubkey") as resp:
        assert resp.status == 401
    assert signed("tip") == tips


async def test_the_signer_down_gives_the_purchase_a_503_not_a_500(
    gateway: Api, clients: Clients, signer: SignerService
) -> None:
    await signer.stop()
    resp = await buy(gateway, sol=0.5)
    await problem(resp, 503, "chain-unavailable")
    assert "Retry-After" in resp.headers
