"""The Solana JSON-RPC calls the relayer makes, through solana-py's AsyncClient.

Every call is timed and counted; transport errors, timeouts and HTTP errors
become ChainUnavailable (retry later), JSON-RPC error answers ChainRejected.
Reads are retried here with backoff; a send is not, because the caller's
protocol decides when to send again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from relayq.relayer.chain.errors import ChainRejected, ChainUnavailable
from relayq.relayer.chain.metrics import CHAIN_REQUEST_SECONDS, CHAIN_REQUESTS
from relayq.relayer.chain.retrying import with_retries
from relayq.relayer.memo import MEMO_PROGRAM_ID

T = TypeVar("T")


@dataclass(frozen=True)
class Blockhash:
    """A recent blockhash and the last block height at which a transaction using it can land."""

    value: Hash
    last_valid_block_height: int


@dataclass(frozen=True)
class FinalizedHeight:
    """The block height at the finalized view, and that view's slot (one answer)."""

    height: int
    slot: int


# A node that keeps no transaction history answers a history search with this code.
HISTORY_NOT_AVAILABLE = -32011


@dataclass(frozen=True)
class SignatureState:
    """What the cluster knows of a signature.

    Attributes:
        slot: the slot it was processed in.
        error: the transaction error, None when it succeeded.
        confirmation: processed, confirmed or finalized.
    """

    slot: int
    error: str | None
    confirmation: str

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def confirmed(self) -> bool:
        return self.confirmation in ("confirmed", "finalized")


