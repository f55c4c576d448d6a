"""Deciding a swap bundle's fate from the chain: landed, failed, or not yet known.

The signatures were persisted before the bundle was sent, so the decision
needs nothing but the chain: every signature landed is a landed swap; none
landed once the blockhash expired at finalized means it never can; some landed
and the rest expired (a basket of several transactions that Jito landed in
part) is parked for review with what landed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from solders.signature import Signature
from solders.transaction import VersionedTransaction

from relayq.core.jobs import Task, TaskState
from relayq.relayer.chain.rpc import SignatureState
from relayq.relayer.purchases import Purchase, SwapState
from relayq.relayer.relayer import Relayer


class Verdict(StrEnum):
    LANDED = "landed"
    FAILED = "failed"
    PENDING = "pending"
    # Some transactions of the swap landed and the rest never can: no rule decides this.
    PARTIAL = "partial"


@dataclass(frozen=True)
class SwapCheck:
    verdict: Verdict
    slot: int | None = None
    error: str | None = None
    landed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def _judge(
    sigs: list[Signature], states: list[SignatureState | None], *, expired: bool
) -> SwapCheck:
    """The verdict the statuses allow; `expired`: the blockhash expired at finalized and
    the statuses come from a node that has seen that far, so nothing unknown can land."""
    landed = [(g, s) for g, s in zip(sigs, states, strict=True) if s is not None and s.succeeded]
    failed = [s for s in states if s is not None and not s.succeeded]
    if len(landed) == len(states) and all(s.confirmed for _, s in landed):
        return SwapCheck(Verdict.LANDED, max(s.slot for _, s in landed))
    if landed and len(landed) < len(states) and expired:
        return SwapCheck(
            Verdict.PARTIAL,
            max(s.slot for _, s in landed),
            error=f"{len(landed)} of {len(states)} swap transactions landed",
            landed=tuple(str(g) for g, _ in landed),
            missing=tuple(str(g) for g, s in zip(sigs, states, strict=True) if s is None
                          or not s.succeeded),
        )  # fmt: skip
    every_failed_final = len(failed) == len(states) and all(
        s.confirmation == "finalized" for s in failed
    )
    if not landed and (every_failed_final or expired):
        if failed:
            return SwapCheck(
                Verdict.FAILED, failed[0].slot, f"swap transaction failed: {failed[0].error}"
            )
        return SwapCheck(Verdict.FAILED, error="the swap's blockhash expired before it landed")
    return SwapCheck(Verdict.PENDING)


async def check_swap(relayer: Relayer, purchase: Purchase, *, resend: bool = False) -> SwapCheck:
    """What the chain says of the purchase's swap; with `resend`, send the same bundle again
    while it can still land (a dropped bundle is common; the same bytes run at most once).

    Only the chain decides: the block engine's bundle statuses are not asked (a bundle
    it reports failed may have an earlier or later copy land, the same bytes, since
    every resend carries them under a new bundle id). A failure is a
    verdict at a finalized view: every transaction failed there, or the blockhash
    expired at finalized with none landed, per a status answer from a node at or
    past the slot where expiry was seen.
    """
    swap = purchase.swap
    sigs = [Signature.from_string(s) for s in swap["signatures"]]
    judged = _judge(sigs, await relayer.rpc.statuses(sigs), expired=False)
    if judged.verdict is not Verdict.PENDING:
        return judged
    final = await relayer.rpc.finalized_height()
    if final.height > int(swap["lastValidBlockHeight"]):
        seen_at, states = await relayer.rpc.statuses_seen(sigs)
        if seen_at < final.slot:  # a node behind: its nulls are no evidence
            return SwapCheck(Verdict.PENDING)
        return _judge(sigs, states, expired=True)
    if resend:
        txs = [VersionedTransaction.from_bytes(_b64(t)) for t in swap["transactions"]]
        await relayer.purchases.swap_sent(purchase.id, await relayer.jito.send_bundle(txs))
    return SwapCheck(Verdict.PENDING)


async def record_verdict(relayer: Relayer, purchase: Purchase, check: SwapCheck) -> Purchase:
    """Store a final verdict (once); returns the purchase as stored."""
    if check.verdict is Verdict.PENDING:
        return purchase
    state = {
        Verdict.LANDED: SwapState.LANDED,
        Verdict.FAILED: SwapState.FAILED,
        Verdict.PARTIAL: SwapState.PARTIAL,
    }[check.verdict]
    extra = (
        {"landed": list(check.landed), "missing": list(check.missing)}
        if check.verdict is Verdict.PARTIAL
        else {}
    )
    await relayer.purchases.settle_swap(
        purchase.id, state, slot=check.slot, error=check.error, **extra
    )
    stored = await relayer.purchases.get(purchase.id)
    assert stored is not None
    return stored


PARTIAL_SWAP = "swap-partly-landed"


def partial_swap_details(purchase: Purchase) -> dict[str, Any]:
    swap = purchase.swap
    return {
        "landed": swap.get("landed", []),
        "missing": swap.get("missing", []),
        "slot": swap.get("slot"),
        "error": swap.get("error"),
    }


async def park_partial_swap(relayer: Relayer, task: Task, purchase: Purchase) -> Task | None:
    """Park a held purchase whose swap partly landed: deliver, refund or complete by hand."""
    return await relayer.clients.service.lifecycle.park(
        task, PARTIAL_SWAP, partial_swap_details(purchase), expected=[TaskState.PENDING]
    )


def _b64(text: str) -> bytes:
    return base64.b64decode(text)
