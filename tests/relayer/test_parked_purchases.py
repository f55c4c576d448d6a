"""Resolving parked purchases: an operator lists them, reads what landed, and resolves each
once, with a recorded reason: deliver (the transfer runs, exactly once) or mark-completed
on a landed signature the chain shows at finalized."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from solders.signature import Signature

from relayq.core.clients import Clients
from relayq.core.jobs import Task, TaskState
from relayq.core.modules import ProcessContext
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.settings import Settings
from relayq.relayer import review_main
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.purchases import Purchase, PurchaseLeg, SwapState, TransferState
from relayq.relayer.relayer import Relayer
from relayq.relayer.review import ResolutionRefused
from relayq.relayer.transfer import transfer_instructions
from tests.conftest import InProcessWorker, wait_until
from tests.gateway import ADMIN, CLIENT, problem
from tests.integration.conftest import Api
from tests.relayer.conftest import contract_balances
from tests.relayer.test_exactly_once import bought, only_one_landed
from tests.relayer.test_funds_safety import SIG_OLD
from tests.relayer.test_purchase import WALLET

REVIEW = "/v1/admin/purchases/review"


async def paid_purchase(
    clients: Clients, relayer: Relayer, amount: int = 1, transfer: dict[str, Any] | None = None
) -> Task:
    """A held token_transfer task and its purchase record, the swap landed (under a swap
    signature of its own: a signature belongs to one purchase)."""
    token = relayer.baskets["single"].tokens[0]
    sub = await clients.service.submit_held(
        JobRequest("token_transfer", {"wallet": WALLET, "bundleId": "single", "lamports": 1},
                   priority=Priority.HIGH),
    )  # fmt: skip
    swap_sig = str(Signature(bytes.fromhex(sub.task.id) * 4))
    await relayer.purchases.insert(
        Purchase(
            id=sub.task.id, wallet=WALLET, basket="single", lamports=1,
            legs=[PurchaseLeg(token.symbol, str(token.mint), token.decimals, 1, amount)],
            swap={"state": SwapState.LANDED.value, "signatures": [swap_sig], "transactions": []},
            transfer=dict(transfer or {}),
        )
    )  # fmt: skip
    return sub.task


async def parked(
    clients: Clients, relayer: Relayer, reason: str = "transfer-failed", **kwargs: Any
) -> Task:
    """A paid purchase (no tokens behind it: for what needs no transfer) parked for review."""
    task = await paid_purchase(clients, relayer, **kwargs)
    return await park(clients, task.id, reason, TaskState.PENDING)


async def bought_and_parked(
    gateway: Api, clients: Clients, relayer: Relayer, reason: str,
    transfer: dict[str, Any] | None = None,
) -> Task:  # fmt: skip
    """A real purchase (its swap landed: the relayer holds its tokens), parked before any
    worker ran its transfer, with `transfer` as its record of the transfer."""
    task_id, _ = await bought(gateway, bundle="single")
    if transfer is not None:
        assert await relayer.purchases.put_transfer(task_id, None, transfer)
    return await park(clients, task_id, reason, TaskState.QUEUED)


async def park(clients: Clients, task_id: str, reason: str, state: TaskState) -> Task:
    task = await clients.store.get(task_id)
    assert task is not None
    out = await clients.service.lifecycle.park_unclaimed(
        task.id, type_=task.type, priority=task.priority, reason=reason,
        details={"why": "test"}, expected=[state],
    )  # fmt: skip
    assert out is not None
    return out


def resolution(action: str, **extra: Any) -> dict[str, Any]:
    return {"action": action, "reason": "checked the chain", "operator": "alice", **extra}


async def resolve(gateway: Api, task_id: str, body: dict[str, Any]) -> Any:
    return await gateway.post(f"{REVIEW}/{task_id}/resolve", json=body, headers=ADMIN)


async def land_transfer(relayer: Relayer, task_id: str) -> str:
    """Sign and send the purchase's transfer outside the protocol (as a lost run would have)."""
    purchase = await relayer.purchases.get(task_id)
    assert purchase is not None
    blockhash = await relayer.rpc.latest_blockhash()
    tx = await relayer.sign(transfer_instructions(relayer, purchase), blockhash.value)
    await relayer.rpc.send(tx)
    return str(tx.signatures[0])


