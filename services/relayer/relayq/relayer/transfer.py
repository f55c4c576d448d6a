"""The token transfer to the contract, made exactly-once by protocol (ARCHITECTURE.md, principle 2).

Sign, persist, send. Any later run looks the persisted signature up first:
known and successful is done; unknown while its blockhash is valid is sent
again with the same bytes (the cluster runs a signature at most once); a new
transaction is signed only once the old blockhash has expired at the
finalized view and the old signature is still unknown to a node that has seen
that far, so the old one can never land. Persisting a new signing is a
compare-and-set on the old signature, so two runs cannot both sign and send;
after `transfer_max_signings` signings the task is parked for review. The
relayer refuses to start on an RPC without transaction history (jobs.startup),
where a landed transfer older than the status cache would look unknown.
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
from solders.transaction import VersionedTransaction
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    transfer_checked,
)
from spl.token.models import TransferCheckedParams

from relayq.core.failpoints import failpoint
from relayq.core.jobs import Defer, NeedsReview
from relayq.core.store import now
from relayq.relayer.chain.errors import ChainRejected
from relayq.relayer.chain.metrics import TRANSFERS
from relayq.relayer.chain.rpc import SignatureState
from relayq.relayer.memo import purchase_memo
from relayq.relayer.purchases import Purchase, TransferState
from relayq.relayer.relayer import Relayer
from relayq.relayer.signing import Purpose

POLL_SECONDS = 0.25
# How soon a run that is waiting for a confirmation looks again.
RECHECK_SECONDS = 1.0


def transfer_instructions(relayer: Relayer, purchase: Purchase) -> list[Instruction]:
    """Per leg: make sure the contract's token account exists, then move the bought amount.

    The purchase's memo comes last: two purchases of equal amounts signed
    in the same blockhash window must still be two transactions.
    """
    owner = relayer.signer.pubkey()
    out: list[Instruction] = []
    for leg in purchase.legs:
        mint = Pubkey.from_string(leg.mint)
        out.append(create_idempotent_associated_token_account(owner, relayer.contract_owner, mint))
        out.append(
            transfer_checked(
                TransferCheckedParams(
                    program_id=TOKEN_PROGRAM_ID,
                    source=get_associated_token_address(owner, mint),
                    mint=mint,
                    dest=get_associated_token_address(relayer.contract_owner, mint),
                    owner=owner,
                    amount=leg.amount,
                    decimals=leg.decimals,
                )
            )
        )
    out.append(purchase_memo(purchase.id))
    return out


async def run_transfer(relayer: Relayer, purchase: Purchase) -> dict[str, Any]:
    """Bring the purchase's transfer to confirmed.

    Returns {signature, slot}; raises Defer while waiting on the chain and
    NeedsReview when it cannot go on alone (the transfer failed on chain, the
    relayer is short of tokens): the buyer has paid, so nothing ends `failed`.
    """
    t = purchase.transfer
    if t.get("state") == TransferState.CONFIRMED.value:
        return {"signature": t["signature"], "slot": t.get("slot")}
    delivering = _delivery_ordered(purchase)
    current = t.get("signature")
    if t.get("state") == TransferState.FAILED.value:
        if not delivering:
            # The swap landed: the relayer holds the buyer's tokens. Deliver or refund is
            # an operator's call, never a silent failure.
            raise NeedsReview(
                "transfer-failed", {"signature": t.get("signature"), "error": t.get("error")}
            )
        # It failed at finalized, so it can never land: an operator ordered a new signing.
    elif current is not None:
        sig = Signature.from_string(current)
        done = await _settle_if_known(relayer, purchase, sig)
        if done is not None:
            return done
        # Expiry is decided at `finalized`: a confirmed height can be taken back by a fork.
        final = await relayer.rpc.finalized_height()
        if final.height <= int(t["lastValidBlockHeight"]):
            tx = VersionedTransaction.from_bytes(base64.b64decode(t["transaction"]))
            await _send(relayer, tx)
            TRANSFERS.labels(outcome="resent").inc()
            return await _confirm(relayer, purchase, sig)
        # Expired, so it can no longer land; but it may have landed before. Only a node
        # that has seen the slot where expiry was seen may say it did not.
        seen_at, [state] = await relayer.rpc.statuses_seen([sig])
        if seen_at < final.slot:
            raise Defer(
                RECHECK_SECONDS,
                f"status answer at slot {seen_at} is behind the expiry seen at slot {final.slot}",
            )
        done = await _settle(relayer, purchase, sig, state)
        if done is not None:
            return done
    signings = t.get("signatures", [])
    # A delivery an operator ordered gets a fresh budget of signings.
    ordered = purchase.resolution.get("action") == "deliver"
    spent = len(signings) - (int(purchase.resolution.get("signings", 0)) if ordered else 0)
    if spent >= relayer.chain.transfer_max_signings:
        raise NeedsReview(
            "signing-cap",
            {"signatures": list(signings), "limit": relayer.chain.transfer_max_signings},
        )
    return await _sign_and_send(relayer, purchase, current)


def _delivery_ordered(purchase: Purchase) -> bool:
    """An operator resolved the purchase's parking with `deliver`, against the transfer
    signing on record now (a later signing is this protocol's own again)."""
    r = purchase.resolution
    return r.get("action") == "deliver" and r.get("transferSignature") == purchase.transfer.get(
        "signature"
    )


async def _sign_and_send(
    relayer: Relayer, purchase: Purchase, previous: str | None
) -> dict[str, Any]:
    await _check_funds(relayer, purchase)
    blockhash = await relayer.rpc.latest_blockhash()
    tx = await relayer.sign(
        transfer_instructions(relayer, purchase), blockhash.value, purpose=Purpose.TRANSFER
    )
    sig = tx.signatures[0]
    failpoint("transfer.after_sign")
    signed = {
        "state": TransferState.SIGNED.value,
        "transaction": base64.b64encode(bytes(tx)).decode(),
        "signature": str(sig),
        "lastValidBlockHeight": blockhash.last_valid_block_height,
        "signatures": [*purchase.transfer.get("signatures", []), str(sig)],
        "signedAt": now(),
    }
    if not await relayer.purchases.put_transfer(purchase.id, previous, signed):
        raise Defer(POLL_SECONDS, "another run signed this transfer; looking it up")
    purchase = replace(purchase, transfer=signed)
    if previous is not None:
        TRANSFERS.labels(outcome="resigned").inc()
    failpoint("transfer.after_persist")
    await _send(relayer, tx)
    TRANSFERS.labels(outcome="sent").inc()
    failpoint("transfer.after_send")
    return await _confirm(relayer, purchase, sig)


async def _send(relayer: Relayer, tx: VersionedTransaction) -> None:
    # Already processed, or refused: either way the lookup decides, never this answer.
    with contextlib.suppress(ChainRejected):
        await relayer.rpc.send(tx)


async def _check_funds(relayer: Relayer, purchase: Purchase) -> None:
    owner = relayer.signer.pubkey()
    for leg in purchase.legs:
        held = await relayer.rpc.token_balance(
            get_associated_token_address(owner, Pubkey.from_string(leg.mint))
        )
        if held < leg.amount:
            # Nothing was signed; the swap landed, so the buyer has paid: an operator decides.
            raise NeedsReview(
                "relayer-short-of-tokens",
                {"mint": leg.mint, "held": held, "needed": leg.amount,
                 "error": f"relayer holds {held} base units of {leg.symbol}, "
                          f"the transfer needs {leg.amount}"},
            )  # fmt: skip


async def _settle_if_known(
    relayer: Relayer, purchase: Purchase, sig: Signature
) -> dict[str, Any] | None:
    [state] = await relayer.rpc.statuses([sig])
    return await _settle(relayer, purchase, sig, state)


async def _settle(
    relayer: Relayer, purchase: Purchase, sig: Signature, state: SignatureState | None
) -> dict[str, Any] | None:
    if state is None:
        return None
    if not state.succeeded:
        if state.confirmation != "finalized":
            # Only the chain at a finalized view decides a failure.
            raise Defer(RECHECK_SECONDS, f"transfer {sig} failed, waiting for finality")
        error = f"transfer {sig} failed on chain: {state.error}"
        stored = await relayer.purchases.settle_transfer(
            purchase.id, purchase.transfer, TransferState.FAILED, slot=state.slot, error=error
        )
        if stored is None:
            return await _superseded(relayer, purchase)
        TRANSFERS.labels(outcome="failed").inc()
        raise NeedsReview("transfer-failed", {"signature": str(sig), "error": error})
    if not state.confirmed:
        raise Defer(POLL_SECONDS, "transfer processed, waiting for confirmation")
    stored = await relayer.purchases.settle_transfer(
        purchase.id, purchase.transfer, TransferState.CONFIRMED, slot=state.slot,
        confirmedAt=now(),
    )  # fmt: skip
    if stored is None:
        return await _superseded(relayer, purchase)
    TRANSFERS.labels(outcome="confirmed").inc()
    return {"signature": str(sig), "slot": state.slot}


async def _superseded(relayer: Relayer, purchase: Purchase) -> dict[str, Any]:
    """Another run changed the transfer since this one read it: its record stands."""
    stored = await relayer.purchases.get(purchase.id)
    t = {} if stored is None else stored.transfer
    if t.get("state") == TransferState.CONFIRMED.value:
        return {"signature": t["signature"], "slot": t.get("slot")}
    raise Defer(POLL_SECONDS, "another run changed this transfer; looking it up again")


async def _confirm(relayer: Relayer, purchase: Purchase, sig: Signature) -> dict[str, Any]:
    deadline = time.monotonic() + relayer.chain.confirm_wait_seconds
    while True:
        [state] = await relayer.rpc.statuses([sig])
        if state is not None and (state.confirmed or not state.succeeded):
            done = await _settle(relayer, purchase, sig, state)
            assert done is not None
            return done
        if time.monotonic() >= deadline:
            raise Defer(RECHECK_SECONDS, f"transfer {sig} not confirmed yet")
        await asyncio.sleep(POLL_SECONDS)
