"""Funds safety: once a buyer has paid, nothing ends `failed` on anything but the chain's word.

Each test drives the real relayer code against the local chain, real Redis and
real MongoDB; the chain's answers come from the devchain (its fault injection
and its commitment views), never from a model of it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from dataclasses import replace

import pytest
from solders.keypair import Keypair
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from spl.token.instructions import get_associated_token_address

from relayq.core.clients import Clients
from relayq.core.failpoints import CRASH_EXIT_CODE
from relayq.core.jobs import Defer, NeedsReview, Task, TaskState
from relayq.core.modules import ProcessContext
from relayq.core.priorities import Priority
from relayq.core.queue import Delivery, Message
from relayq.core.service import JobRequest
from relayq.relayer import jobs as relayer_jobs
from relayq.relayer import transfer as transfer_steps
from relayq.relayer.chain.rpc import SignatureState
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.memo import purchase_memo
from relayq.relayer.purchases import Purchase, PurchaseLeg, SwapState, TransferState
from relayq.relayer.relayer import Relayer
from relayq.relayer.transfer import run_transfer
from tests.conftest import InProcessWorker, WorkerProcess, wait_until
from tests.integration.conftest import Api
from tests.relayer.conftest import FINALITY_LAG, VALIDITY_SLOTS, Devchain, contract_balances
from tests.relayer.test_exactly_once import bought
from tests.relayer.test_purchase import WALLET, buy, finished

# Two well-formed signatures that name no transaction on the chain.
SIG_OLD = str(Signature(bytes([7]) * 64))
SIG_NEW = str(Signature(bytes([8]) * 64))


async def paid_purchase(
    clients: Clients, relayer: Relayer, amount: int = 1, transfer: dict[str, object] | None = None
) -> Task:
    """A held token_transfer task and its purchase record, the swap landed."""
    token = relayer.baskets["single"].tokens[0]
    sub = await clients.service.submit_held(
        JobRequest("token_transfer", {"wallet": WALLET, "bundleId": "single", "lamports": 1},
                   priority=Priority.HIGH),
    )  # fmt: skip
    await relayer.purchases.insert(
        Purchase(
            id=sub.task.id, wallet=WALLET, basket="single", lamports=1,
            legs=[PurchaseLeg(token.symbol, str(token.mint), token.decimals, 1, amount)],
            swap={"state": SwapState.LANDED.value, "signatures": [], "transactions": []},
            transfer=dict(transfer or {}),
        )
    )  # fmt: skip
    return sub.task


async def relayer_holds(relayer: Relayer) -> int:
    token = relayer.baskets["single"].tokens[0]
    return await relayer.rpc.token_balance(
        get_associated_token_address(relayer.signer.pubkey(), token.mint)
    )


# -- hole 10: delivery counts are no evidence of poison for a paid purchase ---------------


async def test_a_paid_transfer_past_its_delivery_limit_is_parked_never_failed(
    clients: Clients, relayer: Relayer, process: ProcessContext
) -> None:
    task = await paid_purchase(clients, relayer)
    await clients.service.dispatch_pending([task])
    # A worker took it and was killed, again and again, until the claim passed the limit.
    started = await clients.service.lifecycle.start(task.id, "killed-worker", redelivered=False)
    assert started is not None
    worker = InProcessWorker(clients, "high", process=process)
    deliveries = clients.settings.max_deliveries + 1
    await worker.executor.poison(
        Delivery(Priority.HIGH, "1-0", Message(task.id, "token_transfer"), deliveries=deliveries)
    )
    stored = await clients.store.get(task.id)
    assert stored is not None and stored.state is TaskState.NEEDS_REVIEW, stored
    assert stored.review is not None and stored.review["reason"] == "deliveries"


# -- hole 4: a stale run cannot write over a newer outcome ---------------------------------


async def test_a_stale_run_cannot_write_failed_over_a_confirmed_transfer(
    clients: Clients, relayer: Relayer
) -> None:
    # Run A read the transfer while it was signed as SIG_OLD, then stalled past its lease.
    # Run B re-signed it (SIG_NEW) and saw that one confirmed.
    task = await paid_purchase(
        clients, relayer,
        transfer={"state": "confirmed", "signature": SIG_NEW, "slot": 7,
                  "signatures": [SIG_OLD, SIG_NEW]},
    )  # fmt: skip
    stale = await relayer.purchases.get(task.id)
    assert stale is not None
    stale = Purchase(**{**stale.__dict__, "transfer": {"state": "signed", "signature": SIG_OLD}})
    # Run A wakes up to an answer about its old signature saying it failed.
    failed = SignatureState(slot=5, error="InstructionError", confirmation="finalized")
    with contextlib.suppress(Exception):
        await transfer_steps._settle(relayer, stale, Signature.from_string(SIG_OLD), failed)
    stored = await relayer.purchases.get(task.id)
    assert stored is not None
    assert stored.transfer["state"] == TransferState.CONFIRMED.value, stored.transfer
    assert stored.transfer["signature"] == SIG_NEW and "error" not in stored.transfer


# -- hole 3: re-signing a transfer ------------------------------------------------------


async def run_once(relayer: Relayer, task_id: str) -> str:
    """One run of the transfer protocol; what it ended with (done, or the wait's reason)."""
    purchase = await relayer.purchases.get(task_id)
    assert purchase is not None
    try:
        await run_transfer(relayer, purchase)
    except Defer as exc:
        return f"deferred: {exc}"
    return "done"


async def signings(relayer: Relayer, task_id: str) -> list[str]:
    purchase = await relayer.purchases.get(task_id)
    assert purchase is not None
    return list(purchase.transfer.get("signatures", []))


async def test_the_relayer_refuses_to_start_on_an_rpc_without_history(
    clients: Clients, chain: Devchain, chain_settings: ChainSettings
) -> None:
    await chain.faults(historyOff=True)
    ctx = ProcessContext(clients, {relayer_jobs.CHAIN_SETTINGS: chain_settings})
    with pytest.raises(relayer_jobs.RpcWithoutHistory, match="keeps no transaction history"):
        await relayer_jobs.startup(ctx)
    assert relayer_jobs.RELAYER not in ctx.state  # closed again, nothing left open
    await chain.faults(historyOff=False)
    await relayer_jobs.startup(ctx)
    await relayer_jobs.shutdown(ctx)


async def test_expiry_is_decided_on_the_finalized_height(
    gateway: Api, relayer: Relayer, chain: Devchain
) -> None:
    relayer.chain = replace(relayer.chain, confirm_wait_seconds=0.3)
    before = await contract_balances(relayer)
    task_id, amounts = await bought(gateway)
    await chain.faults(dropTransactions=1000, haltSlots=True)  # every send is lost
    assert (await run_once(relayer, task_id)).startswith("deferred")
    [first] = await signings(relayer, task_id)
    # Past its last valid height at processed and confirmed, not yet at finalized.
    await chain.faults(advanceSlots=VALIDITY_SLOTS + 5)
    assert (await run_once(relayer, task_id)).startswith("deferred")
    assert await signings(relayer, task_id) == [first]
    # Expired at finalized too: now, and only now, a new transaction is signed.
    await chain.faults(advanceSlots=FINALITY_LAG)
    assert (await run_once(relayer, task_id)).startswith("deferred")
    assert len(await signings(relayer, task_id)) == 2
    await chain.faults(reset=True, haltSlots=False)
    assert await wait_until(lambda: _done(relayer, task_id), timeout=30)
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in amounts} == amounts


