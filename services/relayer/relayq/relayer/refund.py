"""A purchase's lamports back to its buyer, once, by the transfer's protocol.

An operator decides a refund on a parked purchase (`review.refund`); the
purchase's task is released and its handler runs this instead of the token
transfer. One SOL transfer of the purchase's lamports, from the relayer to the
buyer's wallet, with a memo naming the purchase as refunded
(`relayq:refund:<id>`), signed under the signer's `refund` purpose:

sign, persist (signature, bytes, last valid block height, compare-and-set on
the previous signature), send. Any later run looks the persisted signature up
first: landed is settled only once the chain's finalized view shows it
(success or failure); unknown while its blockhash is valid is sent again with
the same bytes; a new signing only once the blockhash expired at the finalized
view and a node that has seen that far still does not know the signature.
After `transfer_max_signings` signings the task is parked again; a refund that
failed at finalized is parked, and signed anew only when an operator orders
the refund again. The transfer is never signed once a refund was decided
(`PurchaseStore.put_transfer`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from dataclasses import replace
from typing import Any

from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from relayq.core.failpoints import failpoint
from relayq.core.jobs import Defer, NeedsReview
from relayq.core.store import now
from relayq.relayer.buy import LAMPORTS_PER_SIGNATURE
from relayq.relayer.chain.errors import ChainRejected
from relayq.relayer.chain.metrics import REFUNDS
from relayq.relayer.chain.rpc import SignatureState
from relayq.relayer.memo import refund_memo
from relayq.relayer.purchases import Purchase, RefundState
from relayq.relayer.relayer import Relayer
from relayq.relayer.signing import Purpose
from relayq.relayer.transfer import POLL_SECONDS, RECHECK_SECONDS

REFUND = "refund"
# Why a refund parks its task again.
REFUND_FAILED = "refund-failed"
REFUND_SIGNING_CAP = "refund-signing-cap"
SHORT_OF_SOL = "relayer-short-of-sol"


def refund_instructions(relayer: Relayer, purchase: Purchase) -> list[Instruction]:
    """The purchase's lamports from the relayer to the buyer's wallet, then the refund memo."""
    return [
        transfer(
            TransferParams(
                from_pubkey=relayer.signer.pubkey(),
                to_pubkey=Pubkey.from_string(_wallet(purchase)),
                lamports=_lamports(purchase),
            )
        ),
        refund_memo(purchase.id),
    ]


def refund_ordered(purchase: Purchase) -> bool:
    """An operator's refund decision stands against the refund signing on record now."""
    r = purchase.resolution
    return r.get("action") == REFUND and r.get("refundSignature") == purchase.refund.get(
        "signature"
    )


async def run_refund(relayer: Relayer, purchase: Purchase) -> dict[str, Any]:
    """Bring the purchase's refund to finalized; returns {signature, slot, lamports}.

    Raises Defer while waiting on the chain and NeedsReview when it cannot go on
    alone (the refund failed at finalized, the signing cap, the relayer short of SOL).
    """
    r = purchase.refund
    if r.get("state") == RefundState.FINALIZED.value:
        return _done(purchase, r["signature"], r.get("slot"))
    current = r.get("signature")
    if r.get("state") == RefundState.FAILED.value:
        if not refund_ordered(purchase):
            REFUNDS.labels(outcome="parked").inc()
            raise NeedsReview(REFUND_FAILED, {"signature": current, "error": r.get("error")})
        # It failed at finalized, so it can never land: the operator ordered a new signing.
    elif current is not None:
        sig = Signature.from_string(current)
        [state] = await relayer.rpc.statuses([sig])
        done = await _settle(relayer, purchase, sig, state)
        if done is not None:
            return done
        final = await relayer.rpc.finalized_height()
        if final.height <= int(r["lastValidBlockHeight"]):
            tx = VersionedTransaction.from_bytes(base64.b64decode(r["transaction"]))
            await _send(relayer, tx)
            REFUNDS.labels(outcome="resent").inc()
            return await _finalize(relayer, purchase, sig)
        # Expired at finalized; only a node that has seen that far may say it never landed.
        seen_at, [state] = await relayer.rpc.statuses_seen([sig])
        if seen_at < final.slot:
            raise Defer(
                RECHECK_SECONDS,
                f"status answer at slot {seen_at} is behind the expiry seen at slot {final.slot}",
            )
        done = await _settle(relayer, purchase, sig, state)
        if done is not None:
            return done
    signings = r.get("signatures", [])
    ordered = purchase.resolution.get("action") == REFUND
    spent = len(signings) - (int(purchase.resolution.get("signings", 0)) if ordered else 0)
    if spent >= relayer.chain.transfer_max_signings:
        REFUNDS.labels(outcome="parked").inc()
        raise NeedsReview(
            REFUND_SIGNING_CAP,
            {"signatures": list(signings), "limit": relayer.chain.transfer_max_signings},
        )
    return await _sign_and_send(relayer, purchase, current)


