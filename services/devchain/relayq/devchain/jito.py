"""The Jito block engine's bundle API over the devchain ledger.

Methods (JSON-RPC 2.0 at `POST /api/v1/bundles`), shapes as the block engine's:

- `sendBundle [[tx, ...], {"encoding": "base64"|"base58"}]` -> bundle id: the
  hex SHA-256 of the transactions' first signatures (base58), joined by ",".
  1 to 5 transactions; at least one must write-lock a tip account and the
  System transfers to tip accounts must add up to `min_tip_lamports`, else a
  -32602 error. The bundle lands all-or-nothing at the next slot. Sending the
  same bundle again while it is pending or landed returns its id and changes
  nothing; after it failed or expired, it is queued again.
- `getInflightBundleStatuses [[id, ...]]` (max 5) -> context + value
  `[{"bundle_id", "status": "Invalid"|"Pending"|"Failed"|"Landed", "landed_slot"}]`.
- `getBundleStatuses [[id, ...]]` (max 5) -> context + value, per id null unless
  landed, else `{"bundle_id", "transactions": [sig, ...], "slot",
  "confirmation_status": "processed"|"confirmed"|"finalized", "err": {"Ok": null}}`.
- `getTipAccounts []` -> the 8 tip account pubkeys.

Tips are recognised as System Program transfers (the way every Jito SDK pays them).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from relayq.devchain.codec import DecodeError, decode_transaction
from relayq.devchain.faults import Faults
from relayq.devchain.ledger import SYSTEM_PROGRAM_ID, Ledger, writable_keys

MAX_BUNDLE_TRANSACTIONS = 5
MAX_STATUS_IDS = 5
MAX_BUNDLES_KEPT = 100_000
_TRANSFER_TAG = (2).to_bytes(4, "little")


class BundleError(Exception):
    """A JSON-RPC error answered to a bundle call."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Bundle:
    """A bundle the engine accepted.

    Attributes:
        id: bundle id (hex).
        txs: its transactions, in execution order.
        state: pending | landed | failed | dropped | doomed (failBundles fault).
        expires_at: last block height at which all its blockhashes are still valid.
        landed_slot: the slot it landed in.
        err: why it failed, in JSON form ({"index": i, "err": ...}).
    """

    id: str
    txs: list[VersionedTransaction]
    state: str
    expires_at: int
    landed_slot: int | None = None
    err: Any = None

    @property
    def signatures(self) -> list[str]:
        return [str(tx.signatures[0]) for tx in self.txs]


@dataclass
class BundleStats:
    received: int = 0
    landed: int = 0
    failed: int = 0
    dropped: int = 0


def bundle_id(txs: list[VersionedTransaction]) -> str:
    """As the block engine derives it: sha256 over the first signatures joined by ","."""
    joined = ",".join(str(tx.signatures[0]) for tx in txs)
    return hashlib.sha256(joined.encode()).hexdigest()


def tip_lamports(tx: VersionedTransaction, tips: set[Pubkey]) -> int:
    """Lamports a transaction moves to tip accounts by System transfers."""
    keys = tx.message.account_keys
    total = 0
    for ix in tx.message.instructions:
        data, accounts = bytes(ix.data), bytes(ix.accounts)
        if keys[ix.program_id_index] != SYSTEM_PROGRAM_ID or len(accounts) < 2:
            continue
        if len(data) == 12 and data[:4] == _TRANSFER_TAG and keys[accounts[1]] in tips:
            total += int.from_bytes(data[4:], "little")
    return total


