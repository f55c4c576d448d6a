"""A purchase, as the gateway runs it: swap first (one Jito bundle), answer, transfer later.

Order of writes, so nothing is lost or done twice:
1. an idempotent replay returns the task it created, with no second swap;
2. the swap transactions are built and signed, and written (bytes, signatures,
   last valid block height) with the purchase record, then the task is written
   `pending` under the client's idempotency key; a request that loses that
   race drops its own record, which was never sent;
3. the bundle is sent, and the request waits a bounded time for it to land:
   landed, the `token_transfer` job is dispatched; unknown, a `swap_settle`
   job decides later; failed or expired, the task ends `failed` with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pymongo.errors import PyMongoError
from solders.hash import Hash
from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from relayq.core.ids import new_task_id
from relayq.core.jobs import InvalidPayload, Task, TaskState
from relayq.core.priorities import Priority
from relayq.core.quotas import Quota, QuotaSpent
from relayq.core.service import JobRequest
from relayq.core.store import now
from relayq.core.telemetry import log_event
from relayq.relayer.baskets import LAMPORTS_PER_SOL, Basket
from relayq.relayer.chain.errors import ChainError, ChainRejected, ChainUnavailable
from relayq.relayer.chain.metrics import PURCHASES, SWAP_SECONDS
from relayq.relayer.chain.swap import LegPlan
from relayq.relayer.memo import purchase_memo
from relayq.relayer.purchases import Purchase, PurchaseLeg, SwapState
from relayq.relayer.relayer import PACKET_DATA_SIZE, Relayer
from relayq.relayer.settle import (
    SwapCheck,
    Verdict,
    check_swap,
    park_partial_swap,
    record_verdict,
)
from relayq.relayer.signing import signed_size

log = logging.getLogger("relayq.relayer")

TOKEN_TRANSFER = "token_transfer"
SWAP_SETTLE = "swap_settle"
DB_UPDATE = "db_update"
POLL_SECONDS = 0.25


# The network's base fee per signature (lamports).
LAMPORTS_PER_SIGNATURE = 5_000


class UnknownBasket(LookupError):
    """The requested bundle id names no basket."""


class PurchaseLimitReached(Exception):
    """A client's or wallet's purchases or lamports for the window are spent: nothing signed."""

    def __init__(self, spent: QuotaSpent) -> None:
        what = "purchases" if spent.limit == "count" else "lamports"
        cap = spent.quota.max_count if spent.limit == "count" else spent.quota.max_amount
        super().__init__(
            f"the {what} limit of {spent.quota.scope.split(':', 1)[0]} is reached "
            f"({cap} per window); try again in {spent.retry_after_seconds:g} s"
        )
        self.spent = spent


class RelayerShortOfSol(Exception):
    """The relayer's SOL would not cover the purchase, its tip and fees and the reserve."""


def network_fee_bound(tokens: int) -> int:
    """The most a swap of `tokens` legs pays in base fees: up to one transaction per leg,
    each signed by the relayer and a co-signer per leg."""
    return LAMPORTS_PER_SIGNATURE * tokens * (tokens + 1)


def quotas_of(relayer: Relayer, req: BuyRequest) -> list[Quota]:
    c = relayer.chain
    out = [Quota(f"wallet:{req.wallet}", c.wallet_purchases, c.wallet_lamports)]
    if req.client is not None:
        out.append(Quota(f"client:{req.client}", c.client_purchases, c.client_lamports))
    return out


async def check_sol(relayer: Relayer, lamports: int, tokens: int) -> None:
    """Refuse (RelayerShortOfSol) a purchase the relayer's SOL cannot pay for whole."""
    needed = (
        lamports + relayer.chain.tip_lamports + network_fee_bound(tokens)
        + relayer.chain.sol_reserve_lamports
    )  # fmt: skip
    held = await relayer.rpc.balance(relayer.signer.pubkey())
    if held < needed:
        PURCHASES.labels(outcome="short_of_sol").inc()
        log_event(log, logging.ERROR, "relayer short of SOL", held=held, needed=needed)
        raise RelayerShortOfSol(
            f"the relayer holds {held} lamports, this purchase needs {needed} "
            "(its amount, tip, network fees and the reserve)"
        )


@dataclass(frozen=True)
class BuyRequest:
    """A client's purchase: `lamports` of SOL into basket `basket_id`, for `wallet`."""

    wallet: str
    lamports: int
    basket_id: str
    idempotency_key: str
    client: str | None = None
    trace: Mapping[str, str] | None = None


@dataclass(frozen=True)
class BuyResult:
    """The task, the purchase record, and the client-facing status."""

    task: Task
    purchase: Purchase | None
    status: str
    created: bool


