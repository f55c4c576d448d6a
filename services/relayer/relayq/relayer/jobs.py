"""The relayer's job module: swap_settle, token_transfer and db_update.

Name it in RELAYQ_JOB_MODULES (`relayq.relayer.jobs`). The job types are
internal: created by the purchase route and by each other, never submitted by
clients, and crash-safe: each finishes or stops safely whatever crashed it, so
past a delivery or attempt limit its task is parked for review, never failed
(once a swap has landed, a purchase ends `completed` or `needs_review`).
`startup` opens the process's Relayer from the chain settings
(RELAYQ_SOLANA_RPC_URL and the rest, or a ChainSettings seeded into the
context under CHAIN_SETTINGS) and handlers reach it through their context;
`shutdown` closes it. The gateway mounts `ROUTES` (buy tokens, list bundles).
"""

from __future__ import annotations

import logging
from typing import Any

from relayq.core.jobs import (
    Defer,
    InvalidPayload,
    JobContext,
    JobType,
    NeedsReview,
    PermanentError,
    Task,
    TaskState,
)
from relayq.core.modules import ProcessContext
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.telemetry import log_event
from relayq.relayer.buy import DB_UPDATE, SWAP_SETTLE, TOKEN_TRANSFER
from relayq.relayer.chain.errors import ChainError
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.purchases import Purchase, SwapState
from relayq.relayer.refund import run_refund
from relayq.relayer.relayer import Relayer, open_relayer
from relayq.relayer.settle import (
    PARTIAL_SWAP,
    Verdict,
    check_swap,
    park_partial_swap,
    partial_swap_details,
    record_verdict,
)
from relayq.relayer.transfer import run_transfer

ROUTES = "relayq.relayer.routes"
# Keys of what this module keeps in the process context.
CHAIN_SETTINGS = "relayer.chain_settings"
RELAYER = "relayer"
_OWNED = "relayer.owned"
# How soon an unsettled swap is looked at again (slots are ~0.4 s).
SETTLE_RECHECK_SECONDS = 1.0

log = logging.getLogger("relayq.relayer")


async def startup(ctx: ProcessContext) -> None:
    """Open the relayer (unless one was seeded) and its records' indexes."""
    if RELAYER not in ctx.state:
        chain: ChainSettings = ctx.state.get(CHAIN_SETTINGS) or ChainSettings.from_env()
        if not chain.configured:
            log_event(log, logging.WARNING, "relayer not configured: its jobs and routes refuse")
            return
        ctx.state[RELAYER] = await open_relayer(chain, ctx.clients)
        ctx.state[_OWNED] = True
    relayer: Relayer = ctx.state[RELAYER]
    await _require_history(ctx, relayer)
    await relayer.purchases.ensure_indexes()


class RpcWithoutHistory(RuntimeError):
    """The RPC keeps no transaction history: the relayer cannot run on it safely."""


async def _require_history(ctx: ProcessContext, relayer: Relayer) -> None:
    """Refuse to start on an RPC that cannot find old transactions.

    Such a node reports a landed transfer older than its status cache as unknown,
    and the transfer would be signed (and land) again.
    """
    try:
        keeps = await relayer.rpc.keeps_history()
    except ChainError as exc:
        await shutdown(ctx)
        raise RpcWithoutHistory(
            f"cannot tell whether the Solana RPC at {relayer.rpc.url} keeps transaction "
            f"history ({exc}); the relayer does not start without knowing"
        ) from exc
    if not keeps:
        await shutdown(ctx)
        raise RpcWithoutHistory(
            f"the Solana RPC at {relayer.rpc.url} keeps no transaction history "
            "(getSignatureStatuses with searchTransactionHistory answers -32011): the relayer "
            "refuses to start, since a landed transfer would look unknown and be sent again; "
            "point RELAYQ_SOLANA_RPC_URL at a node with --enable-rpc-transaction-history"
        )


async def shutdown(ctx: ProcessContext) -> None:
    if ctx.state.pop(_OWNED, False):
        await ctx.state.pop(RELAYER).close()


def relayer_in(ctx: ProcessContext | None) -> Relayer | None:
    """The process's relayer; None when it is not configured here."""
    relayer: Relayer | None = None if ctx is None else ctx.state.get(RELAYER)
    return relayer


class RelayerMissing(RuntimeError):
    """This process has no relayer: retried (another worker may have one), parked past
    the attempts; never a dead letter, since the purchase may already be paid for."""


def _relayer(ctx: JobContext) -> Relayer:
    relayer = relayer_in(ctx.process)
    if relayer is None:
        raise RelayerMissing("the relayer is not configured in this process")
    return relayer


async def task_view(task: Task, ctx: ProcessContext) -> dict[str, Any] | None:
    """A token_transfer task shows its purchase and what the chain says of it now."""
    if task.type != TOKEN_TRANSFER:
        return None
    from relayq.relayer.views import purchase_view

    return {"purchase": await purchase_view(relayer_in(ctx), task)}


