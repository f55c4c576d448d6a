"""Funds safety: once a buyer has paid, nothing ends `failed` on anything but the chain's word.

Each test drives the real relayer code against the local chain, real Redis and
real MongoDB; the chain's answers come from the devchain (its fault injection
and its commitment views), never from a model of it.
"""

from __future__ import annotations

import contextlib

from solders.signature import Signature
from spl.token.instructions import get_associated_token_address

from relayq.core.clients import Clients
from relayq.core.jobs import Task, TaskState
from relayq.core.modules import ProcessContext
from relayq.core.priorities import Priority
from relayq.core.queue import Delivery, Message
from relayq.core.service import JobRequest
from relayq.relayer import transfer as transfer_steps
from relayq.relayer.chain.rpc import SignatureState
from relayq.relayer.purchases import Purchase, PurchaseLeg, SwapState, TransferState
from relayq.relayer.relayer import Relayer
from tests.conftest import InProcessWorker
from tests.relayer.test_purchase import WALLET

# Two well-formed signatures that name no transaction on the chain.
SIG_OLD = str(Signature(bytes([7]) * 64))
SIG_NEW = str(Signature(bytes([8]) * 64))


async def paid_purchase(
    clients: Clients, relayer: Relayer, amount: int = 1, transfer: dict[str, object] | None = None
) -> Task:
    """A held token_transfer task and its purchase record, the swap landed."""
    token = relayer.baskets["single"].tokens[0]
    sub = await clients.service.submit_held(
        JobRequest("token_transfer", {"wallet": WALLET, "bundleId": "single", "lamports": 1},
                   priority=Priority.HIGH),
    )  # fmt: skip
    await relayer.purchases.insert(
        Purchase(
            id=sub.task.id, wallet=WALLET, basket="single", lamports=1,
            legs=[PurchaseLeg(token.symbol, str(token.mint), token.decimals, 1, amount)],
            swap={"state": SwapState.LANDED.value, "signatures": [], "transactions": []},
            transfer=dict(transfer or {}),
        )
    )  # fmt: skip
    return sub.task


async def relayer_holds(relayer: Relayer) -> int:
    token = relayer.baskets["single"].tokens[0]
    return await relayer.rpc.token_balance(
        get_associated_token_address(relayer.signer.pubkey(), token.mint)
    )


# -- hole 10: delivery counts are no evidence of poison for a paid purchase ---------------


async def test_a_paid_transfer_past_its_delivery_limit_is_parked_never_failed(
    clients: Clients, relayer: Relayer, process: ProcessContext
) -> None:
    task = await paid_purchase(clients, relayer)
    await clients.service.dispatch_pending([task])
    # A worker took it and was killed, again and again, until the claim passed the limit.
    started = await clients.service.lifecycle.start(task.id, "killed-worker", redelivered=False)
    assert started is not None
    worker = InProcessWorker(clients, "high", process=process)
    deliveries = clients.settings.max_deliveries + 1
    await worker.executor.poison(
        Delivery(Priority.HIGH, "1-0", Message(task.id, "token_transfer"), deliveries=deliveries)
    )
    stored = await clients.store.get(task.id)
    assert stored is not None and stored.state is TaskState.NEEDS_REVIEW, stored
    assert stored.review is not None and stored.review["reason"] == "deliveries"


# -- hole 4: a stale run cannot write over a newer outcome ---------------------------------


async def test_a_stale_run_cannot_write_failed_over_a_confirmed_transfer(
    clients: Clients, relayer: Relayer
) -> None:
    # Run A read the transfer while it was signed as SIG_OLD, then stalled past its lease.
    # Run B re-signed it (SIG_NEW) and saw that one confirmed.
    task = await paid_purchase(
        clients, relayer,
        transfer={"state": "confirmed", "signature": SIG_NEW, "slot": 7,
                  "signatures": [SIG_OLD, SIG_NEW]},
    )  # fmt: skip
    stale = await relayer.purchases.get(task.id)
    assert stale is not None
    stale = Purchase(**{**stale.__dict__, "transfer": {"state": "signed", "signature": SIG_OLD}})
    # Run A wakes up to an answer about its old signature saying it failed.
    failed = SignatureState(slot=5, error="InstructionError", confirmation="finalized")
    with contextlib.suppress(Exception):
        await transfer_steps._settle(relayer, stale, Signature.from_string(SIG_OLD), failed)
    stored = await relayer.purchases.get(task.id)
    assert stored is not None
    assert stored.transfer["state"] == TransferState.CONFIRMED.value, stored.transfer
    assert stored.transfer["signature"] == SIG_NEW and "error" not in stored.transfer