def validate_wallet(wallet: str) -> Pubkey:
    try:
        return Pubkey.from_string(wallet)
    except ValueError:
        raise InvalidPayload("wallet must be a base58 public key", field="wallet") from None


def job_request(req: BuyRequest) -> JobRequest:
    return JobRequest(
        type=TOKEN_TRANSFER,
        payload={"wallet": req.wallet, "bundleId": req.basket_id, "lamports": req.lamports},
        priority=Priority.HIGH,
        idempotency_key=req.idempotency_key,
        client=req.client,
        trace=req.trace,
    )


def status_of(task: Task, purchase: Purchase | None) -> str:
    """The client-facing status: the task's state, or where its swap stands."""
    swapping = purchase is not None and purchase.swap.get("state") == SwapState.SIGNED.value
    if task.state is TaskState.PENDING and swapping:
        return "swap_pending"
    return task.state.value


def basket_for(relayer: Relayer, basket_id: str, lamports: int) -> Basket:
    """The basket, if `lamports` is within its limits; UnknownBasket or InvalidPayload."""
    basket = relayer.baskets.get(basket_id)
    if basket is None:
        raise UnknownBasket(basket_id)
    if not basket.min_lamports <= lamports <= basket.max_lamports:
        raise InvalidPayload(
            f"solAmount must be between {basket.min_lamports / LAMPORTS_PER_SOL:g} and "
            f"{basket.max_lamports / LAMPORTS_PER_SOL:g} SOL for bundle {basket.id}",
            field="solAmount",
        )
    return basket


async def buy(relayer: Relayer, req: BuyRequest) -> BuyResult:
    basket = relayer.baskets.get(req.basket_id)
    if basket is None:
        raise UnknownBasket(req.basket_id)
    validate_wallet(req.wallet)
    basket = basket_for(relayer, req.basket_id, req.lamports)
    service = relayer.clients.service
    request = job_request(req)
    replay = await service.replay_of(request)
    if replay is not None:
        purchase = await relayer.purchases.get(replay.id)
        return BuyResult(replay, purchase, status_of(replay, purchase), created=False)

    # Before anything is signed: the relayer can pay for it, and the limits allow it
    # (taken last, so a purchase refused for funds counts against no one).
    await check_sol(relayer, req.lamports, len(basket.tokens))
    spent = await relayer.quotas.take(
        quotas_of(relayer, req), req.lamports, relayer.chain.purchase_window_seconds
    )
    if spent is not None:
        PURCHASES.labels(outcome="limited").inc()
        raise PurchaseLimitReached(spent)

    # Build and sign: nothing is sent before the record holds these bytes.
    blockhash = await relayer.rpc.latest_blockhash()
    plans = [
        await relayer.swap.plan(relayer.signer.pubkey(), token, lamports)
        for token, lamports in zip(basket.tokens, basket.split(req.lamports), strict=True)
    ]
    tip = transfer(
        TransferParams(
            from_pubkey=relayer.signer.pubkey(),
            to_pubkey=await relayer.jito.random_tip_account(),
            lamports=relayer.chain.tip_lamports,
        )
    )
    task_id = new_task_id()
    txs = await pack(relayer, plans, tip, blockhash.value, purchase_memo(task_id))
    purchase = Purchase(
        id=task_id,
        wallet=req.wallet,
        basket=basket.id,
        lamports=req.lamports,
        legs=[
            PurchaseLeg(
                p.leg.token.symbol,
                str(p.leg.token.mint),
                p.leg.token.decimals,
                p.leg.lamports,
                p.leg.amount,
            )
            for p in plans
        ],
        swap={
            "state": SwapState.SIGNED.value,
            "transactions": [base64.b64encode(bytes(t)).decode() for t in txs],
            "signatures": [str(t.signatures[0]) for t in txs],
            "lastValidBlockHeight": blockhash.last_valid_block_height,
            "signedAt": now(),
        },
    )
    await relayer.purchases.insert(purchase)
    submitted = await service.submit_held(request, task_id=task_id)
    if not submitted.created:  # a concurrent request with the same key won
        await relayer.purchases.delete_unsent(task_id)
        other = await relayer.purchases.get(submitted.task.id)
        return BuyResult(submitted.task, other, status_of(submitted.task, other), created=False)

    try:
        return await _send(relayer, submitted.task, purchase, txs)
    except PyMongoError as exc:
        # The purchase and its held task were recorded before the send: whatever
        # the store failed to record after it, the purchase exists and recovery
        # dispatches its task, which settles the swap from the chain. Telling the
        # client "nothing was accepted" would have it buy again.
        log_event(log, logging.WARNING, "purchase recorded, its swap's outcome not yet",
                  task_id=task_id, error=str(exc))  # fmt: skip
        return BuyResult(submitted.task, purchase, "swap_pending", created=True)