async def _done(relayer: Relayer, task_id: str) -> bool:
    return await run_once(relayer, task_id) == "done"


async def test_an_unknown_status_from_a_node_behind_the_expiry_is_no_evidence(
    gateway: Api, relayer: Relayer, chain: Devchain
) -> None:
    relayer.chain = replace(relayer.chain, confirm_wait_seconds=0.3)
    before = await contract_balances(relayer)
    task_id, amounts = await bought(gateway)
    # The transfer lands, and the run that sent it dies before recording that.
    await wait_until(lambda: _done(relayer, task_id), timeout=20)
    await relayer.purchases.purchases.update_one(
        {"_id": task_id}, {"$set": {"transfer.state": "signed"}, "$unset": {"transfer.slot": ""}}
    )
    await chain.faults(haltSlots=True, advanceSlots=VALIDITY_SLOTS + FINALITY_LAG + 10)
    # Statuses come from a node far behind: it has not seen the transfer land.
    await chain.faults(statusLagSlots=VALIDITY_SLOTS + FINALITY_LAG + 100)
    outcome = await run_once(relayer, task_id)
    assert "behind the expiry" in outcome, outcome
    assert len(await signings(relayer, task_id)) == 1
    await chain.faults(reset=True, haltSlots=False)
    assert await run_once(relayer, task_id) == "done"
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in amounts} == amounts  # once, not twice


async def test_signings_are_capped_then_the_purchase_is_parked(
    gateway: Api, relayer: Relayer, chain: Devchain
) -> None:
    relayer.chain = replace(relayer.chain, confirm_wait_seconds=0.3, transfer_max_signings=2)
    before = await contract_balances(relayer)
    task_id, _ = await bought(gateway)
    await chain.faults(dropTransactions=1000, haltSlots=True)
    for _ in range(2):
        assert (await run_once(relayer, task_id)).startswith("deferred")
        await chain.faults(advanceSlots=VALIDITY_SLOTS + FINALITY_LAG + 5)
    with pytest.raises(NeedsReview) as parked:
        await run_once(relayer, task_id)
    assert parked.value.reason == "signing-cap"
    assert parked.value.details["signatures"] == await signings(relayer, task_id)
    assert len(parked.value.details["signatures"]) == 2
    await chain.faults(reset=True, haltSlots=False)
    assert await contract_balances(relayer) == before


# -- hole 2: the block engine's word is a hint, never a verdict ---------------------------