class SolanaRpc:
    """The RPC calls of the relayer, on one pooled HTTP client."""

    def __init__(self, url: str, timeout_seconds: float = 5.0) -> None:
        self.url = url
        self.client = AsyncClient(url, commitment=Confirmed, timeout=timeout_seconds)

    async def close(self) -> None:
        await self.client.close()

    async def _call(self, method: str, op: Callable[[], Awaitable[T]]) -> T:
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            return await op()
        except RPCException as exc:
            outcome = "error"
            raise _rejected(exc) from exc
        except (SolanaRpcException, TimeoutError, OSError) as exc:
            outcome = "unavailable"
            raise ChainUnavailable(f"solana rpc {method}: {exc}") from exc
        finally:
            CHAIN_REQUESTS.labels(service="rpc", method=method, outcome=outcome).inc()
            CHAIN_REQUEST_SECONDS.labels(service="rpc", method=method).observe(
                time.perf_counter() - t0
            )

    async def _read(self, method: str, op: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(lambda: self._call(method, op))

    async def latest_blockhash(self) -> Blockhash:
        resp = await self._read("getLatestBlockhash", lambda: self.client.get_latest_blockhash())
        return Blockhash(resp.value.blockhash, resp.value.last_valid_block_height)

    async def block_height(self) -> int:
        resp = await self._read("getBlockHeight", lambda: self.client.get_block_height())
        return int(resp.value)

    async def finalized_height(self) -> FinalizedHeight:
        """Block height and slot at `finalized`: what no fork can take back.

        Read in one answer (getEpochInfo), so the slot is the one that height was seen at,
        even behind a load balancer.
        """
        resp = await self._read(
            "getEpochInfo", lambda: self.client.get_epoch_info(commitment=Finalized)
        )
        return FinalizedHeight(int(resp.value.block_height), int(resp.value.absolute_slot))

    async def keeps_history(self) -> bool:
        """Whether the node answers history searches (False: it answers -32011).

        Without history a landed transaction older than the status cache looks unknown,
        and a transfer could be signed twice.
        """
        probe = [Signature(bytes(64))]
        try:
            await self._read(
                "getSignatureStatuses",
                lambda: self.client.get_signature_statuses(probe, search_transaction_history=True),
            )
        except ChainRejected as exc:
            # solders parses this error into a fieldless enum that carries no code.
            if exc.code == HISTORY_NOT_AVAILABLE or "TransactionHistoryNotAvailable" in str(exc):
                return False
            raise
        return True

    async def balance(self, owner: Pubkey) -> int:
        resp = await self._read("getBalance", lambda: self.client.get_balance(owner))
        return int(resp.value)

    async def token_balance(self, account: Pubkey) -> int:
        """Base units held by a token account; 0 when the account does not exist."""

        async def op() -> int:
            try:
                resp = await self.client.get_token_account_balance(account)
            except RPCException as exc:
                if (
                    "could not find account" in str(exc).lower()
                    or "invalid param" in str(exc).lower()
                ):
                    return 0
                raise
            return int(resp.value.amount)

        return await self._read("getTokenAccountBalance", op)

    async def account_data(self, account: Pubkey) -> bytes | None:
        """An account's data, None when it does not exist."""

        async def op() -> bytes | None:
            resp = await self.client.get_account_info(account)
            return None if resp.value is None else bytes(resp.value.data)

        return await self._read("getAccountInfo", op)

    async def statuses(self, signatures: Sequence[Signature]) -> list[SignatureState | None]:
        """The cluster's knowledge of each signature (None: unknown), history included."""
        return (await self.statuses_seen(signatures))[1]

    async def statuses_seen(
        self, signatures: Sequence[Signature]
    ) -> tuple[int, list[SignatureState | None]]:
        """`statuses`, with the slot the answering node had reached (its context.slot).

        An unknown signature means "not landed" only from a node that has seen at
        least as far as the caller's evidence: compare this slot with it.
        """

        async def op() -> tuple[int, list[SignatureState | None]]:
            resp = await self.client.get_signature_statuses(
                list(signatures), search_transaction_history=True
            )
            out: list[SignatureState | None] = []
            for status in resp.value:
                if status is None:
                    out.append(None)
                    continue
                level = status.confirmation_status
                out.append(
                    SignatureState(
                        slot=status.slot,
                        error=None if status.err is None else str(status.err),
                        confirmation=_confirmation(level),
                    )
                )
            return int(resp.context.slot), out

        return await self._read("getSignatureStatuses", op)

    async def send(self, tx: VersionedTransaction) -> Signature:
        """Send signed bytes once. The caller looks the signature up rather than trusting this."""

        async def op() -> Signature:
            resp = await self.client.send_raw_transaction(
                bytes(tx), TxOpts(skip_preflight=True, max_retries=0)
            )
            return resp.value

        return await self._call("sendTransaction", op)

    async def signatures_for_address(
        self,
        address: Pubkey,
        *,
        before: Signature | None = None,
        limit: int = 1000,
        finalized: bool = True,
    ) -> list[HistoryEntry]:
        """One page of an address's history, newest first (getSignaturesForAddress)."""
        commitment = Finalized if finalized else Confirmed

        async def op() -> list[HistoryEntry]:
            resp = await self.client.get_signatures_for_address(
                address, before=before, limit=limit, commitment=commitment
            )
            return [
                HistoryEntry(e.signature, e.slot, e.block_time, e.err is None, e.memo)
                for e in resp.value
            ]

        return await self._read("getSignaturesForAddress", op)

    async def transaction(
        self, signature: Signature, *, finalized: bool = True
    ) -> LandedTransaction | None:
        """A landed transaction's memos and token balance changes; None if not seen at that
        commitment."""
        commitment = Finalized if finalized else Confirmed

        async def op() -> LandedTransaction | None:
            resp = await self.client.get_transaction(
                signature, "base64", commitment, max_supported_transaction_version=0
            )
            found = resp.value
            if found is None or found.transaction.meta is None:
                return None
            tx = found.transaction.transaction
            meta = found.transaction.meta
            if not isinstance(tx, VersionedTransaction):
                raise ChainRejected(f"getTransaction {signature}: not a binary transaction")
            keys = list(tx.message.account_keys)
            loaded = meta.loaded_addresses
            if loaded is not None:
                keys += [*loaded.writable, *loaded.readonly]
            deltas: dict[Pubkey, TokenDelta] = {}
            for sign, balances in ((-1, meta.pre_token_balances), (1, meta.post_token_balances)):
                for b in balances or []:
                    key = keys[b.account_index]
                    prev = deltas.get(key, TokenDelta(str(b.mint), 0))
                    deltas[key] = TokenDelta(
                        str(b.mint), prev.amount + sign * int(b.ui_token_amount.amount)
                    )
            memos = [
                bytes(ix.data).decode("utf-8", errors="replace")
                for ix in tx.message.instructions
                if keys[ix.program_id_index] == MEMO_PROGRAM_ID
            ]
            lamports = {
                key: int(post) - int(pre)
                for key, pre, post in zip(keys, meta.pre_balances, meta.post_balances, strict=False)
                if post != pre
            }
            return LandedTransaction(
                str(signature), found.slot, found.block_time, meta.err is None, memos, deltas,
                lamports,
            )  # fmt: skip

        return await self._read("getTransaction", op)


@dataclass(frozen=True)
class HistoryEntry:
    """One transaction of an account's history: signature, slot, block time (Unix seconds,
    None when the node does not know it), whether it succeeded, and its memo field."""

    signature: Signature
    slot: int
    block_time: int | None
    succeeded: bool
    memo: str | None


@dataclass(frozen=True)
class TokenDelta:
    """How a token account's balance of `mint` changed in one transaction (base units)."""

    mint: str
    amount: int


@dataclass(frozen=True)
class LandedTransaction:
    """What reconciliation reads of a landed transaction.

    Attributes:
        memos: the data of each Memo instruction, in order.
        token_deltas: per token account, its change; accounts it did not change
            have a zero amount or are absent.
        lamport_deltas: per account whose SOL balance changed, the change in lamports
            (fees included: the fee payer's change is its spending plus the fee).
    """

    signature: str
    slot: int
    block_time: int | None
    succeeded: bool
    memos: list[str]
    token_deltas: dict[Pubkey, TokenDelta]
    lamport_deltas: dict[Pubkey, int] = field(default_factory=dict)


def _confirmation(level: Any) -> str:
    if level is None:
        return "processed"
    text = str(level).rsplit(".", 1)[-1].lower()
    return text if text in ("processed", "confirmed", "finalized") else "processed"


def _rejected(exc: RPCException) -> ChainRejected:
    err = exc.args[0] if exc.args else None
    code = getattr(err, "code", None)
    message = getattr(err, "message", None) or str(exc)
    data = getattr(err, "data", None)
    return ChainRejected(f"solana rpc: {message}", code=code, data=data)
