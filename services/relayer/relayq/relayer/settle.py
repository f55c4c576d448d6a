"""Deciding a swap bundle's fate from the chain: landed, failed, or not yet known.

The signatures were persisted before the bundle was sent, so the decision
needs nothing but the chain: a signature the cluster knows has landed (or
failed); none known after the blockhash expired means the bundle can never land.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum

from solders.signature import Signature
from solders.transaction import VersionedTransaction

from relayq.relayer.chain.rpc import SignatureState
from relayq.relayer.purchases import Purchase, SwapState
from relayq.relayer.relayer import Relayer


class Verdict(StrEnum):
    LANDED = "landed"
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True)
class SwapCheck:
    verdict: Verdict
    slot: int | None = None
    error: str | None = None


def _judge(states: list[SignatureState | None]) -> SwapCheck | None:
    known = [s for s in states if s is not None]
    if not known:
        return None
    failed = [s for s in known if not s.succeeded]
    if failed:
        return SwapCheck(
            Verdict.FAILED, failed[0].slot, f"swap transaction failed: {failed[0].error}"
        )
    if len(known) == len(states) and all(s.confirmed for s in known):
        return SwapCheck(Verdict.LANDED, max(s.slot for s in known))
    return SwapCheck(Verdict.PENDING)


async def check_swap(relayer: Relayer, purchase: Purchase, *, resend: bool = False) -> SwapCheck:
    """What the chain says of the purchase's swap; with `resend`, send the same bundle again
    while it can still land (a dropped bundle is common; the same bytes run at most once)."""
    swap = purchase.swap
    sigs = [Signature.from_string(s) for s in swap["signatures"]]
    judged = _judge(await relayer.rpc.statuses(sigs))
    if judged is not None:
        return judged
    bundle_id = swap.get("bundleId")
    if bundle_id:
        found = await relayer.jito.inflight_statuses([bundle_id])
        if found and found[0].status == "Failed":
            return SwapCheck(Verdict.FAILED, error="the block engine reports the bundle failed")
    if await relayer.rpc.block_height() > int(swap["lastValidBlockHeight"]):
        # It may have landed between the two reads; after expiry nothing new can land.
        judged = _judge(await relayer.rpc.statuses(sigs))
        if judged is not None:
            return judged
        return SwapCheck(Verdict.FAILED, error="the swap's blockhash expired before it landed")
    if resend:
        txs = [VersionedTransaction.from_bytes(_b64(t)) for t in swap["transactions"]]
        await relayer.purchases.swap_sent(purchase.id, await relayer.jito.send_bundle(txs))
    return SwapCheck(Verdict.PENDING)


async def record_verdict(relayer: Relayer, purchase: Purchase, check: SwapCheck) -> Purchase:
    """Store a final verdict (once); returns the purchase as stored."""
    if check.verdict is Verdict.PENDING:
        return purchase
    state = SwapState.LANDED if check.verdict is Verdict.LANDED else SwapState.FAILED
    await relayer.purchases.settle_swap(purchase.id, state, slot=check.slot, error=check.error)
    stored = await relayer.purchases.get(purchase.id)
    assert stored is not None
    return stored


def _b64(text: str) -> bytes:
    return base64.b64decode(text)