@dataclass
class BundleEngine:
    """Accepts bundles, lands them at slot boundaries, answers their statuses."""

    ledger: Ledger
    faults: Faults
    tip_accounts: list[Pubkey]
    min_tip_lamports: int = 1000
    stats: BundleStats = field(default_factory=BundleStats)
    _bundles: OrderedDict[str, Bundle] = field(default_factory=OrderedDict)
    _queue: list[Bundle] = field(default_factory=list)

    def call(self, method: str, params: list[Any]) -> Any:
        if method == "sendBundle":
            return self.send_bundle(params)
        if method == "getInflightBundleStatuses":
            return self._context([self.inflight_status(i) for i in self._ids(params)])
        if method == "getBundleStatuses":
            return self._context([self.landed_status(i) for i in self._ids(params)])
        if method == "getTipAccounts":
            return [str(t) for t in self.tip_accounts]
        raise BundleError(-32601, "Method not found")

    def _context(self, value: Any) -> dict[str, Any]:
        return {"context": {"slot": self.ledger.slot}, "value": value}

    @staticmethod
    def _ids(params: list[Any]) -> list[str]:
        if not params or not isinstance(params[0], list):
            raise BundleError(-32602, "Invalid params: expected an array of bundle ids")
        ids = params[0]
        if not ids or len(ids) > MAX_STATUS_IDS or not all(isinstance(i, str) for i in ids):
            raise BundleError(-32602, f"Invalid params: expected 1 to {MAX_STATUS_IDS} bundle ids")
        return ids

    def send_bundle(self, params: list[Any]) -> str:
        if not params or not isinstance(params[0], list):
            raise BundleError(-32602, "Invalid params: expected an array of transactions")
        encoded = params[0]
        config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        encoding = config.get("encoding", "base58")
        if not 1 <= len(encoded) <= MAX_BUNDLE_TRANSACTIONS:
            raise BundleError(
                -32602,
                f"bundle must contain 1 to {MAX_BUNDLE_TRANSACTIONS} transactions, "
                f"got {len(encoded)}",
            )
        txs: list[VersionedTransaction] = []
        for i, text in enumerate(encoded):
            try:
                tx = decode_transaction(text, encoding)
                tx.sanitize()
            except DecodeError as exc:
                raise BundleError(-32602, f"transaction {i} is invalid: {exc}") from None
            except Exception as exc:  # solders' sanitize error
                raise BundleError(-32602, f"transaction {i} failed to sanitize: {exc}") from None
            lookups = getattr(tx.message, "address_table_lookups", None)
            if lookups:
                raise BundleError(
                    -32602, f"transaction {i}: address lookup tables are not supported"
                )
            txs.append(tx)
        tips = set(self.tip_accounts)
        if not any(tips.intersection(writable_keys(tx)) for tx in txs):
            raise BundleError(-32602, "bundle must write lock at least one tip account")
        paid = sum(tip_lamports(tx, tips) for tx in txs)
        if paid < self.min_tip_lamports:
            raise BundleError(
                -32602,
                f"bundle tip of {paid} lamports is below the minimum of "
                f"{self.min_tip_lamports} lamports",
            )
        bid = bundle_id(txs)
        known = self._bundles.get(bid)
        if known is not None and self._status(known) in ("Pending", "Landed"):
            return bid
        self.stats.received += 1
        heights = [self.ledger.last_valid_height(str(tx.message.recent_blockhash)) for tx in txs]
        expires = min(h if h is not None else self.ledger.block_height - 1 for h in heights)
        if self.faults.consume_drop_bundle():
            state = "dropped"
            self.stats.dropped += 1
        elif self.faults.consume_fail_bundle():
            state = "doomed"
        else:
            state = "pending"
        bundle = Bundle(bid, txs, state, expires)
        self._bundles[bid] = bundle
        self._bundles.move_to_end(bid)
        while len(self._bundles) > MAX_BUNDLES_KEPT:
            self._bundles.popitem(last=False)
        if state != "dropped":
            self._queue.append(bundle)
        return bid

    def land_pending(self) -> None:
        """At a new slot: execute queued bundles in arrival order, each all-or-nothing."""
        queue, self._queue = self._queue, []
        for bundle in queue:
            if bundle.state == "doomed":
                bundle.state, bundle.err = "failed", {"injected": True}
                self.stats.failed += 1
                continue
            failure = self.ledger.execute_bundle(bundle.txs)
            if failure is None:
                bundle.state, bundle.landed_slot = "landed", self.ledger.slot
                self.stats.landed += 1
            else:
                bundle.state, bundle.err = "failed", {"index": failure[0], "err": failure[1]}
                self.stats.failed += 1

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _status(self, bundle: Bundle) -> str:
        if bundle.state == "landed":
            return "Landed"
        if bundle.state == "failed":
            return "Failed"
        if bundle.state == "dropped":
            return "Pending" if self.ledger.block_height <= bundle.expires_at else "Invalid"
        return "Pending"

    def inflight_status(self, bid: str) -> dict[str, Any]:
        bundle = self._bundles.get(bid)
        status = "Invalid" if bundle is None else self._status(bundle)
        landed = bundle.landed_slot if bundle is not None and status == "Landed" else None
        return {"bundle_id": bid, "status": status, "landed_slot": landed}

    def landed_status(self, bid: str) -> dict[str, Any] | None:
        bundle = self._bundles.get(bid)
        if bundle is None or bundle.landed_slot is None:
            return None
        return {
            "bundle_id": bid,
            "transactions": bundle.signatures,
            "slot": bundle.landed_slot,
            "confirmation_status": self.ledger.confirmation(bundle.landed_slot),
            "err": {"Ok": None},
        }

    def bundle(self, bid: str) -> Bundle | None:
        return self._bundles.get(bid)