async def _purchase(relayer: Relayer, purchase_id: str) -> Purchase:
    purchase = await relayer.purchases.get(purchase_id)
    if purchase is None:
        raise PermanentError(f"no purchase record {purchase_id}: its swap was never sent")
    return purchase


async def _settled(relayer: Relayer, purchase: Purchase) -> Purchase:
    """The purchase with its swap decided; Defer while the chain cannot tell yet."""
    if purchase.swap.get("state") != SwapState.SIGNED.value:
        return purchase
    check = await check_swap(relayer, purchase, resend=True)
    if check.verdict is Verdict.PENDING:
        raise Defer(SETTLE_RECHECK_SECONDS, "swap bundle not settled yet")
    return await record_verdict(relayer, purchase, check)


async def swap_settle(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Decide a swap the purchase request could not wait for, then release or fail its task."""
    relayer = _relayer(ctx)
    purchase = await _settled(relayer, await _purchase(relayer, payload["purchaseId"]))
    service = relayer.clients.service
    task = await service.get(purchase.id)
    if task is None or task.state is not TaskState.PENDING:
        return {"swap": purchase.swap["state"], "task": None if task is None else task.state.value}
    if purchase.swap["state"] == SwapState.LANDED.value:
        await service.dispatch_pending([task])
    elif purchase.swap["state"] == SwapState.PARTIAL.value:
        await park_partial_swap(relayer, task, purchase)
    else:
        await service.lifecycle.dead_letter(
            task.id, type_=task.type, priority=task.priority,
            error=str(purchase.swap.get("error") or "swap failed"), reason="refused",
            expected=[TaskState.PENDING],
        )  # fmt: skip
    return {"swap": purchase.swap["state"]}


async def token_transfer(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Move the bought tokens to the contract, exactly once, then queue the records update;
    or, once an operator decided a refund, return the purchase's lamports to the buyer."""
    relayer = _relayer(ctx)
    purchase = await _purchase(relayer, ctx.task_id)
    if purchase.refund:
        # The task completes with the refund as its outcome; the purchase is never
        # recorded in the buyer's holdings.
        refunded = await run_refund(relayer, purchase)
        return {
            "outcome": "refunded",
            "refundSignature": refunded["signature"],
            "slot": refunded["slot"],
            "lamports": refunded["lamports"],
        }
    purchase = await _settled(relayer, purchase)
    if purchase.swap["state"] == SwapState.FAILED.value:
        raise PermanentError(f"swap failed: {purchase.swap.get('error')}")
    if purchase.swap["state"] == SwapState.PARTIAL.value:
        raise NeedsReview(PARTIAL_SWAP, partial_swap_details(purchase))
    done = await run_transfer(relayer, purchase)
    await relayer.clients.service.submit(
        JobRequest(
            type=DB_UPDATE,
            payload={"purchaseId": purchase.id},
            priority=Priority.MEDIUM,
            idempotency_key=f"{DB_UPDATE}:{purchase.id}",
            trace=ctx.trace,
        )
    )
    return {"transferSignature": done["signature"], "slot": done["slot"]}


async def db_update(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Record the purchase in the user's history and holdings, once."""
    relayer = _relayer(ctx)
    purchase = await _purchase(relayer, payload["purchaseId"])
    if purchase.transfer.get("state") != "confirmed":
        raise PermanentError(f"purchase {purchase.id} has no confirmed transfer")
    fresh = await relayer.purchases.record(purchase)
    return {"recorded": True, "fresh": fresh}


def _purchase_id(payload: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(payload.get("purchaseId"), str):
        raise InvalidPayload("purchaseId must be a task id", field="payload.purchaseId")
    return payload


JOB_TYPES = [
    JobType(
        SWAP_SETTLE,
        swap_settle,
        Priority.CRITICAL,
        timeout_seconds=60,
        max_attempts=10,
        validate=_purchase_id,
        internal=True,
        crash_safe=True,
        description="Decides a purchase's swap bundle from the chain, then releases its transfer.",
    ),
    JobType(
        TOKEN_TRANSFER,
        token_transfer,
        Priority.HIGH,
        timeout_seconds=120,
        max_attempts=8,
        internal=True,
        crash_safe=True,
        description=(
            "Transfers a purchase's tokens to the contract, exactly once; or, once an operator"
            " decided a refund, returns its lamports to the buyer, exactly once."
        ),
    ),
    JobType(
        DB_UPDATE,
        db_update,
        Priority.MEDIUM,
        timeout_seconds=30,
        max_attempts=5,
        validate=_purchase_id,
        internal=True,
        crash_safe=True,
        description="Records a purchase in the user's history and holdings.",
    ),
]