async def finalized(relayer: Relayer, signature: str) -> None:
    async def seen() -> bool:
        return await relayer.rpc.transaction(Signature.from_string(signature)) is not None

    await wait_until(seen, timeout=30)


async def test_parked_purchases_are_listed_and_shown_with_their_record(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    task = await parked(clients, relayer, amount=3)
    unparked = await paid_purchase(clients, relayer)

    page = await gateway.get(REVIEW, headers=ADMIN)
    one = await gateway.get(f"{REVIEW}/{task.id}", headers=ADMIN)

    assert page.status == 200, await page.text()
    listed = {p["task"]["taskId"]: p for p in (await page.json())["purchases"]}
    assert task.id in listed and unparked.id not in listed
    item = listed[task.id]
    assert item["task"]["review"]["reason"] == "transfer-failed"
    assert item["purchase"]["tokens"][0]["amount"] == "3"
    assert item["purchase"]["swap"]["state"] == "landed" and item["purchase"]["resolution"] is None
    assert one.status == 200 and (await one.json())["purchase"]["bundleId"] == "single"
    missing = await gateway.get(f"{REVIEW}/{'0' * 32}", headers=ADMIN)
    await problem(missing, 404, "purchase-not-found")
    await problem(await gateway.get(REVIEW, headers=CLIENT), 403, "forbidden")


async def finished_or_parked_again(clients: Clients, task_id: str) -> Task | None:
    task = await clients.store.get(task_id)
    if task is None:
        return None
    again = task.state is TaskState.NEEDS_REVIEW and task.attempts > 0
    return task if task.state.finished or again else None


async def test_deliver_signs_anew_a_transfer_that_failed_at_finalized_and_lands_it_once(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext
) -> None:
    # The recorded transfer failed on chain at finalized: it can never land.
    failed = {"state": TransferState.FAILED.value, "signature": SIG_OLD,
              "signatures": [SIG_OLD], "lastValidBlockHeight": 0, "error": "failed"}  # fmt: skip
    task = await bought_and_parked(gateway, clients, relayer, "transfer-failed", failed)
    token = relayer.baskets["single"].tokens[0]
    amount = (await relayer.purchases.get(task.id)).legs[0].amount  # type: ignore[union-attr]
    before = await contract_balances(relayer)

    resp = await resolve(gateway, task.id, resolution("deliver"))

    assert resp.status == 202, await resp.text()
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None
    r = purchase.resolution
    assert (r["action"], r["operator"], r["reason"]) == ("deliver", "alice", "checked the chain")
    assert r["at"] is not None and r["transferSignature"] == SIG_OLD
    workers = [InProcessWorker(clients, p, process=process) for p in ("high", "medium")]
    for worker in workers:
        await worker.__aenter__()
    try:
        done = await wait_until(lambda: finished_or_parked_again(clients, task.id), timeout=40)
    finally:
        for worker in workers:
            await worker.__aexit__(None, None, None)
    assert done.state is TaskState.COMPLETED, done.last_error
    after = await contract_balances(relayer)
    assert after[str(token.mint)] - before[str(token.mint)] == amount
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None and purchase.transfer["signatures"][0] == SIG_OLD
    assert purchase.transfer["signature"] != SIG_OLD
    signed_anew = purchase.transfer["signatures"][1:]
    await only_one_landed(relayer, {**purchase.transfer, "signatures": signed_anew})
    again = await resolve(gateway, task.id, resolution("deliver"))
    await problem(again, 409, "purchase-not-parked")


async def test_deliver_is_refused_when_the_swap_landed_only_in_part(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    task = await parked(clients, relayer, reason="swap-partly-landed")
    await relayer.purchases.purchases.update_one(
        {"_id": task.id}, {"$set": {"swap.state": SwapState.PARTIAL.value}}
    )

    resp = await resolve(gateway, task.id, resolution("deliver"))

    await problem(resp, 409, "purchase-not-deliverable")
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None and purchase.resolution == {}
    stored = await clients.store.get(task.id)
    assert stored is not None and stored.state is TaskState.NEEDS_REVIEW


async def test_one_parking_is_resolved_once_and_an_interrupted_resolution_resumes(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    task = await parked(clients, relayer, reason="relayer-short-of-tokens")
    assert task.review is not None
    # Another operator's deliver was recorded; its release had not happened yet.
    first = {
        "action": "deliver", "reason": "topped up", "operator": "bob",
        "parkedAt": task.review["parkedAt"], "transferSignature": None, "signings": 0,
    }  # fmt: skip
    assert await relayer.purchases.resolve(task.id, first) is not None
    assert await relayer.purchases.resolve(task.id, first) is None

    other = await resolve(gateway, task.id, resolution("mark-completed", signature=SIG_OLD))
    resumed = await resolve(gateway, task.id, resolution("deliver"))

    body = await problem(other, 409, "purchase-already-resolved")
    assert "bob" in body["detail"]
    assert resumed.status == 202, await resumed.text()
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None and purchase.resolution["operator"] == "bob"


async def test_mark_completed_takes_a_landed_transfer_as_evidence_only_at_finalized(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext
) -> None:
    task = await bought_and_parked(gateway, clients, relayer, "deliveries")
    signature = await land_transfer(relayer, task.id)

    async def confirmed() -> bool:
        [state] = await relayer.rpc.statuses([Signature.from_string(signature)])
        return state is not None and state.confirmed

    await wait_until(confirmed, timeout=20)
    early = await resolve(gateway, task.id, resolution("mark-completed", signature=signature))
    await problem(early, 422, "evidence-refused", field="signature")
    await finalized(relayer, signature)

    resp = await resolve(gateway, task.id, resolution("mark-completed", signature=signature))

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["state"] == "completed" and body["result"]["transferSignature"] == signature
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None
    assert purchase.transfer["state"] == TransferState.CONFIRMED.value
    assert purchase.transfer["signature"] == signature
    assert purchase.resolution["action"] == "mark-completed"
    async with InProcessWorker(clients, "medium", process=process):

        async def recorded() -> bool:
            p = await relayer.purchases.get(task.id)
            return p is not None and p.recorded

        await wait_until(recorded, timeout=20)


async def test_evidence_of_another_purchase_or_another_amount_is_refused(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    landed = await bought_and_parked(gateway, clients, relayer, "deliveries")
    signature = await land_transfer(relayer, landed.id)
    other = await parked(clients, relayer)
    await finalized(relayer, signature)

    foreign = await resolve(gateway, other.id, resolution("mark-completed", signature=signature))
    unknown = await resolve(gateway, other.id, resolution("mark-completed", signature=SIG_OLD))
    not_a_sig = await resolve(gateway, other.id, resolution("mark-completed", signature="x" * 64))

    assert "memo" in (await problem(foreign, 422, "evidence-refused"))["detail"]
    assert "finalized" in (await problem(unknown, 422, "evidence-refused"))["detail"]
    await problem(not_a_sig, 422, "evidence-refused")
    stored = await clients.store.get(other.id)
    assert stored is not None and stored.state is TaskState.NEEDS_REVIEW
    purchase = await relayer.purchases.get(other.id)
    assert purchase is not None and purchase.resolution == {} and purchase.transfer == {}


async def test_evidence_that_moved_another_amount_is_refused(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    task = await bought_and_parked(gateway, clients, relayer, "deliveries")
    # A transfer built for one base unit less, with this purchase's memo.
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None
    short = purchase.legs[0].amount - 1
    one = replace(purchase, legs=[replace(purchase.legs[0], amount=short)])
    blockhash = await relayer.rpc.latest_blockhash()
    tx = await relayer.sign(transfer_instructions(relayer, one), blockhash.value)
    await relayer.rpc.send(tx)
    signature = str(tx.signatures[0])
    await finalized(relayer, signature)

    resp = await resolve(gateway, task.id, resolution("mark-completed", signature=signature))

    body = await problem(resp, 422, "evidence-refused", field="signature")
    assert f"credited the contract {short} " in body["detail"]


async def test_mark_completed_waits_while_the_recorded_transfer_can_still_land(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    signed = {"state": TransferState.SIGNED.value, "signature": SIG_OLD, "signatures": [SIG_OLD],
              "lastValidBlockHeight": 10**12, "transaction": ""}  # fmt: skip
    task = await bought_and_parked(gateway, clients, relayer, "signing-cap", signed)
    signature = await land_transfer(relayer, task.id)
    await finalized(relayer, signature)

    resp = await resolve(gateway, task.id, resolution("mark-completed", signature=signature))

    await problem(resp, 409, "transfer-may-land")
    stored = await clients.store.get(task.id)
    assert stored is not None and stored.state is TaskState.NEEDS_REVIEW


async def test_a_resolution_needs_its_evidence_a_reason_and_an_operator(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    task = await parked(clients, relayer)
    no_sig = await resolve(gateway, task.id, resolution("mark-completed"))
    sig_on_deliver = await resolve(gateway, task.id, resolution("deliver", signature=SIG_OLD))
    no_operator = await resolve(gateway, task.id, {"action": "deliver", "reason": "x"})
    unknown = await resolve(gateway, task.id, resolution("burn"))
    sig_on_refund = await resolve(gateway, task.id, resolution("refund", signature=SIG_OLD))
    not_parked = await paid_purchase(clients, relayer)
    queued = await resolve(gateway, not_parked.id, resolution("deliver"))

    for resp in (no_operator, unknown):
        await problem(resp, 422, "invalid-body")
    for resp in (no_sig, sig_on_deliver, sig_on_refund):
        await problem(resp, 422, "invalid-payload")
    await problem(queued, 409, "purchase-not-parked")


async def test_the_cli_lists_shows_and_resolves_parked_purchases(
    clients: Clients, relayer: Relayer, settings: Settings, chain_settings: ChainSettings
) -> None:
    task = await parked(clients, relayer, reason="relayer-short-of-tokens")
    parser = review_main.build_parser()

    listed = await review_main.run(settings, chain_settings, parser.parse_args(["review"]))
    shown = await review_main.run(settings, chain_settings, parser.parse_args(["review", task.id]))
    resolved = await review_main.run(
        settings, chain_settings,
        parser.parse_args(["resolve", task.id, "deliver", "--reason", "topped up",
                           "--operator", "carol"]),
    )  # fmt: skip
    again = parser.parse_args(
        ["resolve", task.id, "deliver", "--reason", "twice", "--operator", "carol"]
    )

    assert task.id in [p["task"]["taskId"] for p in listed["purchases"]]
    assert shown["purchase"]["bundleId"] == "single"
    assert resolved["state"] == "queued"
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None and purchase.resolution["operator"] == "carol"
    with pytest.raises(ResolutionRefused) as refused:
        await review_main.run(settings, chain_settings, again)
    assert refused.value.code == "purchase-not-parked"


def test_the_cli_refuses_a_resolution_without_its_evidence_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        review_main.main(
            ["resolve", "a" * 32, "mark-completed", "--reason", "x", "--operator", "y"]
        )
    assert exited.value.code == 2
    assert json.loads(capsys.readouterr().err)["error"] == "invalid-argument"


async def test_deliver_after_the_signing_cap_gives_the_transfer_a_fresh_budget(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext
) -> None:
    # As many signings as the cap allows, the last one expired unlanded.
    sigs = [
        str(Signature(bytes([n]) * 64)) for n in range(20, 20 + relayer.chain.transfer_max_signings)
    ]
    capped = {"state": TransferState.SIGNED.value, "signature": sigs[-1], "signatures": sigs,
              "lastValidBlockHeight": 0, "transaction": ""}  # fmt: skip
    task = await bought_and_parked(gateway, clients, relayer, "signing-cap", capped)

    resp = await resolve(gateway, task.id, resolution("deliver"))

    assert resp.status == 202, await resp.text()
    async with InProcessWorker(clients, "high", process=process):
        done = await wait_until(lambda: finished_or_parked_again(clients, task.id), timeout=40)
    assert done.state is TaskState.COMPLETED, done.last_error
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None
    assert purchase.transfer["signatures"][: len(sigs)] == sigs
    assert len(purchase.transfer["signatures"]) == len(sigs) + 1


async def test_mark_completed_over_a_recorded_signing_that_expired_unlanded(
    gateway: Api, clients: Clients, relayer: Relayer
) -> None:
    expired = {"state": TransferState.SIGNED.value, "signature": SIG_OLD, "signatures": [SIG_OLD],
               "lastValidBlockHeight": 0, "transaction": ""}  # fmt: skip
    task = await bought_and_parked(gateway, clients, relayer, "signing-cap", expired)
    signature = await land_transfer(relayer, task.id)
    await finalized(relayer, signature)

    resp = await resolve(gateway, task.id, resolution("mark-completed", signature=signature))

    assert resp.status == 200, await resp.text()
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None
    assert purchase.transfer["signatures"] == [SIG_OLD, signature]
    assert purchase.transfer["signature"] == signature and "transaction" not in purchase.transfer
