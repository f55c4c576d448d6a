"""Resolving parked purchases: an operator's decision, recorded on the purchase, then acted on.

A purchase is parked (`needs_review`) when no rule may decide alone: its
transfer failed on chain, its signings reached the cap, its swap landed in
part, the relayer was short of tokens, its workers kept dying. An operator
reads what landed and resolves the parking once, with a reason:

- `deliver`: the task is released (JobService.release_review) and the transfer
  runs by the same exactly-once protocol; a transfer that failed at finalized
  is signed anew, and the signing cap starts over.
- `mark-completed`: a landed transfer signature is the evidence; it is read at
  finalized and must have succeeded, carry the purchase's memo and credit the
  contract with exactly the recorded amounts. The purchase's transfer becomes
  that signature, the task completes (Lifecycle.resolve), and the records
  update runs as after any transfer.
- `refund`: the purchase's lamports go back to the buyer's wallet. Refused once
  the tokens were delivered (the transfer landed) and while a recorded transfer
  can still land. The decision writes the refund on the purchase (from then on
  the transfer is never signed again, and `deliver` and `mark-completed` are
  refused), the task is released, and its handler runs the refund by the
  transfer's protocol (`refund.py`); the task completes with `outcome:
  refunded`. A refund parked again (signing cap, failed at finalized, the
  relayer short of SOL) is resolved with `refund` again, with a fresh budget.

Each resolution is a compare-and-set on the parking it answers
(PurchaseStore.resolve), so two operators cannot both act on one parking; a
resolution interrupted after it was recorded is finished by asking again.
"""

from __future__ import annotations

from typing import Any, Literal

from pymongo.errors import DuplicateKeyError
from solders.pubkey import Pubkey
from solders.signature import Signature
from spl.token.instructions import get_associated_token_address

from relayq.core.jobs import InvalidTaskState, Task, TaskState
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.store import now
from relayq.relayer.buy import DB_UPDATE, TOKEN_TRANSFER
from relayq.relayer.chain.metrics import REFUNDS
from relayq.relayer.memo import PREFIX
from relayq.relayer.purchases import Purchase, RefundState, SwapState, TransferState
from relayq.relayer.relayer import Relayer
from relayq.relayer.views import purchase_view

Action = Literal["deliver", "mark-completed", "refund"]
DELIVER: Action = "deliver"
MARK_COMPLETED: Action = "mark-completed"
REFUND: Action = "refund"


class ResolutionRefused(Exception):
    """The resolution was not made; `status` and `code` name why for the gateway."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


async def parked_purchases(
    relayer: Relayer, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of parked purchases, newest first: each task with its purchase record."""
    page = await relayer.clients.service.list_tasks(
        state=TaskState.NEEDS_REVIEW, type_=TOKEN_TRANSFER, limit=limit, cursor=cursor
    )
    records = await relayer.purchases.get_many([t.id for t in page.tasks])
    items = [
        {
            "task": task.to_public(),
            "purchase": records[task.id].to_public() if task.id in records else None,
        }
        for task in page.tasks
    ]
    return items, page.next_cursor


async def parked_purchase(relayer: Relayer, purchase_id: str) -> dict[str, Any]:
    """One purchase's task and record, with what the chain says of each signature now."""
    task = await relayer.clients.service.get(purchase_id)
    if task is None or task.type != TOKEN_TRANSFER:
        raise ResolutionRefused(404, "purchase-not-found", f"no purchase {purchase_id}")
    return {"task": task.to_public(), "purchase": await purchase_view(relayer, task)}


async def _parked(relayer: Relayer, purchase_id: str) -> tuple[Task, Purchase]:
    task = await relayer.clients.service.get(purchase_id)
    purchase = await relayer.purchases.get(purchase_id)
    if task is None or task.type != TOKEN_TRANSFER or purchase is None:
        raise ResolutionRefused(404, "purchase-not-found", f"no purchase {purchase_id}")
    if task.state is not TaskState.NEEDS_REVIEW or task.review is None:
        raise ResolutionRefused(
            409, "purchase-not-parked", f"the purchase's task is {task.state.value}, not parked"
        )
    return task, purchase


def _no_refund(purchase: Purchase) -> None:
    """Nothing is delivered once a refund was decided: both would reach the buyer."""
    if purchase.refund:
        raise ResolutionRefused(
            409, "refund-decided",
            f"a refund of this purchase was decided (refund {purchase.refund.get('state')}): "
            "its tokens are not delivered; resolve with refund",
        )  # fmt: skip


def _unresolved(task: Task, purchase: Purchase, action: Action) -> bool:
    """Whether this parking awaits a decision; False when `action` was recorded for it
    already (the call that recorded it did not finish); refused for another action."""
    assert task.review is not None
    r = purchase.resolution
    if r.get("parkedAt") != task.review["parkedAt"]:
        return True
    if r.get("action") == action:
        return False
    raise ResolutionRefused(
        409, "purchase-already-resolved",
        f"this parking was resolved with {r.get('action')!r} by {r.get('operator')}",
    )  # fmt: skip


