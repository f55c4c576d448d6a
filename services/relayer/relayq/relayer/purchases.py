"""Purchase records in MongoDB: the swap and transfer transactions, and the user's holdings.

A purchase is keyed by its task's id. Signed transaction bytes, signatures and
last valid block heights are written before anything is sent (ARCHITECTURE.md,
principle 2), so any later run can tell what reached the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from relayq.core.store import WRITE_CONCERN, now, with_transient_retry
from relayq.relayer.baskets import LAMPORTS_PER_SOL


class SwapState(StrEnum):
    SIGNED = "signed"  # written, maybe sent: look the signatures up before deciding
    LANDED = "landed"
    FAILED = "failed"
    # Some of its transactions landed, the rest expired: parked for review (landed, missing).
    PARTIAL = "partial"


class TransferState(StrEnum):
    SIGNED = "signed"  # written, maybe sent
    CONFIRMED = "confirmed"
    FAILED = "failed"


class RefundState(StrEnum):
    DECIDED = "decided"  # an operator ordered it; nothing signed yet
    SIGNED = "signed"  # written, maybe sent
    FINALIZED = "finalized"  # landed, and the chain's finalized view shows it succeeded
    FAILED = "failed"  # failed on chain at finalized: an operator decides again


@dataclass(frozen=True)
class PurchaseLeg:
    symbol: str
    mint: str
    decimals: int
    lamports: int
    amount: int


@dataclass(frozen=True)
class Purchase:
    """One purchase: who, what, and what was signed for it.

    Attributes:
        id: the purchase task's id.
        wallet: the buyer's wallet (base58); the tokens are held for it by the contract.
        basket: the basket id.
        lamports: the SOL paid, in lamports.
        legs: per token, the lamports spent and the base units bought.
        swap: transactions (base64), signatures, lastValidBlockHeight, bundleId,
            state (SwapState), slot, error.
        transfer: transaction (base64), signature, lastValidBlockHeight, signatures
            (every one ever signed, newest last), state (TransferState), slot, error;
            empty before the first signing.
        recorded: the purchase is in the user's history and holdings.
        resolution: an operator's decision on the purchase's latest parking
            (action, reason, operator, at, parkedAt, and what the action needs:
            the transfer signature and signings it was taken against); empty
            while none was made. `resolutions` in the record keeps every one.
        refund: the purchase's lamports going back to the buyer once an operator
            decided so: lamports, wallet, state (RefundState), and as for the
            transfer: transaction, signature, lastValidBlockHeight, signatures,
            slot, error; empty while no refund was decided. Once set, the
            transfer is never signed again (`put_transfer`).
    """

    id: str
    wallet: str
    basket: str
    lamports: int
    legs: list[PurchaseLeg]
    swap: dict[str, Any]
    transfer: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False
    created_at: datetime | None = None
    resolution: dict[str, Any] = field(default_factory=dict)
    refund: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str | None:
        """`delivered` (the tokens reached the contract), `refunded` (the lamports went back
        to the buyer, at finalized), or None while neither happened."""
        if self.transfer.get("state") == TransferState.CONFIRMED.value:
            return "delivered"
        if self.refund.get("state") == RefundState.FINALIZED.value:
            return "refunded"
        return None

    def to_public(self, chain: Mapping[str, str | None] | None = None) -> dict[str, Any]:
        """The client's view; `chain` maps a signature to what the cluster says of it now."""
        chain = chain or {}
        swap_sigs = list(self.swap.get("signatures", []))
        out: dict[str, Any] = {
            "wallet": self.wallet,
            "bundleId": self.basket,
            "solAmount": self.lamports / LAMPORTS_PER_SOL,
            "tokens": [
                {
                    "symbol": leg.symbol,
                    "mint": leg.mint,
                    "amount": str(leg.amount),
                    "decimals": leg.decimals,
                }
                for leg in self.legs
            ],
            "swap": {
                "state": self.swap.get("state"),
                "signatures": [{"signature": s, "chainState": chain.get(s)} for s in swap_sigs],
                "jitoBundleId": self.swap.get("bundleId"),
                "slot": self.swap.get("slot"),
                "error": self.swap.get("error"),
            },
            "transfer": None,
            "refund": None,
            "outcome": self.outcome,
            "recorded": self.recorded,
            "resolution": _public_resolution(self.resolution),
        }
        if self.transfer:
            sig = self.transfer.get("signature")
            out["transfer"] = {
                "state": self.transfer.get("state"),
                "signature": sig,
                "chainState": chain.get(sig) if sig else None,
                "signings": len(self.transfer.get("signatures", [])),
                "slot": self.transfer.get("slot"),
                "error": self.transfer.get("error"),
            }
        if self.refund:
            sig = self.refund.get("signature")
            out["refund"] = {
                "state": self.refund.get("state"),
                "solAmount": int(self.refund.get("lamports", self.lamports)) / LAMPORTS_PER_SOL,
                "wallet": self.refund.get("wallet", self.wallet),
                "signature": sig,
                "chainState": chain.get(sig) if sig else None,
                "signings": len(self.refund.get("signatures", [])),
                "slot": self.refund.get("slot"),
                "error": self.refund.get("error"),
            }
        return out

    def signatures(self) -> list[str]:
        sigs = list(self.swap.get("signatures", []))
        if self.transfer.get("signature"):
            sigs.append(self.transfer["signature"])
        if self.refund.get("signature"):
            sigs.append(self.refund["signature"])
        return sigs


