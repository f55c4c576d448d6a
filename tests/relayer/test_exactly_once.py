"""The transfer is exactly-once by protocol: crashes, dropped sends, expired blockhashes,
flaky RPC, and short funds never make a second transfer or lose one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient
from solders.signature import Signature
from spl.token.instructions import get_associated_token_address

from relayq.api.app import create_app
from relayq.core.clients import Clients
from relayq.core.failpoints import CRASH_EXIT_CODE
from relayq.core.jobs import TaskState
from relayq.core.modules import ProcessContext
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.settings import Settings
from relayq.relayer import jobs as relayer_jobs
from relayq.relayer.baskets import LAMPORTS_PER_SOL
from relayq.relayer.purchases import Purchase, PurchaseLeg, SwapState
from relayq.relayer.relayer import Relayer
from tests.conftest import InProcessWorker, WorkerProcess, wait_until
from tests.gateway import api_settings, problem
from tests.integration.conftest import Api
from tests.relayer.conftest import Devchain, contract_balances
from tests.relayer.test_purchase import WALLET, buy, finished


async def bought(gateway: Api, **kwargs: Any) -> tuple[str, dict[str, int]]:
    resp = await buy(gateway, **kwargs)
    body = await resp.json()
    assert resp.status == 202 and body["status"] == "queued", body
    return body["taskId"], {t["mint"]: int(t["amount"]) for t in body["tokens"]}


async def completed(clients: Clients, task_id: str, timeout: float = 40) -> None:
    task = await wait_until(lambda: finished(clients, task_id), timeout=timeout)
    assert task.state is TaskState.COMPLETED, task.last_error


async def only_one_landed(relayer: Relayer, transfer: dict[str, Any]) -> None:
    """Of every transfer ever signed for a purchase, exactly the recorded one is on chain."""
    sigs = [Signature.from_string(s) for s in transfer["signatures"]]
    states = await relayer.rpc.statuses(sigs)
    landed = [str(sig) for sig, state in zip(sigs, states, strict=True) if state is not None]
    assert landed == [transfer["signature"]], (landed, transfer["signatures"])


async def transfer_of(relayer: Relayer, task_id: str) -> dict[str, Any]:
    purchase = await relayer.purchases.get(task_id)
    assert purchase is not None
    return purchase.transfer


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_sign", "after_persist", "after_send"])
async def test_a_crash_at_any_step_still_makes_exactly_one_transfer(
    point: str,
    gateway: Api,
    clients: Clients,
    relayer: Relayer,
    chain_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    before = await contract_balances(relayer)
    task_id, amounts = await bought(gateway)
    crashing = start_worker("high", **chain_env, RELAYQ_FAILPOINTS=f"transfer.{point}")
    assert await asyncio.to_thread(crashing.process.wait, 30) == CRASH_EXIT_CODE
    transfer = await transfer_of(relayer, task_id)
    assert bool(transfer) is (point != "after_sign")  # persisted before the crash, or not

    start_worker("high", **chain_env)
    start_worker("medium", **chain_env)
    await completed(clients, task_id)  # after the crashed claim's 2 s lease
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in amounts} == amounts
    transfer = await transfer_of(relayer, task_id)
    await only_one_landed(relayer, transfer)
    if point != "after_persist":
        # Nothing persisted (sign), or persisted and landed (send): never signed twice. After
        # persist, the unsent transaction is resent if its blockhash is still valid when
        # the next worker reclaims it, else signed anew: either way one lands.
        assert len(transfer["signatures"]) == 1
    task = await clients.store.get(task_id)
    assert task is not None and task.result["transferSignature"] == transfer["signature"]


async def test_an_expired_blockhash_leads_to_one_resign_and_one_transfer(
    gateway: Api, clients: Clients, relayer: Relayer, chain: Devchain, process: ProcessContext
) -> None:
    before = await contract_balances(relayer)
    task_id, amounts = await bought(gateway)
    await chain.faults(dropTransactions=1000)  # every send is lost
    async with (
        InProcessWorker(clients, "high", process=process),
        InProcessWorker(clients, "medium", process=process),
    ):
        first = await wait_until(lambda: _signed(relayer, task_id), timeout=20)
        await chain.faults(advanceSlots=400)  # its blockhash expires unlanded
        await chain.faults(reset=True)
        await completed(clients, task_id)
    transfer = await transfer_of(relayer, task_id)
    assert transfer["signatures"][0] == first and len(transfer["signatures"]) == 2
    assert transfer["signature"] == transfer["signatures"][1]
    await only_one_landed(relayer, transfer)
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in amounts} == amounts


async def _signed(relayer: Relayer, task_id: str) -> str | None:
    transfer = await transfer_of(relayer, task_id)
    return transfer.get("signature")


async def test_a_dropped_send_is_resent_with_the_same_bytes(
    gateway: Api, clients: Clients, relayer: Relayer, chain: Devchain, process: ProcessContext
) -> None:
    before = await contract_balances(relayer)
    task_id, amounts = await bought(gateway)
    await chain.faults(dropTransactions=1)
    async with (
        InProcessWorker(clients, "high", process=process),
        InProcessWorker(clients, "medium", process=process),
    ):
        await completed(clients, task_id)
    transfer = await transfer_of(relayer, task_id)
    assert len(transfer["signatures"]) == 1
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in amounts} == amounts


async def test_rpc_errors_and_timeouts_are_retried_with_backoff(
    gateway: Api, clients: Clients, relayer: Relayer, chain: Devchain, process: ProcessContext
) -> None:
    before = await contract_balances(relayer)
    task_id, amounts = await bought(gateway)
    # Slower than the client's 2 s timeout: every call fails until the delay is lifted.
    await chain.faults(rpcDelayMs=2500)
    async with (
        InProcessWorker(clients, "high", process=process),
        InProcessWorker(clients, "medium", process=process),
    ):
        await wait_until(lambda: _retrying(clients, task_id), timeout=30)
        await chain.faults(reset=True, rpcErrors=3)  # then three 503s, absorbed by retries
        await completed(clients, task_id)
    task = await clients.store.get(task_id)
    assert task is not None and task.attempts >= 2
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in amounts} == amounts


async def _parked(clients: Clients, task_id: str) -> Any:
    task = await clients.store.get(task_id)
    return task if task is not None and task.state is TaskState.NEEDS_REVIEW else None


async def _retrying(clients: Clients, task_id: str) -> bool:
    task = await clients.store.get(task_id)
    return task is not None and task.state is TaskState.RETRYING and task.attempts >= 1


async def test_relayer_short_of_tokens_parks_the_paid_transfer_and_sends_nothing(
    clients: Clients, relayer: Relayer, process: ProcessContext
) -> None:
    token = relayer.baskets["single"].tokens[0]
    before = await contract_balances(relayer)
    held = await relayer.rpc.token_balance(
        get_associated_token_address(relayer.signer.pubkey(), token.mint)
    )
    sub = await clients.service.submit_held(
        JobRequest("token_transfer", {"wallet": WALLET, "bundleId": "single", "lamports": 1},
                   priority=Priority.HIGH),
    )  # fmt: skip
    # A purchase whose swap landed but that claims more than the relayer holds.
    await relayer.purchases.insert(
        Purchase(
            id=sub.task.id, wallet=WALLET, basket="single", lamports=1,
            legs=[PurchaseLeg(token.symbol, str(token.mint), token.decimals, 1, held + 1)],
            swap={"state": SwapState.LANDED.value, "signatures": [], "transactions": []},
        )
    )  # fmt: skip
    await clients.service.dispatch_pending([sub.task])
    async with InProcessWorker(clients, "high", process=process):
        task = await wait_until(lambda: _parked(clients, sub.task.id), timeout=20)
    # Parked at once (retrying cannot help), never failed: the buyer paid for the swap.
    assert task.attempts == 1
    assert task.review["reason"] == "relayer-short-of-tokens"
    assert "the transfer needs" in task.review["details"]["error"]
    assert await transfer_of(relayer, sub.task.id) == {}
    assert await contract_balances(relayer) == before


async def test_treasury_short_of_tokens_refuses_the_purchase_before_any_write(
    aiohttp_client: AiohttpClient,
    settings: Settings,
    clients: Clients,
    relayer: Relayer,
    chain: Devchain,
    tmp_path: Path,
) -> None:
    mint = chain.manifest["mints"][0]
    # One lamport per whole token: 100 SOL asks for 1e17 base units, the treasury holds 1e15.
    cheap = {"id": "cheap", "maxLamports": 100 * LAMPORTS_PER_SOL, "tokens": [
        {"symbol": mint["symbol"], "mint": mint["mint"], "decimals": mint["decimals"],
         "weight": 1, "lamportsPerToken": 1}]}  # fmt: skip
    baskets = tmp_path / "baskets.json"
    baskets.write_text(json.dumps({"baskets": [cheap]}))
    chain_settings = replace(relayer.chain, baskets_file=str(baskets))
    app = create_app(settings, api_settings(), {relayer_jobs.CHAIN_SETTINGS: chain_settings})
    gateway = await aiohttp_client(app)
    landed = (await chain.state())["bundlesLanded"]
    resp = await buy(gateway, sol=100, bundle="cheap")
    await problem(resp, 409, "insufficient-liquidity", field="solAmount")
    assert (await chain.state())["bundlesLanded"] == landed
    assert await clients.store.count(state=TaskState.PENDING) == 0
