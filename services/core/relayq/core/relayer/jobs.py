"""The relayer's job types: swap_settle, token_transfer and db_update.

They are internal: created by the purchase route and by each other, never
submitted by clients. Handlers reach the chain through the process's Relayer,
opened on first use from the environment (or set by `use`).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from relayq.core.chain.settings import ChainSettings
from relayq.core.clients import open_clients
from relayq.core.jobs import Defer, JobContext, JobType, PermanentError, TaskState
from relayq.core.priorities import Priority
from relayq.core.relayer.buy import DB_UPDATE, SWAP_SETTLE, TOKEN_TRANSFER
from relayq.core.relayer.purchases import Purchase, SwapState
from relayq.core.relayer.relayer import Relayer, open_relayer
from relayq.core.relayer.settle import Verdict, check_swap, record_verdict
from relayq.core.relayer.transfer import run_transfer
from relayq.core.service import JobRequest
from relayq.core.settings import Settings
from relayq.core.store import now

# How soon an unsettled swap is looked at again (slots are ~0.4 s).
SETTLE_RECHECK_SECONDS = 1.0

_relayer: Relayer | None = None
_lock = asyncio.Lock()
_stack = AsyncExitStack()


def use(relayer: Relayer | None) -> None:
    """Make handlers in this process use `relayer` (None: open one from the environment)."""
    global _relayer
    _relayer = relayer


async def current() -> Relayer:
    global _relayer
    async with _lock:
        if _relayer is None:
            chain = ChainSettings.from_env()
            if not chain.configured:
                raise PermanentError("the relayer is not configured in this process")
            clients = await _stack.enter_async_context(open_clients(Settings.from_env()))
            _relayer = open_relayer(chain, clients)
        return _relayer


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
    relayer = await current()
    purchase = await _settled(relayer, await _purchase(relayer, payload["purchaseId"]))
    service = relayer.clients.service
    task = await service.get(purchase.id)
    if task is None or task.state is not TaskState.PENDING:
        return {"swap": purchase.swap["state"], "task": None if task is None else task.state.value}
    if purchase.swap["state"] == SwapState.LANDED.value:
        await service.dispatch_pending([task])
    else:
        await relayer.clients.store.transition(
            task.id,
            [TaskState.PENDING],
            TaskState.FAILED,
            set_fields={"last_error": purchase.swap.get("error"), "finished_at": now()},
        )
    return {"swap": purchase.swap["state"]}


async def token_transfer(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Move the bought tokens to the contract, exactly once, then queue the records update."""
    relayer = await current()
    purchase = await _settled(relayer, await _purchase(relayer, ctx.task_id))
    if purchase.swap["state"] == SwapState.FAILED.value:
        raise PermanentError(f"swap failed: {purchase.swap.get('error')}")
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
    relayer = await current()
    purchase = await _purchase(relayer, payload["purchaseId"])
    if purchase.transfer.get("state") != "confirmed":
        raise PermanentError(f"purchase {purchase.id} has no confirmed transfer")
    fresh = await relayer.purchases.record(purchase)
    return {"recorded": True, "fresh": fresh}


def _purchase_id(payload: dict[str, Any]) -> dict[str, Any]:
    from relayq.core.jobs import InvalidPayload

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
        description="Decides a purchase's swap bundle from the chain, then releases its transfer.",
    ),
    JobType(
        TOKEN_TRANSFER,
        token_transfer,
        Priority.HIGH,
        timeout_seconds=120,
        max_attempts=8,
        internal=True,
        description="Transfers a purchase's tokens to the contract, exactly once.",
    ),
    JobType(
        DB_UPDATE,
        db_update,
        Priority.MEDIUM,
        timeout_seconds=30,
        max_attempts=5,
        validate=_purchase_id,
        internal=True,
        description="Records a purchase in the user's history and holdings.",
    ),
]