async def _send(
    relayer: Relayer, task: Task, purchase: Purchase, txs: list[VersionedTransaction]
) -> BuyResult:
    task_id = task.id
    t0 = time.monotonic()
    try:
        bundle_id = await relayer.jito.send_bundle(txs)
    except ChainRejected as exc:
        # The block engine refused the bundle itself: it was never accepted, so it
        # cannot land, and the signatures can be given up on.
        check = SwapCheck(Verdict.FAILED, error=f"the block engine refused the bundle: {exc}")
        return await _conclude(relayer, task, purchase, check, time.monotonic() - t0)
    except ChainUnavailable as exc:
        log_event(log, logging.WARNING, "swap outcome unknown", task_id=task_id, error=str(exc))
        check = SwapCheck(Verdict.PENDING)
        return await _conclude(relayer, task, purchase, check, time.monotonic() - t0)
    # Sent: from here on only the chain decides. An error while recording or
    # polling (a node behind, a timeout) is no verdict: the swap stays pending and
    # swap_settle decides it from the chain.
    try:
        await relayer.purchases.swap_sent(task_id, bundle_id)
        purchase = replace(purchase, swap={**purchase.swap, "bundleId": bundle_id})
        check = await _wait_for_swap(relayer, purchase, relayer.chain.swap_wait_seconds)
    except ChainError as exc:
        log_event(log, logging.WARNING, "swap outcome unknown", task_id=task_id, error=str(exc))
        check = SwapCheck(Verdict.PENDING)
    return await _conclude(relayer, task, purchase, check, time.monotonic() - t0)


async def pack(
    relayer: Relayer, plans: list[LegPlan], tip: Instruction, blockhash: Hash, memo: Instruction
) -> list[VersionedTransaction]:
    """All legs and the tip in one transaction when it fits, else one per leg (tip in the first).

    Every transaction carries the purchase's memo, so none can be byte-identical
    to another purchase's. The size is judged before signing, so the signer
    signs only what is sent.
    """
    signers = [kp for p in plans for kp in p.signers]
    tables = [t for p in plans for t in p.lookup_tables]
    instructions = [*(i for p in plans for i in p.instructions), tip, memo]
    if signed_size(relayer.compile(instructions, blockhash, tables)) <= PACKET_DATA_SIZE:
        return [await relayer.sign(instructions, blockhash, signers, tables)]
    txs = []
    for n, plan in enumerate(plans):
        extra = [tip, memo] if n == 0 else [memo]
        txs.append(
            await relayer.sign(
                [*plan.instructions, *extra], blockhash, plan.signers, plan.lookup_tables
            )
        )
    return txs


async def _wait_for_swap(relayer: Relayer, purchase: Purchase, bound: float) -> SwapCheck:
    deadline = time.monotonic() + bound
    while True:
        check = await check_swap(relayer, purchase)
        if check.verdict is not Verdict.PENDING or time.monotonic() >= deadline:
            return check
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


async def _conclude(
    relayer: Relayer, task: Task, purchase: Purchase, check: SwapCheck, waited: float
) -> BuyResult:
    service = relayer.clients.service
    purchase = await record_verdict(relayer, purchase, check)
    if check.verdict is Verdict.LANDED:
        SWAP_SECONDS.observe(waited)
        PURCHASES.labels(outcome="accepted").inc()
        left = await service.dispatch_pending([task])
        task = left.get(task.id) or (await service.get(task.id)) or task
        log_event(log, logging.INFO, "swap landed", task_id=task.id, slot=check.slot)
        return BuyResult(task, purchase, status_of(task, purchase), created=True)
    if check.verdict is Verdict.FAILED:
        PURCHASES.labels(outcome="failed").inc()
        failed = await service.lifecycle.dead_letter(
            task.id, type_=task.type, priority=task.priority, error=check.error or "swap failed",
            reason="refused", expected=[TaskState.PENDING],
        )  # fmt: skip
        task = failed or task
        log_event(log, logging.WARNING, "swap failed", task_id=task.id, error=check.error)
        return BuyResult(task, purchase, "failed", created=True)
    if check.verdict is Verdict.PARTIAL:
        PURCHASES.labels(outcome="needs_review").inc()
        parked = await park_partial_swap(relayer, task, purchase)
        task = parked or task
        log_event(log, logging.WARNING, "swap partly landed", task_id=task.id, error=check.error)
        return BuyResult(task, purchase, task.state.value, created=True)
    PURCHASES.labels(outcome="swap_pending").inc()
    await service.submit(
        JobRequest(
            type=SWAP_SETTLE,
            payload={"purchaseId": task.id},
            priority=Priority.CRITICAL,
            idempotency_key=f"{SWAP_SETTLE}:{task.id}",
            trace=task.trace,
        )
    )
    return BuyResult(task, purchase, "swap_pending", created=True)