class PurchaseStore:
    """Collections `purchases` and `user_purchases` (the history; holdings are its sums)."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        db = client[database]
        majority = WRITE_CONCERN
        self.purchases: AsyncCollection[dict[str, Any]] = db.get_collection(
            "purchases", write_concern=majority
        )
        self.history: AsyncCollection[dict[str, Any]] = db.get_collection(
            "user_purchases", write_concern=majority
        )

    async def ensure_indexes(self) -> None:
        """A signature belongs to one purchase; holdings are read by wallet."""
        # A second purchase can never record a swap or transfer signature that
        # another purchase holds (multikey: no two documents share an element).
        await self.purchases.create_index(
            [("swap.signatures", ASCENDING)], unique=True, name="swap_signatures_unique"
        )
        await self.purchases.create_index(
            [("transfer.signature", ASCENDING)],
            unique=True,
            name="transfer_signature_unique",
            partialFilterExpression={"transfer.signature": {"$type": "string"}},
        )
        await self.purchases.create_index(
            [("refund.signature", ASCENDING)],
            unique=True,
            name="refund_signature_unique",
            partialFilterExpression={"refund.signature": {"$type": "string"}},
        )
        await self.history.create_index([("wallet", ASCENDING)], name="wallet")
        # Reconciliation reads a window of purchases by creation time.
        await self.purchases.create_index([("created_at", ASCENDING)], name="created_at")

    async def insert(self, purchase: Purchase) -> None:
        doc = {
            "_id": purchase.id,
            "wallet": purchase.wallet,
            "basket": purchase.basket,
            "lamports": purchase.lamports,
            "legs": [leg.__dict__ for leg in purchase.legs],
            "swap": purchase.swap,
            "transfer": purchase.transfer,
            "recorded": False,
            "created_at": now(),
        }
        await with_transient_retry(lambda: self.purchases.insert_one(doc))

    async def get(self, purchase_id: str) -> Purchase | None:
        doc = await with_transient_retry(lambda: self.purchases.find_one({"_id": purchase_id}))
        return _purchase(doc) if doc is not None else None

    async def delete_unsent(self, purchase_id: str) -> None:
        """Drop a purchase whose swap was never sent (it lost an idempotency race)."""
        await with_transient_retry(lambda: self.purchases.delete_one({"_id": purchase_id}))

    async def settle_swap(
        self, purchase_id: str, state: SwapState, **fields: Any
    ) -> Purchase | None:
        """Record the swap's outcome once; None when it was already settled.

        Compare-and-set on the state read (`signed`); a swap's signatures never
        change after they are written, so the state alone names what was read.
        """
        sets = {"swap.state": state.value, "swap.settledAt": now()}
        sets.update({f"swap.{k}": v for k, v in fields.items()})
        doc = await with_transient_retry(
            lambda: self.purchases.find_one_and_update(
                {"_id": purchase_id, "swap.state": SwapState.SIGNED.value},
                {"$set": sets},
                return_document=ReturnDocument.AFTER,
            )
        )
        return _purchase(doc) if doc is not None else None

    async def swap_sent(self, purchase_id: str, bundle_id: str) -> None:
        """Note the bundle id of the latest send, while the swap is still undecided."""
        await with_transient_retry(
            lambda: self.purchases.update_one(
                {"_id": purchase_id, "swap.state": SwapState.SIGNED.value},
                {"$set": {"swap.bundleId": bundle_id}},
            )
        )

    async def put_transfer(
        self, purchase_id: str, expected_signature: str | None, transfer: Mapping[str, Any]
    ) -> bool:
        """Write a newly signed transfer, if the stored one is still `expected_signature`.

        Compare-and-set, so two runs that both signed cannot both persist (and send);
        never once a refund was decided, so a run that outlived its lease cannot deliver
        what is being refunded.
        """
        result = await with_transient_retry(
            lambda: self.purchases.update_one(
                {
                    "_id": purchase_id,
                    "transfer.signature": expected_signature,
                    "refund": {"$exists": False},
                },
                {"$set": {"transfer": dict(transfer)}},
            )
        )
        return bool(result.modified_count)

    async def settle_transfer(
        self,
        purchase_id: str,
        read: Mapping[str, Any],
        state: TransferState,
        **fields: Any,
    ) -> Purchase | None:
        """Record the transfer's outcome, if it is still the one this run read.

        Compare-and-set on the signature and state in `read` (the transfer as
        the caller read it): a stale run whose lease expired cannot write
        `failed` over `confirmed`, nor settle a signing that was replaced.
        Returns the purchase as stored, or None when another writer got there
        first: read the purchase again and act on what it says.
        """
        sets = {"transfer.state": state.value}
        sets.update({f"transfer.{k}": v for k, v in fields.items()})
        doc = await with_transient_retry(
            lambda: self.purchases.find_one_and_update(
                {
                    "_id": purchase_id,
                    "transfer.signature": read.get("signature"),
                    "transfer.state": read.get("state"),
                },
                {"$set": sets},
                return_document=ReturnDocument.AFTER,
            )
        )
        return _purchase(doc) if doc is not None else None

    async def resolve(self, purchase_id: str, resolution: Mapping[str, Any]) -> Purchase | None:
        """Record an operator's decision on one parking of the purchase, once.

        Compare-and-set on the parking (`resolution.parkedAt`): two operators
        resolving the same parking cannot both act. None when the purchase is
        missing or this parking was already resolved.
        """
        entry = dict(resolution)
        doc = await with_transient_retry(
            lambda: self.purchases.find_one_and_update(
                {"_id": purchase_id, "resolution.parkedAt": {"$ne": entry["parkedAt"]}},
                {"$set": {"resolution": entry}, "$push": {"resolutions": entry}},
                return_document=ReturnDocument.AFTER,
            )
        )
        return _purchase(doc) if doc is not None else None

    async def decide_refund(
        self, purchase: Purchase, resolution: Mapping[str, Any]
    ) -> Purchase | None:
        """Record an operator's refund decision on one parking, once, and order the refund.

        Compare-and-set on the parking (as `resolve`), on the transfer as the caller
        read it (checked past landing: a run that signed since makes this None), and
        on the refund as read: the first decision writes the refund (`decided`), a
        later one (after the refund was parked again) leaves it as it stands.
        """
        entry = dict(resolution)
        query: dict[str, Any] = {
            "_id": purchase.id,
            "resolution.parkedAt": {"$ne": entry["parkedAt"]},
            "transfer.signature": purchase.transfer.get("signature"),
            "transfer.state": purchase.transfer.get("state"),
        }
        sets: dict[str, Any] = {"resolution": entry}
        if purchase.refund:
            query["refund.signature"] = purchase.refund.get("signature")
        else:
            query["refund"] = {"$exists": False}
            sets["refund"] = {
                "state": RefundState.DECIDED.value,
                "lamports": purchase.lamports,
                "wallet": purchase.wallet,
                "signatures": [],
                "decidedAt": now(),
            }
        doc = await with_transient_retry(
            lambda: self.purchases.find_one_and_update(
                query,
                {"$set": sets, "$push": {"resolutions": entry}},
                return_document=ReturnDocument.AFTER,
            )
        )
        return _purchase(doc) if doc is not None else None

    async def put_refund(
        self, purchase_id: str, expected_signature: str | None, refund: Mapping[str, Any]
    ) -> bool:
        """Write a newly signed refund, if the stored one is still `expected_signature`
        (compare-and-set: two runs that both signed cannot both persist and send)."""
        result = await with_transient_retry(
            lambda: self.purchases.update_one(
                {"_id": purchase_id, "refund.signature": expected_signature},
                {"$set": {"refund": dict(refund)}},
            )
        )
        return bool(result.modified_count)

    async def settle_refund(
        self, purchase_id: str, read: Mapping[str, Any], state: RefundState, **fields: Any
    ) -> Purchase | None:
        """Record the refund's outcome, if it is still the signing and state this run read;
        None when another writer got there first."""
        sets = {"refund.state": state.value}
        sets.update({f"refund.{k}": v for k, v in fields.items()})
        doc = await with_transient_retry(
            lambda: self.purchases.find_one_and_update(
                {
                    "_id": purchase_id,
                    "refund.signature": read.get("signature"),
                    "refund.state": read.get("state"),
                },
                {"$set": sets},
                return_document=ReturnDocument.AFTER,
            )
        )
        return _purchase(doc) if doc is not None else None

    async def confirm_by_evidence(
        self, purchase_id: str, read: Mapping[str, Any], signature: str, slot: int
    ) -> Purchase | None:
        """Record `signature` (verified on chain by the caller) as the purchase's confirmed
        transfer, if the transfer is still the one the caller read; None otherwise."""
        signings = list(read.get("signatures", []))
        confirmed = {
            **{k: v for k, v in read.items() if k != "transaction"},
            "state": TransferState.CONFIRMED.value,
            "signature": signature,
            "slot": slot,
            "signatures": signings if signature in signings else [*signings, signature],
            "confirmedAt": now(),
            "evidence": "operator",
        }
        doc = await with_transient_retry(
            lambda: self.purchases.find_one_and_update(
                {
                    "_id": purchase_id,
                    "transfer.signature": read.get("signature"),
                    "transfer.state": read.get("state"),
                    "refund": {"$exists": False},
                },
                {"$set": {"transfer": confirmed}},
                return_document=ReturnDocument.AFTER,
            )
        )
        return _purchase(doc) if doc is not None else None

    async def record(self, purchase: Purchase) -> bool:
        """Add the purchase to the user's history (so its holdings), once; False if it was."""
        entry = {
            "_id": purchase.id,
            "wallet": purchase.wallet,
            "basket": purchase.basket,
            "lamports": purchase.lamports,
            "tokens": {leg.mint: leg.amount for leg in purchase.legs},
            "swapSignatures": purchase.swap.get("signatures", []),
            "transferSignature": purchase.transfer.get("signature"),
            "at": now(),
        }
        fresh = True
        try:
            await with_transient_retry(lambda: self.history.insert_one(entry))
        except DuplicateKeyError:
            fresh = False
        await with_transient_retry(
            lambda: self.purchases.update_one({"_id": purchase.id}, {"$set": {"recorded": True}})
        )
        return fresh

    async def holding(self, wallet: str) -> dict[str, int]:
        """Base units held for a wallet, per mint: the sum of its recorded purchases.

        Derived from the insert-only history rather than kept by `$inc`, so
        concurrent records never contend on one document and a replayed record
        never counts twice.
        """
        totals: dict[str, int] = {}
        async for entry in self.history.find({"wallet": wallet}, {"tokens": 1}):
            for mint, amount in entry.get("tokens", {}).items():
                totals[mint] = totals.get(mint, 0) + int(amount)
        return totals

    async def created_between(self, start: datetime, end: datetime) -> list[Purchase]:
        """Purchases created in [start, end), oldest first (a reconciliation window)."""
        query = {"created_at": {"$gte": start, "$lt": end}}
        cursor = self.purchases.find(query).sort("created_at", ASCENDING)
        return [_purchase(doc) async for doc in cursor]

    async def get_many(self, purchase_ids: list[str]) -> dict[str, Purchase]:
        """The purchases of these ids that exist, by id."""
        if not purchase_ids:
            return {}
        cursor = self.purchases.find({"_id": {"$in": purchase_ids}})
        return {doc["_id"]: _purchase(doc) async for doc in cursor}


def _purchase(doc: Mapping[str, Any]) -> Purchase:
    return Purchase(
        id=doc["_id"],
        wallet=doc["wallet"],
        basket=doc["basket"],
        lamports=int(doc["lamports"]),
        legs=[PurchaseLeg(**leg) for leg in doc["legs"]],
        swap=dict(doc.get("swap") or {}),
        transfer=dict(doc.get("transfer") or {}),
        recorded=bool(doc.get("recorded", False)),
        created_at=doc.get("created_at"),
        resolution=dict(doc.get("resolution") or {}),
        refund=dict(doc.get("refund") or {}),
    )


def _public_resolution(resolution: Mapping[str, Any]) -> dict[str, Any] | None:
    if not resolution:
        return None
    at = resolution.get("at")
    return {
        "action": resolution.get("action"),
        "reason": resolution.get("reason"),
        "operator": resolution.get("operator"),
        "at": at.isoformat().replace("+00:00", "Z") if isinstance(at, datetime) else at,
        "parkedAt": resolution.get("parkedAt"),
        "transferSignature": resolution.get("transferSignature"),
        "refundSignature": resolution.get("refundSignature"),
    }