async def _record(
    relayer: Relayer, task: Task, purchase: Purchase, action: Action, reason: str,
    operator: str, **extra: Any,
) -> Purchase:  # fmt: skip
    """Record the decision on this parking; a retry of the same decision goes on."""
    assert task.review is not None
    parked_at = task.review["parkedAt"]
    if not _unresolved(task, purchase, action):
        return purchase  # recorded by an earlier call that did not finish
    resolution = {
        "action": action, "reason": reason, "operator": operator, "at": now(),
        "parkedAt": parked_at, "parkReason": task.review.get("reason"), **extra,
    }  # fmt: skip
    stored = await relayer.purchases.resolve(purchase.id, resolution)
    if stored is None:
        raise ResolutionRefused(
            409, "purchase-already-resolved", "another operator resolved this parking first"
        )
    return stored


async def deliver(relayer: Relayer, purchase_id: str, reason: str, operator: str) -> Task:
    """Release a parked purchase so its transfer runs, exactly once, by the usual protocol."""
    task, purchase = await _parked(relayer, purchase_id)
    _no_refund(purchase)
    _unresolved(task, purchase, DELIVER)
    if purchase.swap.get("state") != SwapState.LANDED.value:
        raise ResolutionRefused(
            409, "purchase-not-deliverable",
            f"the swap is {purchase.swap.get('state')}, not landed: the recorded tokens "
            "were not all bought",
        )  # fmt: skip
    transfer = purchase.transfer
    await _record(
        relayer, task, purchase, DELIVER, reason, operator,
        transferSignature=transfer.get("signature"),
        signings=len(transfer.get("signatures", [])),
    )  # fmt: skip
    try:
        return await relayer.clients.service.release_review(purchase_id, f"deliver: {reason}")
    except InvalidTaskState as exc:
        raise ResolutionRefused(409, "purchase-not-parked", str(exc)) from None


async def mark_completed(
    relayer: Relayer, purchase_id: str, signature: str, reason: str, operator: str
) -> Task:
    """Complete a parked purchase whose transfer landed, on the chain's word at finalized."""
    task, purchase = await _parked(relayer, purchase_id)
    _no_refund(purchase)
    _unresolved(task, purchase, MARK_COMPLETED)
    try:
        sig = Signature.from_string(signature)
    except ValueError:
        raise ResolutionRefused(422, "evidence-refused", "not a transaction signature") from None
    slot = await _verify(relayer, purchase, sig)
    await _no_other_transfer_can_land(relayer, purchase, signature)
    await _record(
        relayer, task, purchase, MARK_COMPLETED, reason, operator, transferSignature=signature
    )
    t = purchase.transfer
    if not (t.get("signature") == signature and t.get("state") == TransferState.CONFIRMED.value):
        try:
            stored = await relayer.purchases.confirm_by_evidence(purchase.id, t, signature, slot)
        except DuplicateKeyError:
            raise ResolutionRefused(
                422, "evidence-refused", f"{signature} is another purchase's transfer"
            ) from None
        if stored is None:
            raise ResolutionRefused(
                409, "purchase-changed", "the purchase's transfer changed meanwhile; look again"
            )
    result = {"transferSignature": signature, "slot": slot, "resolution": MARK_COMPLETED}
    done = await relayer.clients.service.lifecycle.resolve(
        task, result, resolution=MARK_COMPLETED, reason=reason
    )
    if done is None:
        raise ResolutionRefused(409, "purchase-not-parked", "the task changed meanwhile")
    await relayer.clients.service.submit(
        JobRequest(
            type=DB_UPDATE, payload={"purchaseId": purchase.id}, priority=Priority.MEDIUM,
            idempotency_key=f"{DB_UPDATE}:{purchase.id}",
        )
    )  # fmt: skip
    return done


async def refund(relayer: Relayer, purchase_id: str, reason: str, operator: str) -> Task:
    """Decide a refund of a parked purchase's lamports, then release it so the refund runs."""
    task, purchase = await _parked(relayer, purchase_id)
    if _unresolved(task, purchase, REFUND):
        if not purchase.refund:
            await _refundable(relayer, purchase)
        await _decide_refund(relayer, task, purchase, reason, operator)
    try:
        return await relayer.clients.service.release_review(purchase_id, f"refund: {reason}")
    except InvalidTaskState as exc:
        raise ResolutionRefused(409, "purchase-not-parked", str(exc)) from None


