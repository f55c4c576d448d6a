"""Reconciliation against the local chain: a clean window says so, and each kind of
discrepancy injected on the chain or in the records is reported."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import get_associated_token_address, transfer_checked
from spl.token.models import TransferCheckedParams

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.modules import ProcessContext
from relayq.core.settings import Settings
from relayq.devchain.ledger import FINALIZED_DEPTH
from relayq.relayer.chain.errors import ChainError
from relayq.relayer.chain.keys import load_keypair
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.purchases import Purchase
from relayq.relayer.reconcile import KINDS, ReconcileReport, reconcile
from relayq.relayer.reconcile_main import run_once
from relayq.relayer.relayer import Relayer
from relayq.relayer.transfer import transfer_instructions
from tests.conftest import InProcessWorker, wait_until
from tests.gateway import CLIENT, scrape
from tests.integration.conftest import Api
from tests.relayer.conftest import SLOT_MS, Devchain

WALLET = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"


async def window_start() -> datetime:
    """A whole second after which only this test's transactions land (block times are
    whole seconds; the chain is shared with earlier tests)."""
    since = math.ceil(time.time()) + 1
    await asyncio.sleep(since - time.time() + 2 * SLOT_MS / 1000)
    return datetime.fromtimestamp(since, UTC)


async def completed_purchases(
    gateway: Api, clients: Clients, relayer: Relayer, process: ProcessContext, sols: list[float]
) -> list[Purchase]:
    ids = []
    for sol in sols:
        resp = await gateway.post(
            "/v1/buy-tokens",
            json={"wallet": WALLET, "solAmount": sol, "bundleId": "starter"},
            headers={**CLIENT, "Idempotency-Key": uuid.uuid4().hex},
        )
        body = await resp.json()
        assert resp.status == 202, body
        ids.append(body["taskId"])
    ws = [InProcessWorker(clients, p, process=process) for p in ("critical", "high", "medium")]
    for w in ws:
        await w.__aenter__()
    try:
        for task_id in ids:

            async def done(task_id: str = task_id) -> Any:
                task = await clients.store.get(task_id)
                purchase = await relayer.purchases.get(task_id)
                return task and task.state is TaskState.COMPLETED and purchase and purchase.recorded

            await wait_until(done, timeout=40)
    finally:
        for w in ws:
            await w.stop()
    return [p for p in [await relayer.purchases.get(i) for i in ids] if p is not None]


async def treasury_pays(
    relayer: Relayer, treasury: Keypair, mint: Pubkey, dest: Pubkey, amount: int
) -> Signature:
    """A token transfer from the devchain's treasury, with no memo: no purchase's."""
    decimals = next(t.decimals for t in relayer.baskets["starter"].tokens if t.mint == mint)
    pay = transfer_checked(
        TransferCheckedParams(
            program_id=TOKEN_PROGRAM_ID,
            source=get_associated_token_address(treasury.pubkey(), mint),
            mint=mint,
            dest=dest,
            owner=treasury.pubkey(),
            amount=amount,
            decimals=decimals,
        )
    )
    blockhash = await relayer.rpc.latest_blockhash()
    message = MessageV0.try_compile(treasury.pubkey(), [pay], [], blockhash.value)
    return await relayer.rpc.send(VersionedTransaction(message, [treasury]))


async def _landed(relayer: Relayer, signatures: list[Signature]) -> bool:
    states = await relayer.rpc.statuses(signatures)
    assert all(s is None or s.succeeded for s in states), states
    return all(s is not None for s in states)


async def reconciled(relayer: Relayer, chain: Devchain, since: datetime) -> ReconcileReport:
    await chain.faults(advanceSlots=FINALIZED_DEPTH + 2)  # what reconciliation reads is final
    return await reconcile(relayer, since, settle_seconds=0)


async def test_a_window_whose_chain_matches_its_records_is_clean(
    gateway: Api, clients: Clients, relayer: Relayer, chain: Devchain, process: ProcessContext
) -> None:
    since = await window_start()
    await completed_purchases(gateway, clients, relayer, process, [0.3, 0.3])
    report = await reconciled(relayer, chain, since)
    assert report.clean, report.to_json()
    assert report.purchases == 2
    assert report.transactions == 4  # two swaps, two transfers
    assert report.to_json()["clean"] is True
    assert set(report.counts.values()) == {0}


async def test_each_kind_of_discrepancy_is_reported(
    gateway: Api,
    clients: Clients,
    relayer: Relayer,
    chain: Devchain,
    process: ProcessContext,
    chain_settings: ChainSettings,
) -> None:
    treasury = load_keypair(chain_settings.treasury_keypair_file)
    # Before the window: stock the relayer, so a second transfer has tokens to move.
    tokens = relayer.baskets["starter"].tokens
    stock = [
        await treasury_pays(relayer, treasury, t.mint, relayer.allowlist.relayer_account(t.mint),
                            10**9)
        for t in tokens
    ]  # fmt: skip
    await wait_until(lambda: _landed(relayer, stock), timeout=10)
    since = await window_start()
    doubled, misrecorded = await completed_purchases(gateway, clients, relayer, process, [0.4, 0.5])

    # Tokens to the contract that no purchase accounts for.
    mint = Pubkey.from_string(doubled.legs[0].mint)
    unrecorded = await treasury_pays(
        relayer, treasury, mint, relayer.allowlist.contract_account(mint), 12_345
    )
    # A second transfer of one purchase lands (a re-signing gone wrong).
    await asyncio.sleep(2 * SLOT_MS / 1000)  # a newer blockhash: another signature
    blockhash = await relayer.rpc.latest_blockhash()
    second = await relayer.sign(transfer_instructions(relayer, doubled), blockhash.value)
    duplicate = await relayer.rpc.send(second)
    # A record naming a transfer the chain never saw.
    phantom = str(Signature.new_unique())
    await relayer.purchases.purchases.update_one(
        {"_id": misrecorded.id}, {"$set": {"transfer.signature": phantom}}
    )
    await wait_until(lambda: _landed(relayer, [unrecorded, duplicate]), timeout=10)

    report = await reconciled(relayer, chain, since)
    found = {(d.kind, d.purchase_id, d.signature) for d in report.discrepancies}
    assert ("unrecorded_credit", None, str(unrecorded)) in found, report.to_json()
    assert ("duplicate_transfer", doubled.id, str(duplicate)) in found, report.to_json()
    assert ("transfer_not_on_chain", misrecorded.id, phantom) in found, report.to_json()
    # the misrecorded purchase's real transfer is a credit its record does not name
    real = misrecorded.transfer["signature"]
    assert ("unrecorded_credit", misrecorded.id, real) in found, report.to_json()
    # the second transfer took from the relayer's inventory more than the records say
    short = {d.mint for d in report.discrepancies if d.kind == "inventory_mismatch"}
    assert short == {leg.mint for leg in doubled.legs}, report.to_json()
    token_kinds = KINDS[:4]  # refunds have their own test (test_refund.py)
    assert not report.clean and all(report.counts[k] >= 1 for k in token_kinds)


async def test_a_run_records_its_counts_and_the_api_exports_them(
    gateway: Api,
    clients: Clients,
    settings: Settings,
    chain_settings: ChainSettings,
    aiohttp_client: AiohttpClient,
) -> None:
    report = await run_once(settings, chain_settings, window=1.0, settle=0.0)
    text = await scrape(aiohttp_client, gateway)
    for kind, n in report.counts.items():
        assert f'relayq_reconcile_discrepancies{{kind="{kind}"}} {float(n)}' in text, text
    assert 'relayq_reconcile_runs_total{outcome="success"} 1.0' in text
    assert "relayq_reconcile_last_success_timestamp_seconds" in text

    # A run that cannot read the chain is counted as failed; the last counts stay.
    unreachable = replace(chain_settings, rpc_url="http://127.0.0.1:1", request_timeout_seconds=0.2)
    with pytest.raises(ChainError):
        await run_once(settings, unreachable, window=1.0, settle=0.0)
    text = await scrape(aiohttp_client, gateway)
    assert 'relayq_reconcile_runs_total{outcome="failure"} 1.0' in text
    assert 'relayq_reconcile_discrepancies{kind="duplicate_transfer"}' in text
