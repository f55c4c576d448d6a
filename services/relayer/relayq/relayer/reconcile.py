"""Reconciliation: what the chain says of the relayer's and the contract's token accounts,
against the purchase records of a window.

The chain is read on its own terms, never through the records: the history of
every token account of the allow-list (the relayer's and the contract's, per
basket mint; `getSignaturesForAddress`) back to the window's start, then each
transaction (`getTransaction`: its memos and token balance changes). The memo
every purchase transaction carries (`memo.py`) ties a transaction to its
purchase. The window is the purchases created in [since, now - settle): those
old enough that their swap and transfer should have finished.

Discrepancies, by kind:
- `unrecorded_credit`: the contract's account received tokens in a transaction
  that names no purchase on record, or that is not the transfer its
  purchase's record names;
- `transfer_not_on_chain`: a purchase's record says its transfer was confirmed,
  and that signature is not in the contract's history;
- `duplicate_transfer`: more than one transaction credited the contract for one
  purchase;
- `inventory_mismatch`: per mint, the relayer's account changed by other than
  the window's recorded swaps minus its recorded transfers (a swap may deliver
  more than its guaranteed amount: that surplus is allowed);
- `unrecorded_refund`: a transaction paid by the relayer carries a refund memo
  (`relayq:refund:<id>`) that is not the finalized refund its purchase's record
  names, or names no purchase on record, or did not pay the buyer exactly the
  recorded lamports;
- `duplicate_refund`: more than one refund landed for one purchase;
- `refund_not_on_chain`: a purchase's record says its refund landed, and the
  relayer's history does not show it.

Refunds move SOL, not tokens: they are found in the relayer's own history
(every transaction it pays for), by the memo the history lists with each
signature, and only those are read in full.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from solders.pubkey import Pubkey
from solders.signature import Signature

from relayq.relayer.chain.errors import ChainUnavailable
from relayq.relayer.chain.rpc import LandedTransaction
from relayq.relayer.memo import PREFIX, REFUND_PREFIX
from relayq.relayer.purchases import Purchase, RefundState, SwapState, TransferState
from relayq.relayer.relayer import Relayer

KINDS = (
    "unrecorded_credit",
    "transfer_not_on_chain",
    "duplicate_transfer",
    "inventory_mismatch",
    "unrecorded_refund",
    "duplicate_refund",
    "refund_not_on_chain",
)
PAGE = 1000
# getTransaction calls in flight at once: a day of purchases is thousands of them.
FETCH_CONCURRENCY = 8
DEFAULT_SETTLE_SECONDS = 120.0


@dataclass(frozen=True)
class Discrepancy:
    """One disagreement between the chain and the records.

    Attributes:
        kind: one of KINDS.
        detail: what was seen, in a sentence.
        purchase_id, signature, mint: what it is about, where known.
    """

    kind: str
    detail: str
    purchase_id: str | None = None
    signature: str | None = None
    mint: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "detail": self.detail}
        for key, value in (
            ("purchaseId", self.purchase_id),
            ("signature", self.signature),
            ("mint", self.mint),
        ):
            if value is not None:
                out[key] = value
        return out


@dataclass
class ReconcileReport:
    """A run's findings: the window, what was read, and every discrepancy."""

    since: datetime
    until: datetime
    purchases: int = 0
    transactions: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Discrepancies per kind, every kind present."""
        out = dict.fromkeys(KINDS, 0)
        for d in self.discrepancies:
            out[d.kind] += 1
        return out

    @property
    def clean(self) -> bool:
        return not self.discrepancies

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "purchases": self.purchases,
            "transactions": self.transactions,
            "clean": self.clean,
            "counts": self.counts,
            "discrepancies": [d.to_json() for d in self.discrepancies],
        }


def purchase_of(tx: LandedTransaction) -> str | None:
    """The purchase a transaction names in its memo, if any."""
    for memo in tx.memos:
        if memo.startswith(PREFIX):
            return memo[len(PREFIX) :]
    return None


def refund_of(tx: LandedTransaction) -> str | None:
    """The purchase a transaction names as refunded in its memo, if any."""
    for memo in tx.memos:
        if memo.startswith(REFUND_PREFIX):
            return memo[len(REFUND_PREFIX) :]
    return None


async def read_history(
    relayer: Relayer,
    accounts: Iterable[Pubkey],
    since_ts: float,
    finalized: bool = True,
    memo: str | None = None,
) -> list[LandedTransaction]:
    """Every successful transaction touching `accounts` from `since_ts` (Unix) on, oldest first;
    with `memo`, only those whose memo field (as the history lists it) contains it."""
    signatures: dict[str, int] = {}
    for account in accounts:
        before = None
        while True:
            page = await relayer.rpc.signatures_for_address(
                account, before=before, limit=PAGE, finalized=finalized
            )
            for entry in page:
                if entry.block_time is not None and entry.block_time < since_ts:
                    break
                if entry.succeeded and (memo is None or memo in (entry.memo or "")):
                    signatures[str(entry.signature)] = entry.slot
            else:
                if len(page) == PAGE:
                    before = page[-1].signature
                    continue
            break
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def fetch(sig: str) -> LandedTransaction:
        async with gate:
            tx = await relayer.rpc.transaction(Signature.from_string(sig), finalized=finalized)
        if tx is None:
            # Listed by the history but not served (another node behind a balancer):
            # no verdict can rest on a transaction the run could not read.
            raise ChainUnavailable(f"getTransaction {sig}: in the history, but not served")
        return tx

    ordered = sorted(signatures, key=lambda s: signatures[s])
    return [tx for tx in await asyncio.gather(*map(fetch, ordered)) if tx.succeeded]


async def reconcile(
    relayer: Relayer,
    since: datetime,
    *,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    now: datetime | None = None,
    finalized: bool = True,
) -> ReconcileReport:
    """Compare the chain with the purchases created in [since, now - settle_seconds)."""
    now = now or datetime.now(UTC)
    until = now - timedelta(seconds=settle_seconds)
    report = ReconcileReport(since=since, until=until)
    allow = relayer.allowlist
    contract = {allow.contract_account(m): str(m) for m in allow.mints}
    inventory = {allow.relayer_account(m): str(m) for m in allow.mints}

    txs = await read_history(relayer, [*contract, *inventory], since.timestamp(), finalized)
    window = {p.id: p for p in await relayer.purchases.created_between(since, until)}
    named = {pid for pid in (purchase_of(tx) for tx in txs) if pid is not None}
    known = {**await relayer.purchases.get_many(sorted(named - set(window))), **window}
    report.purchases, report.transactions = len(window), len(txs)
    found = report.discrepancies

    # The contract's side: every credit must be the recorded transfer of a purchase.
    credits: dict[str, list[str]] = defaultdict(list)
    for tx in txs:
        credited = {contract[k]: d.amount for k, d in tx.token_deltas.items() if k in contract}
        if not any(v > 0 for v in credited.values()):
            continue
        pid = purchase_of(tx)
        purchase = known.get(pid) if pid is not None else None
        if purchase is None:
            found.append(Discrepancy(
                "unrecorded_credit",
                f"the contract received {_amounts(credited)} in a transaction naming "
                + (f"purchase {pid}, which has no record" if pid else "no purchase"),
                purchase_id=pid, signature=tx.signature,
            ))  # fmt: skip
            continue
        credits[purchase.id].append(tx.signature)
    for pid, sigs in credits.items():
        purchase = known[pid]
        if pid not in window:
            continue  # outside the window (too recent, or before it): judged by another run
        recorded = purchase.transfer.get("signature")
        state = purchase.transfer.get("state")
        if len(sigs) > 1:
            found.append(Discrepancy(
                "duplicate_transfer",
                f"{len(sigs)} transfers landed for one purchase: {', '.join(sigs)}",
                purchase_id=pid, signature=sigs[-1],
            ))  # fmt: skip
            continue
        for sig in sigs:
            if sig != recorded or state != TransferState.CONFIRMED.value:
                found.append(Discrepancy(
                    "unrecorded_credit",
                    f"transfer {sig} landed, but the record names {recorded} ({state})",
                    purchase_id=pid, signature=sig,
                ))  # fmt: skip
    for purchase in window.values():
        recorded = purchase.transfer.get("signature")
        confirmed = purchase.transfer.get("state") == TransferState.CONFIRMED.value
        if confirmed and recorded not in credits.get(purchase.id, []):
            found.append(Discrepancy(
                "transfer_not_on_chain",
                f"the record says transfer {recorded} was confirmed; the contract's history"
                " does not show it",
                purchase_id=purchase.id, signature=recorded,
            ))  # fmt: skip

    # The relayer's side: its inventory moves only by the window's recorded swaps and transfers.
    found.extend(_inventory(txs, inventory, window))
    # Refunds: every one landed is the finalized refund its purchase records, and only one.
    refunds = await read_history(
        relayer, [relayer.signer.pubkey()], since.timestamp(), finalized, memo=REFUND_PREFIX
    )
    report.transactions += len(refunds)
    found.extend(await _refunds(relayer, refunds, window))
    return report


async def _refunds(
    relayer: Relayer, txs: list[LandedTransaction], window: dict[str, Purchase]
) -> list[Discrepancy]:
    found: list[Discrepancy] = []
    named = {pid for pid in (refund_of(tx) for tx in txs) if pid is not None}
    known = {**await relayer.purchases.get_many(sorted(named - set(window))), **window}
    landed: dict[str, list[str]] = defaultdict(list)
    for tx in txs:
        pid = refund_of(tx)
        purchase = known.get(pid) if pid is not None else None
        if purchase is None:
            found.append(Discrepancy(
                "unrecorded_refund",
                f"a refund memo names purchase {pid}, which has no record",
                purchase_id=pid, signature=tx.signature,
            ))  # fmt: skip
            continue
        if pid not in window:
            continue  # another window's purchase: judged by another run
        landed[purchase.id].append(tx.signature)
        r = purchase.refund
        paid = tx.lamport_deltas.get(Pubkey.from_string(purchase.wallet), 0)
        if tx.signature != r.get("signature") or r.get("state") != RefundState.FINALIZED.value:
            found.append(Discrepancy(
                "unrecorded_refund",
                f"refund {tx.signature} landed, but the record names {r.get('signature')} "
                f"({r.get('state')})",
                purchase_id=purchase.id, signature=tx.signature,
            ))  # fmt: skip
        elif paid != int(r.get("lamports", purchase.lamports)):
            found.append(Discrepancy(
                "unrecorded_refund",
                f"refund {tx.signature} paid the buyer {paid} lamports, the record says "
                f"{r.get('lamports', purchase.lamports)}",
                purchase_id=purchase.id, signature=tx.signature,
            ))  # fmt: skip
    for pid, sigs in landed.items():
        if len(sigs) > 1:
            found.append(Discrepancy(
                "duplicate_refund",
                f"{len(sigs)} refunds landed for one purchase: {', '.join(sigs)}",
                purchase_id=pid, signature=sigs[-1],
            ))  # fmt: skip
    for purchase in window.values():
        r = purchase.refund
        if r.get("state") == RefundState.FINALIZED.value and r.get("signature") not in landed.get(
            purchase.id, []
        ):
            found.append(Discrepancy(
                "refund_not_on_chain",
                f"the record says refund {r.get('signature')} landed; the relayer's history"
                " does not show it",
                purchase_id=purchase.id, signature=r.get("signature"),
            ))  # fmt: skip
    return found


def _inventory(
    txs: list[LandedTransaction], inventory: dict[Pubkey, str], window: dict[str, Purchase]
) -> list[Discrepancy]:
    actual: dict[str, int] = defaultdict(int)
    expected: dict[str, int] = defaultdict(int)
    surplus: dict[str, int] = defaultdict(int)
    for purchase in window.values():
        for leg in purchase.legs:
            if purchase.swap.get("state") == SwapState.LANDED.value:
                expected[leg.mint] += leg.amount
            if purchase.transfer.get("state") == TransferState.CONFIRMED.value:
                expected[leg.mint] -= leg.amount
    swaps = {sig: p for p in window.values() for sig in p.swap.get("signatures", [])}
    for tx in txs:
        pid = purchase_of(tx)
        if pid is not None and pid not in window:
            continue  # another window's purchase
        for key, delta in tx.token_deltas.items():
            mint = inventory.get(key)
            if mint is None:
                continue
            actual[mint] += delta.amount
            swapped = swaps.get(tx.signature)
            if swapped is not None and delta.amount > 0:
                bought = sum(leg.amount for leg in swapped.legs if leg.mint == mint)
                surplus[mint] += max(0, delta.amount - bought)
    out = []
    for mint in sorted(set(actual) | set(expected)):
        gap = actual[mint] - expected[mint]
        if not 0 <= gap <= surplus[mint]:
            out.append(Discrepancy(
                "inventory_mismatch",
                f"the relayer's account changed by {actual[mint]}; recorded swaps minus"
                f" transfers say {expected[mint]}",
                mint=mint,
            ))  # fmt: skip
    return out


def _amounts(credited: dict[str, int]) -> str:
    return ", ".join(f"{amount} of {mint}" for mint, amount in credited.items() if amount > 0)
