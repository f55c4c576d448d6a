"""Refunding a parked purchase: the operator's decision is recorded once per parking, then
the purchase's lamports go back to the buyer's wallet exactly once, by the transfer's
protocol; nothing is delivered once a refund was decided, nothing refunded once delivered;
reconciliation accounts for every refund on chain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from relayq.core.clients import Clients
from relayq.core.failpoints import CRASH_EXIT_CODE
from relayq.core.jobs import Task, TaskState
from relayq.core.modules import ProcessContext
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.settings import Settings
from relayq.devchain.ledger import FINALIZED_DEPTH
from relayq.relayer import review_main
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.purchases import Purchase, PurchaseLeg, RefundState, SwapState, TransferState
from relayq.relayer.reconcile import reconcile
from relayq.relayer.refund import refund_instructions
from relayq.relayer.relayer import Relayer
from relayq.relayer.review import ResolutionRefused, refund
from relayq.relayer.signing import Purpose
from tests.conftest import InProcessWorker, WorkerProcess, wait_until
from tests.gateway import CLIENT, problem
from tests.integration.conftest import Api
from tests.relayer.conftest import Devchain
from tests.relayer.test_funds_safety import SIG_OLD
from tests.relayer.test_parked_purchases import (
    bought_and_parked,
    land_transfer,
    park,
    resolution,
    resolve,
)
from tests.relayer.test_reconcile import window_start

# Above the rent-exempt minimum, so a refund may open the buyer's (fresh) wallet.
LAMPORTS = 2_000_000


def refunds(outcome: str) -> float:
    return REGISTRY.get_sample_value("relayq_refunds_total", {"outcome": outcome}) or 0.0


async def parked_purchase(
    clients: Clients,
    relayer: Relayer,
    *,
    lamports: int = LAMPORTS,
    swap_state: SwapState = SwapState.PARTIAL,
    transfer: dict[str, Any] | None = None,
    refund: dict[str, Any] | None = None,
    reason: str = "swap-partly-landed",
) -> tuple[Task, str]:
    """A purchase of client-a for a fresh wallet, parked for review; its swap landed in
    part (so the relayer's inventory stays as the records say). Returns (task, wallet)."""
    wallet = str(Keypair().pubkey())
    token = relayer.baskets["single"].tokens[0]
    sub = await clients.service.submit_held(
        JobRequest("token_transfer", {"wallet": wallet, "bundleId": "single"},
                   priority=Priority.HIGH, client="client-a"),
    )  # fmt: skip
    swap_sig = str(Signature(bytes.fromhex(sub.task.id) * 4))
    await relayer.purchases.insert(
        Purchase(
            id=sub.task.id, wallet=wallet, basket="single", lamports=lamports,
            legs=[PurchaseLeg(token.symbol, str(token.mint), token.decimals, lamports, 1)],
            swap={"state": swap_state.value, "signatures": [swap_sig], "transactions": []},
            transfer=dict(transfer or {}),
        )
    )  # fmt: skip
    if refund is not None:
        await relayer.purchases.purchases.update_one(
            {"_id": sub.task.id}, {"$set": {"refund": refund}}
        )
    return await park(clients, sub.task.id, reason, TaskState.PENDING), wallet


async def balance(relayer: Relayer, wallet: str) -> int:
    return await relayer.rpc.balance(Pubkey.from_string(wallet))


async def settled(clients: Clients, task_id: str) -> Task | None:
    """The task once finished, or parked again after a run."""
    task = await clients.store.get(task_id)
    if task is None:
        return None
    again = task.state is TaskState.NEEDS_REVIEW and task.attempts > 0
    return task if task.state.finished or again else None


async def run_refund(
    clients: Clients, relayer: Relayer, process: ProcessContext, chain: Devchain, task_id: str
) -> Task:
    """Run the released task in a worker; once its refund is on chain, make it final at once."""
    async with InProcessWorker(clients, "high", process=process):

        async def on_chain() -> bool:
            purchase = await relayer.purchases.get(task_id)
            sig = None if purchase is None else purchase.refund.get("signature")
            if sig is None:
                return bool(await settled(clients, task_id))
            [state] = await relayer.rpc.statuses([Signature.from_string(sig)])
            return state is not None

        await wait_until(on_chain, timeout=20)
        await chain.faults(advanceSlots=FINALIZED_DEPTH + 2)
        done: Task = await wait_until(lambda: settled(clients, task_id), timeout=30)
    return done


async def only_one_refund(relayer: Relayer, task_id: str) -> Purchase:
    """Of every refund ever signed for the purchase, exactly the recorded one is on chain."""
    purchase = await relayer.purchases.get(task_id)
    assert purchase is not None
    r = purchase.refund
    sigs = [Signature.from_string(s) for s in r["signatures"]]
    landed = [str(s) for s, st in zip(sigs, await relayer.rpc.statuses(sigs), strict=True) if st]
    assert landed == [r["signature"]], (landed, r["signatures"])
    return purchase


async def test_two_operators_refunding_at_once_return_the_lamports_once(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext, chain: Devchain
) -> None:
    task, wallet = await parked_purchase(clients, relayer)
    decided = refunds("decided")

    first, second = await asyncio.gather(
        resolve(gateway, task.id, {**resolution("refund"), "operator": "alice"}),
        resolve(gateway, task.id, {**resolution("refund"), "operator": "bob"}),
    )

    assert sorted([first.status, second.status]) == [202, 409], (first.status, second.status)
    loser = second if second.status == 409 else first
    assert (await loser.json())["code"] in ("purchase-already-resolved", "purchase-not-parked")
    assert refunds("decided") == decided + 1
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None and purchase.resolution["action"] == "refund"
    assert purchase.refund["state"] == RefundState.DECIDED.value
    assert purchase.refund["lamports"] == LAMPORTS and purchase.refund["wallet"] == wallet

    done = await run_refund(clients, relayer, process, chain, task.id)

    assert done.state is TaskState.COMPLETED, done.last_error
    assert await balance(relayer, wallet) == LAMPORTS  # a fresh wallet: exactly the refund
    purchase = await only_one_refund(relayer, task.id)
    assert len(purchase.refund["signatures"]) == 1
    assert purchase.refund["state"] == RefundState.FINALIZED.value
    assert done.result == {"outcome": "refunded", "refundSignature": purchase.refund["signature"],
                           "slot": purchase.refund["slot"], "lamports": LAMPORTS}  # fmt: skip
    assert not purchase.recorded and purchase.transfer == {}
    # The buyer's own view says plainly what happened.
    view = await (await gateway.get(f"/v1/tasks/{task.id}", headers=CLIENT)).json()
    assert view["state"] == "completed" and view["result"]["outcome"] == "refunded"
    assert view["purchase"]["outcome"] == "refunded"
    assert view["purchase"]["refund"]["state"] == "finalized"
    assert view["purchase"]["refund"]["chainState"] == "finalized"
    assert view["purchase"]["refund"]["solAmount"] == LAMPORTS / 1e9
    again = await resolve(gateway, task.id, resolution("refund"))
    await problem(again, 409, "purchase-not-parked")


async def test_a_refund_parked_at_its_signing_cap_refuses_delivery_and_resumes_on_refund(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext, chain: Devchain
) -> None:
    # As many refund signings as the cap allows, the last one expired unlanded.
    cap = relayer.chain.transfer_max_signings
    sigs = [str(Signature(bytes([n]) * 64)) for n in range(60, 60 + cap)]
    capped = {"state": RefundState.SIGNED.value, "signature": sigs[-1], "signatures": sigs,
              "lastValidBlockHeight": 0, "transaction": "", "lamports": LAMPORTS}  # fmt: skip
    task, wallet = await parked_purchase(
        clients, relayer, swap_state=SwapState.LANDED, refund={**capped, "wallet": "x"}
    )
    await relayer.purchases.purchases.update_one(
        {"_id": task.id}, {"$set": {"refund.wallet": wallet}}
    )
    parked = refunds("parked")
    await clients.service.release_review(task.id, "look again")
    async with InProcessWorker(clients, "high", process=process):
        again = await wait_until(lambda: settled(clients, task.id), timeout=20)
    assert again.state is TaskState.NEEDS_REVIEW and again.review is not None
    assert again.review["reason"] == "refund-signing-cap"
    assert refunds("parked") == parked + 1

    deliver = await resolve(gateway, task.id, resolution("deliver"))
    evidence = await resolve(gateway, task.id, resolution("mark-completed", signature=SIG_OLD))
    await problem(deliver, 409, "refund-decided")
    await problem(evidence, 409, "refund-decided")
    resumed = await resolve(gateway, task.id, resolution("refund"))
    assert resumed.status == 202, await resumed.text()
    done = await run_refund(clients, relayer, process, chain, task.id)

    assert done.state is TaskState.COMPLETED, done.last_error
    assert await balance(relayer, wallet) == LAMPORTS
    purchase = await only_one_refund(relayer, task.id)
    assert purchase.refund["signatures"][:cap] == sigs
    assert len(purchase.refund["signatures"]) == cap + 1
    assert [r["action"] for r in (await relayer.purchases.purchases.find_one(
        {"_id": task.id}))["resolutions"]] == ["refund"]  # fmt: skip


async def test_a_refund_that_fails_on_chain_is_parked_at_finalized(
    clients: Clients, relayer: Relayer, process: ProcessContext, chain: Devchain
) -> None:
    # One lamport cannot open the buyer's wallet (rent): the chain refuses the transfer.
    task, wallet = await parked_purchase(clients, relayer, lamports=1)
    released = await refund(relayer, task.id, "swap partly landed", "alice")
    assert released.state is TaskState.QUEUED
    failed = refunds("failed")

    done = await run_refund(clients, relayer, process, chain, task.id)

    assert done.state is TaskState.NEEDS_REVIEW and done.review is not None
    assert done.review["reason"] == "refund-failed", done.review
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None and purchase.refund["state"] == RefundState.FAILED.value
    assert refunds("failed") == failed + 1
    assert await balance(relayer, wallet) == 0


async def test_no_refund_once_the_tokens_were_delivered_or_may_still_be(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    confirmed = {"state": TransferState.CONFIRMED.value, "signature": SIG_OLD,
                 "signatures": [SIG_OLD]}  # fmt: skip
    delivered, _ = await parked_purchase(clients, relayer, transfer=confirmed, reason="x")
    live = {"state": TransferState.SIGNED.value, "signature": str(Signature(bytes([9]) * 64)),
            "signatures": [], "lastValidBlockHeight": 10**12, "transaction": ""}  # fmt: skip
    may_land, _ = await parked_purchase(clients, relayer, transfer=live, reason="x")
    undecided, _ = await parked_purchase(clients, relayer, swap_state=SwapState.SIGNED)
    # A transfer the record names as signed, landed on chain (a deliver that went through).
    landed = await bought_and_parked(gateway, clients, relayer, "signing-cap")
    signature = await land_transfer(relayer, landed.id)
    signed = {"state": TransferState.SIGNED.value, "signature": signature,
              "signatures": [signature], "lastValidBlockHeight": 0, "transaction": ""}  # fmt: skip
    await relayer.purchases.purchases.update_one({"_id": landed.id}, {"$set": {"transfer": signed}})

    async def known() -> bool:
        [state] = await relayer.rpc.statuses([Signature.from_string(signature)])
        return state is not None

    await wait_until(known, timeout=10)

    await problem(await resolve(gateway, delivered.id, resolution("refund")), 409,
                  "purchase-delivered")  # fmt: skip
    await problem(await resolve(gateway, landed.id, resolution("refund")), 409,
                  "purchase-delivered")  # fmt: skip
    await problem(await resolve(gateway, may_land.id, resolution("refund")), 409,
                  "transfer-may-land")  # fmt: skip
    await problem(await resolve(gateway, undecided.id, resolution("refund")), 409,
                  "swap-undecided")  # fmt: skip
    for task in (delivered, landed, may_land, undecided):
        purchase = await relayer.purchases.get(task.id)
        assert purchase is not None and purchase.refund == {} and purchase.resolution == {}
        stored = await clients.store.get(task.id)
        assert stored is not None and stored.state is TaskState.NEEDS_REVIEW


async def test_a_transfer_is_never_signed_once_a_refund_was_decided(
    clients: Clients, relayer: Relayer
) -> None:
    task, _ = await parked_purchase(clients, relayer)
    await refund(relayer, task.id, "partial swap", "alice")
    # A run of the transfer that outlived its lease tries to persist a signing.
    late = {"state": TransferState.SIGNED.value, "signature": SIG_OLD, "signatures": [SIG_OLD]}
    assert not await relayer.purchases.put_transfer(task.id, None, late)
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None and purchase.transfer == {}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_persist", "after_send"])
async def test_a_crash_before_or_after_sending_still_makes_exactly_one_refund(
    point: str,
    clients: Clients,
    relayer: Relayer,
    chain: Devchain,
    chain_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    task, wallet = await parked_purchase(clients, relayer)
    await refund(relayer, task.id, "partial swap", "alice")
    crashing = start_worker("high", **chain_env, RELAYQ_FAILPOINTS=f"refund.{point}")
    assert await asyncio.to_thread(crashing.process.wait, 30) == CRASH_EXIT_CODE
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None and purchase.refund["state"] == RefundState.SIGNED.value

    start_worker("high", **chain_env)

    async def on_chain() -> bool:
        p = await relayer.purchases.get(task.id)
        assert p is not None
        [state] = await relayer.rpc.statuses([Signature.from_string(p.refund["signature"])])
        return state is not None

    await wait_until(on_chain, timeout=30)
    await chain.faults(advanceSlots=FINALIZED_DEPTH + 2)
    done = await wait_until(lambda: settled(clients, task.id), timeout=30)
    assert done.state is TaskState.COMPLETED, done.last_error
    assert await balance(relayer, wallet) == LAMPORTS
    purchase = await only_one_refund(relayer, task.id)
    if point == "after_send":
        assert len(purchase.refund["signatures"]) == 1


async def test_reconciliation_accounts_for_refunds(
    clients: Clients, relayer: Relayer, process: ProcessContext, chain: Devchain
) -> None:
    since = await window_start()
    task, _ = await parked_purchase(clients, relayer)
    await refund(relayer, task.id, "partial swap", "alice")
    done = await run_refund(clients, relayer, process, chain, task.id)
    assert done.state is TaskState.COMPLETED, done.last_error

    await chain.faults(advanceSlots=FINALIZED_DEPTH + 2)
    report = await reconcile(relayer, since, settle_seconds=0)
    assert report.clean, report.to_json()
    assert report.purchases == 1 and report.transactions == 1  # the refund

    # A second refund of the same purchase lands outside the protocol; a refund memo names
    # no purchase; a record names a refund the chain never saw.
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None
    await asyncio.sleep(0.5)  # a newer blockhash: another signature
    blockhash = await relayer.rpc.latest_blockhash()
    ghost_id = "f" * 32
    stray = []
    for p in (purchase, Purchase(ghost_id, purchase.wallet, "single", 1_000_000, [], {})):
        to = Pubkey.from_string(p.wallet)
        instructions = refund_instructions(relayer, p)
        tx = await relayer.sign(instructions, blockhash.value, purpose=Purpose.REFUND, refund_to=to)
        stray.append(str(await relayer.rpc.send(tx)))
    phantom = str(Signature.new_unique())
    other, _ = await parked_purchase(
        clients, relayer, refund={"state": RefundState.FINALIZED.value, "signature": phantom,
                                  "signatures": [phantom], "lamports": LAMPORTS},
    )  # fmt: skip

    async def landed() -> bool:
        states = await relayer.rpc.statuses([Signature.from_string(s) for s in stray])
        return all(s is not None for s in states)

    await wait_until(landed, timeout=10)
    await chain.faults(advanceSlots=FINALIZED_DEPTH + 2)
    report = await reconcile(relayer, since, settle_seconds=0)

    found = {(d.kind, d.purchase_id, d.signature) for d in report.discrepancies}
    assert found == {
        ("unrecorded_refund", task.id, stray[0]),
        ("duplicate_refund", task.id, stray[0]),
        ("unrecorded_refund", ghost_id, stray[1]),
        ("refund_not_on_chain", other.id, phantom),
    }, report.to_json()


async def test_the_cli_refunds_a_parked_purchase(
    clients: Clients, relayer: Relayer, settings: Settings, chain_settings: ChainSettings
) -> None:
    task, _ = await parked_purchase(clients, relayer)
    parser = review_main.build_parser()
    args = ["resolve", task.id, "refund", "--reason", "swap partly landed", "--operator", "dan"]

    out = await review_main.run(settings, chain_settings, parser.parse_args(args))

    assert out["state"] == "queued"
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None and purchase.resolution["operator"] == "dan"
    assert purchase.refund["state"] == RefundState.DECIDED.value
    with pytest.raises(ResolutionRefused) as refused:
        await review_main.run(settings, chain_settings, parser.parse_args(args))
    assert refused.value.code == "purchase-not-parked"


def test_the_cli_refuses_a_refund_with_evidence_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        review_main.main(["resolve", "a" * 32, "refund", "--signature", SIG_OLD,
                          "--reason", "x", "--operator", "y"])  # fmt: skip
    assert exited.value.code == 2
    assert "invalid-argument" in capsys.readouterr().err