async def _refundable(relayer: Relayer, purchase: Purchase) -> None:
    """A first refund needs a decided swap and a transfer that did not land and never can."""
    if purchase.swap.get("state") == SwapState.SIGNED.value:
        raise ResolutionRefused(
            409, "swap-undecided", "the swap can still land; resolve once it is decided"
        )
    t = purchase.transfer
    current = t.get("signature")
    if t.get("state") == TransferState.CONFIRMED.value:
        raise ResolutionRefused(
            409, "purchase-delivered", f"the purchase's tokens were delivered by {current}"
        )
    if current is None or t.get("state") != TransferState.SIGNED.value:
        return  # never signed, or failed at finalized: nothing of it can land
    sig = Signature.from_string(current)
    [state] = await relayer.rpc.statuses([sig])
    if state is not None and state.succeeded:
        raise ResolutionRefused(
            409, "purchase-delivered",
            f"the recorded transfer {current} landed: the tokens were delivered; "
            "resolve with mark-completed",
        )  # fmt: skip
    if state is None or state.confirmation != "finalized":
        # Unknown, or failed on a view a fork can take back: it must be past landing.
        await _no_other_transfer_can_land(relayer, purchase, evidence="")


async def _decide_refund(
    relayer: Relayer, task: Task, purchase: Purchase, reason: str, operator: str
) -> Purchase:
    """Record the refund decision on this parking (compare-and-set on the parking, the
    transfer as checked and the refund as read)."""
    assert task.review is not None
    parked_at = task.review["parkedAt"]
    r = purchase.refund
    resolution = {
        "action": REFUND, "reason": reason, "operator": operator, "at": now(),
        "parkedAt": parked_at, "parkReason": task.review.get("reason"),
        "transferSignature": purchase.transfer.get("signature"),
        "refundSignature": r.get("signature"), "signings": len(r.get("signatures", [])),
    }  # fmt: skip
    if r.get("state") == RefundState.FINALIZED.value:
        raise ResolutionRefused(409, "purchase-changed", "the refund landed already")
    stored = await relayer.purchases.decide_refund(purchase, resolution)
    if stored is not None:
        REFUNDS.labels(outcome="decided").inc()
        return stored
    now_ = await relayer.purchases.get(purchase.id)
    if now_ is not None and now_.resolution.get("parkedAt") == parked_at:
        raise ResolutionRefused(
            409, "purchase-already-resolved",
            f"another operator resolved this parking first "
            f"({now_.resolution.get('action')!r} by {now_.resolution.get('operator')})",
        )  # fmt: skip
    raise ResolutionRefused(
        409, "purchase-changed", "the purchase's transfer or refund changed meanwhile; look again"
    )


async def _verify(relayer: Relayer, purchase: Purchase, sig: Signature) -> int:
    """The evidence's slot, once the finalized chain shows it moved this purchase's tokens."""
    landed = await relayer.rpc.transaction(sig, finalized=True)
    if landed is None:
        raise ResolutionRefused(422, "evidence-refused", f"{sig} is not on chain at finalized")
    if not landed.succeeded:
        raise ResolutionRefused(422, "evidence-refused", f"{sig} failed on chain")
    if PREFIX + purchase.id not in landed.memos:
        raise ResolutionRefused(
            422, "evidence-refused", f"{sig} does not carry this purchase's memo"
        )
    for leg in purchase.legs:
        account = get_associated_token_address(relayer.contract_owner, Pubkey.from_string(leg.mint))
        delta = landed.token_deltas.get(account)
        moved = 0 if delta is None else delta.amount
        if moved != leg.amount:
            raise ResolutionRefused(
                422, "evidence-refused",
                f"{sig} credited the contract {moved} base units of {leg.symbol}, "
                f"the purchase records {leg.amount}",
            )  # fmt: skip
    return landed.slot


async def _no_other_transfer_can_land(relayer: Relayer, purchase: Purchase, evidence: str) -> None:
    """A recorded signing other than the evidence must be past landing, or both would count."""
    t = purchase.transfer
    current = t.get("signature")
    if current is None or current == evidence or t.get("state") != TransferState.SIGNED.value:
        return
    final = await relayer.rpc.finalized_height()
    if final.height <= int(t["lastValidBlockHeight"]):
        raise ResolutionRefused(
            409, "transfer-may-land",
            f"the recorded transfer {current} can still land until block height "
            f"{t['lastValidBlockHeight']}; resolve after it has expired",
        )  # fmt: skip
    # As in the transfer protocol: only a node that has seen the expiry may say it never landed.
    seen_at, [state] = await relayer.rpc.statuses_seen([Signature.from_string(current)])
    if seen_at < final.slot:
        raise ResolutionRefused(
            409,
            "transfer-may-land",
            f"the chain's answer on {current} is behind its expiry; try again shortly",
        )
    if state is not None and state.succeeded:
        raise ResolutionRefused(
            409, "purchase-changed", f"the recorded transfer {current} landed: give it as evidence"
        )
