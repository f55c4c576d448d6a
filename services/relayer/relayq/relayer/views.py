"""How a purchase shows in its task's view: the record, and the chain's word on it now."""

from __future__ import annotations

import asyncio
from typing import Any

from solders.signature import Signature

from relayq.core.jobs import Task
from relayq.relayer.chain.errors import ChainError
from relayq.relayer.relayer import Relayer

# Reading live signature states for a task view must not hold the answer up long.
CHAIN_VIEW_TIMEOUT_SECONDS = 2.0


async def purchase_view(relayer: Relayer | None, task: Task) -> dict[str, Any] | None:
    """The purchase behind a task, with what the chain says of each signature now."""
    if relayer is None:
        return None
    purchase = await relayer.purchases.get(task.id)
    if purchase is None:
        return None
    sigs = purchase.signatures()
    chain: dict[str, str | None] = {}
    try:
        async with asyncio.timeout(CHAIN_VIEW_TIMEOUT_SECONDS):
            states = await relayer.rpc.statuses([Signature.from_string(s) for s in sigs])
        for sig, state in zip(sigs, states, strict=True):
            if state is None:
                chain[sig] = "unknown"
            else:
                chain[sig] = state.confirmation if state.succeeded else "failed"
    except (ChainError, TimeoutError):
        chain = dict.fromkeys(sigs, "unavailable")
    return purchase.to_public(chain)