async def _sign_and_send(
    relayer: Relayer, purchase: Purchase, previous: str | None
) -> dict[str, Any]:
    await _check_funds(relayer, purchase)
    blockhash = await relayer.rpc.latest_blockhash()
    tx = await relayer.sign(
        refund_instructions(relayer, purchase), blockhash.value, purpose=Purpose.REFUND,
        refund_to=Pubkey.from_string(_wallet(purchase)),
    )  # fmt: skip
    sig = tx.signatures[0]
    failpoint("refund.after_sign")
    kept = {k: v for k, v in purchase.refund.items() if k not in ("error", "slot")}
    signed = {
        **kept,
        "state": RefundState.SIGNED.value,
        "transaction": base64.b64encode(bytes(tx)).decode(),
        "signature": str(sig),
        "lastValidBlockHeight": blockhash.last_valid_block_height,
        "signatures": [*purchase.refund.get("signatures", []), str(sig)],
        "signedAt": now(),
    }
    if not await relayer.purchases.put_refund(purchase.id, previous, signed):
        raise Defer(POLL_SECONDS, "another run signed this refund; looking it up")
    purchase = replace(purchase, refund=signed)
    if previous is not None:
        REFUNDS.labels(outcome="resigned").inc()
    failpoint("refund.after_persist")
    await _send(relayer, tx)
    REFUNDS.labels(outcome="sent").inc()
    failpoint("refund.after_send")
    return await _finalize(relayer, purchase, sig)


async def _send(relayer: Relayer, tx: VersionedTransaction) -> None:
    # Already processed, or refused: either way the lookup decides, never this answer.
    with contextlib.suppress(ChainRejected):
        await relayer.rpc.send(tx)


async def _check_funds(relayer: Relayer, purchase: Purchase) -> None:
    held = await relayer.rpc.balance(relayer.signer.pubkey())
    needed = _lamports(purchase) + LAMPORTS_PER_SIGNATURE
    if held < needed:
        REFUNDS.labels(outcome="parked").inc()
        raise NeedsReview(
            SHORT_OF_SOL,
            {"held": held, "needed": needed,
             "error": f"the relayer holds {held} lamports, the refund needs {needed}"},
        )  # fmt: skip


async def _settle(
    relayer: Relayer, purchase: Purchase, sig: Signature, state: SignatureState | None
) -> dict[str, Any] | None:
    """Record a finalized verdict on the signing; None when the chain does not know it."""
    if state is None:
        return None
    if state.confirmation != "finalized":
        raise Defer(RECHECK_SECONDS, f"refund {sig} is {state.confirmation}, not finalized yet")
    if not state.succeeded:
        error = f"refund {sig} failed on chain: {state.error}"
        stored = await relayer.purchases.settle_refund(
            purchase.id, purchase.refund, RefundState.FAILED, slot=state.slot, error=error
        )
        if stored is None:
            return await _superseded(relayer, purchase)
        REFUNDS.labels(outcome="failed").inc()
        REFUNDS.labels(outcome="parked").inc()
        raise NeedsReview(REFUND_FAILED, {"signature": str(sig), "error": error})
    stored = await relayer.purchases.settle_refund(
        purchase.id, purchase.refund, RefundState.FINALIZED, slot=state.slot, finalizedAt=now()
    )
    if stored is None:
        return await _superseded(relayer, purchase)
    REFUNDS.labels(outcome="refunded").inc()
    return _done(purchase, str(sig), state.slot)


async def _superseded(relayer: Relayer, purchase: Purchase) -> dict[str, Any]:
    """Another run changed the refund since this one read it: its record stands."""
    stored = await relayer.purchases.get(purchase.id)
    r = {} if stored is None else stored.refund
    if stored is not None and r.get("state") == RefundState.FINALIZED.value:
        return _done(stored, r["signature"], r.get("slot"))
    raise Defer(POLL_SECONDS, "another run changed this refund; looking it up again")


async def _finalize(relayer: Relayer, purchase: Purchase, sig: Signature) -> dict[str, Any]:
    """Wait a bounded time for the chain's finalized verdict on the signing just sent."""
    deadline = time.monotonic() + relayer.chain.confirm_wait_seconds
    while True:
        [state] = await relayer.rpc.statuses([sig])
        if state is not None and state.confirmation == "finalized":
            done = await _settle(relayer, purchase, sig, state)
            assert done is not None
            return done
        if time.monotonic() >= deadline:
            raise Defer(RECHECK_SECONDS, f"refund {sig} not finalized yet")
        await asyncio.sleep(POLL_SECONDS)


def _done(purchase: Purchase, signature: str, slot: int | None) -> dict[str, Any]:
    return {"signature": signature, "slot": slot, "lamports": _lamports(purchase)}


def _lamports(purchase: Purchase) -> int:
    return int(purchase.refund.get("lamports", purchase.lamports))


def _wallet(purchase: Purchase) -> str:
    return str(purchase.refund.get("wallet", purchase.wallet))