async def test_a_bundle_the_block_engine_reports_failed_is_no_verdict(
    gateway: Api, clients: Clients, relayer: Relayer, chain: Devchain, process: ProcessContext
) -> None:
    # Reported Failed at the next slot, without running: its signatures never landed,
    # the blockhash is valid, and the same bytes sent again can still land.
    before = await contract_balances(relayer)
    await chain.faults(failBundles=1)
    resp = await buy(gateway, sol=0.5)
    body = await resp.json()
    assert resp.status == 202 and body["status"] == "swap_pending", body
    async with (
        InProcessWorker(clients, "critical", process=process),
        InProcessWorker(clients, "high", process=process),
    ):
        task = await wait_until(lambda: finished(clients, body["taskId"]), timeout=40)
    assert task.state is TaskState.COMPLETED, task.last_error
    after = await contract_balances(relayer)
    bought_ = {t["mint"]: int(t["amount"]) for t in body["tokens"]}
    assert {m: after[m] - before[m] for m in bought_} == bought_


# -- hole 6: a basket swap that partly lands ---------------------------------------------


async def test_a_swap_that_partly_landed_is_parked_with_what_landed_after_expiry(
    clients: Clients, relayer: Relayer, chain: Devchain, process: ProcessContext
) -> None:
    # A basket of two transactions: Jito landed one alone (here: sent on its own), and
    # the other never landed before the blockhash expired.
    sub = await clients.service.submit_held(
        JobRequest("token_transfer", {"wallet": WALLET, "bundleId": "single", "lamports": 1},
                   priority=Priority.HIGH),
    )  # fmt: skip
    await chain.faults(haltSlots=True)
    blockhash = await relayer.rpc.latest_blockhash()
    payer = relayer.signer.pubkey()
    txs = []
    for n in (1, 2):
        pay = TransferParams(from_pubkey=payer, to_pubkey=Keypair().pubkey(), lamports=10**6 + n)
        txs.append(await relayer.sign([transfer(pay), purchase_memo(sub.task.id)], blockhash.value))
    sigs = [str(tx.signatures[0]) for tx in txs]
    token = relayer.baskets["single"].tokens[0]
    await relayer.purchases.insert(
        Purchase(
            id=sub.task.id, wallet=WALLET, basket="single", lamports=1,
            legs=[PurchaseLeg(token.symbol, str(token.mint), token.decimals, 1, 1)],
            swap={"state": SwapState.SIGNED.value, "signatures": sigs,
                  "transactions": [base64.b64encode(bytes(tx)).decode() for tx in txs],
                  "lastValidBlockHeight": blockhash.last_valid_block_height},
        )
    )  # fmt: skip
    await relayer.rpc.send(txs[0])
    await chain.faults(advanceSlots=VALIDITY_SLOTS + FINALITY_LAG + 10)
    await clients.service.submit(
        JobRequest("swap_settle", {"purchaseId": sub.task.id}, priority=Priority.CRITICAL)
    )
    async with InProcessWorker(clients, "critical", process=process):
        task = await wait_until(lambda: _parked(clients, sub.task.id), timeout=20)
    await chain.faults(haltSlots=False)
    assert task.review is not None and task.review["reason"] == "swap-partly-landed"
    assert task.review["details"]["landed"] == [sigs[0]]
    assert task.review["details"]["missing"] == [sigs[1]]
    purchase = await relayer.purchases.get(sub.task.id)
    assert purchase is not None and purchase.swap["state"] == SwapState.PARTIAL.value


async def _parked(clients: Clients, task_id: str) -> Task | None:
    task = await clients.store.get(task_id)
    return task if task is not None and task.state is TaskState.NEEDS_REVIEW else None


@pytest.mark.slow
async def test_a_paid_transfer_whose_workers_keep_dying_is_parked_then_delivered_once(
    gateway: Api,
    clients: Clients,
    relayer: Relayer,
    chain_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Issue 15's reproduction, with real worker processes: a worker dies mid-transfer
    # (after persisting the signed transaction), and the claim passes the delivery limit.
    before = await contract_balances(relayer)
    task_id, amounts = await bought(gateway)
    one_delivery = {**chain_env, "RELAYQ_MAX_DELIVERIES": "1"}
    dying = start_worker("high", **one_delivery, RELAYQ_FAILPOINTS="transfer.after_persist")
    assert await asyncio.to_thread(dying.process.wait, 30) == CRASH_EXIT_CODE
    start_worker("high", **one_delivery)  # takes the claim over after the lease: poison
    task = await wait_until(lambda: _parked(clients, task_id), timeout=30)
    assert task.review is not None and task.review["reason"] == "deliveries"

    # An operator reviews it and lets it run again: the transfer completes, once.
    await clients.service.release_review(task_id, "the transfer never landed: deliver")
    start_worker("medium", **chain_env)
    done = await wait_until(lambda: finished(clients, task_id), timeout=40)
    assert done.state is TaskState.COMPLETED, done.last_error
    after = await contract_balances(relayer)
    assert {m: after[m] - before[m] for m in amounts} == amounts
    purchase = await relayer.purchases.get(task_id)
    assert purchase is not None and len(purchase.transfer["signatures"]) >= 1
    assert purchase.transfer["state"] == TransferState.CONFIRMED.value
