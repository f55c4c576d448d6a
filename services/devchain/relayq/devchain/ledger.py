"""The chain itself: LiteSVM plus what a cluster adds around it.

LiteSVM executes transactions but knows no slots, no recent-blockhash window and
keeps no status cache a client could query. The `Ledger` adds those, the way a
validator behaves as seen through its RPC:

- a slot counter advanced by `advance()`; block height equals the slot;
- a new blockhash every slot, each valid for `validity_slots` slots
  (`lastValidBlockHeight` = slot of issue + validity); LiteSVM's own check only
  knows the newest hash, so it is off and the window is enforced here;
- a signature history (the status cache): a signature seen before is rejected
  as `AlreadyProcessed`, a failed transaction that paid its fee is recorded
  with its error, one refused before execution is not recorded at all;
- all-or-nothing execution of a list of transactions (a bundle): every
  writable account is snapshot first and restored if any transaction fails;
- three views, as a cluster's commitment levels: `processed` (the newest
  slot), `confirmed` (one slot behind) and `finalized` (`finality_lag` slots
  behind). Block height, the latest blockhash and accounts are read at a view
  (`view_slot`); an account's earlier states come from a journal of the state
  each written account had before its first write of a slot, kept for the lag.
  Accounts written only through an address lookup table are not journaled
  (the relayer's transactions name theirs statically).

LiteSVM is not thread-safe: call a Ledger from one thread only (the event loop).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from solders.account import Account
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token import ID as TOKEN_PROGRAM_ID
from solders.token.state import Mint, TokenAccount
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from relayq.devchain.codec import error_json, ui_token_amount

SYSTEM_PROGRAM_ID = Pubkey.default()
TOKEN_ACCOUNT_LEN = 165
MINT_LEN = 82
# Slots after which a landed transaction counts as finalized (the cluster's 31+1 votes).
FINALIZED_DEPTH = 32
# How far back getSignatureStatuses looks without searchTransactionHistory (the status cache).
STATUS_CACHE_SLOTS = 300
MAX_RECORDS = 200_000
COMMITMENTS = ("processed", "confirmed", "finalized")


class Rejected(Exception):
    """Refused before execution: nothing changed and nothing was recorded.

    Attributes:
        err: the error in the RPC's JSON form (`"BlockhashNotFound"`, ...).
    """

    def __init__(self, err: Any) -> None:
        super().__init__(str(err))
        self.err = err


@dataclass
class TxRecord:
    """A transaction that was committed (succeeded, or failed after paying its fee).

    Attributes:
        signature: its first signature.
        slot: the slot it landed in.
        block_time: unix seconds of that slot.
        err: None on success, else the error in JSON form.
        fee: lamports charged.
        logs: program log lines.
        units: compute units consumed.
        tx: the transaction as sent.
        pre_balances, post_balances: lamports of each static account key.
        pre_token, post_token: RPC token-balance entries of its SPL token accounts.
    """

    signature: Signature
    slot: int
    block_time: int
    err: Any
    fee: int
    logs: list[str]
    units: int
    tx: VersionedTransaction
    pre_balances: list[int] = field(default_factory=list)
    post_balances: list[int] = field(default_factory=list)
    pre_token: list[dict[str, Any]] = field(default_factory=list)
    post_token: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Outcome:
    """What became of one executed transaction; `record` is None when it was not committed."""

    err: Any
    logs: list[str]
    units: int
    record: TxRecord | None


@dataclass
class LedgerStats:
    """Counters for tests (`GET /devchain/state`)."""

    succeeded: int = 0
    failed: int = 0
    rejected: int = 0


def writable_keys(tx: VersionedTransaction) -> list[Pubkey]:
    """The static account keys the message write-locks (derived from its header)."""
    msg = tx.message
    keys = msg.account_keys
    h = msg.header
    n, sig = len(keys), h.num_required_signatures
    ro_signed, ro_unsigned = h.num_readonly_signed_accounts, h.num_readonly_unsigned_accounts
    return [k for i, k in enumerate(keys) if i < sig - ro_signed or (sig <= i < n - ro_unsigned)]


class Ledger:
    """LiteSVM with slots, a blockhash window and a signature history."""

    def __init__(
        self,
        validity_slots: int = 150,
        genesis_hash: Hash | None = None,
        finality_lag: int = FINALIZED_DEPTH,
    ) -> None:
        self.svm = (
            LiteSVM().with_blockhash_check(False).with_transaction_history(0).with_sigverify(False)
        )
        self.validity_slots = validity_slots
        self.finality_lag = finality_lag
        # Per account, (slot, state before its first write in that slot), oldest first.
        self._journal: dict[Pubkey, list[tuple[int, Account | None]]] = {}
        self.genesis_hash = genesis_hash or Hash.hash(b"relayq-devchain")
        self.slot = 1
        self.stats = LedgerStats()
        self._blockhashes: OrderedDict[str, int] = OrderedDict()
        self._records: OrderedDict[Signature, TxRecord] = OrderedDict()
        self._decimals: dict[Pubkey, int] = {}
        self._start_slot(self.slot)

    # -- time ---------------------------------------------------------------
    def _start_slot(self, slot: int) -> None:
        self.svm.warp_to_slot(slot)
        clock = self.svm.get_clock()
        clock.unix_timestamp = int(time.time())
        self.svm.set_clock(clock)
        self.block_time = clock.unix_timestamp
        self.svm.expire_blockhash()
        self._blockhashes[str(self.svm.latest_blockhash())] = slot
        # Forget hashes long expired; keep some so isBlockhashValid can say "no" for them.
        while self._blockhashes:
            oldest, issued = next(iter(self._blockhashes.items()))
            if issued + 2 * self.validity_slots + 10 >= slot:
                break
            del self._blockhashes[oldest]

    def advance(self) -> None:
        """Move to the next slot: new clock, new blockhash."""
        self.slot += 1
        self._start_slot(self.slot)
        if self.slot % 256 == 0:
            self._forget_journal()

    # -- views ------------------------------------------------------------------
    def view_slot(self, commitment: str) -> int:
        """The newest slot a read at `commitment` sees (processed, confirmed, finalized)."""
        if commitment == "processed":
            return self.slot
        lag = 1 if commitment == "confirmed" else self.finality_lag
        return max(1, self.slot - lag)

    def block_height_at(self, commitment: str) -> int:
        return self.view_slot(commitment)

    def latest_blockhash_at(self, commitment: str) -> tuple[str, int]:
        """The newest blockhash a read at `commitment` sees, and its lastValidBlockHeight."""
        view = self.view_slot(commitment)
        for blockhash in reversed(self._blockhashes):
            issued = self._blockhashes[blockhash]
            if issued <= view:
                return blockhash, issued + self.validity_slots
        oldest = next(iter(self._blockhashes))
        return oldest, self._blockhashes[oldest] + self.validity_slots

    def account_at(self, key: Pubkey, commitment: str) -> Account | None:
        """The account as a read at `commitment` sees it (None: no account)."""
        view = self.view_slot(commitment)
        for written, before in self._journal.get(key, ()):
            if written > view:
                acct = before
                return None if acct is None or acct.lamports == 0 else acct
        return self.account(key)

    def token_account_at(self, key: Pubkey, commitment: str) -> TokenAccount | None:
        acct = self.account_at(key, commitment)
        if acct is None or acct.owner != TOKEN_PROGRAM_ID or len(acct.data) != TOKEN_ACCOUNT_LEN:
            return None
        return TokenAccount.from_bytes(bytes(acct.data))

    def _note_writes(self, keys: list[Pubkey]) -> None:
        """Journal the state of each key before its first write in this slot."""
        for key in keys:
            entries = self._journal.setdefault(key, [])
            if entries and entries[-1][0] == self.slot:
                continue
            entries.append((self.slot, self.svm.get_account(key)))
            horizon = self.slot - self.finality_lag - 1
            while len(entries) > 1 and entries[1][0] <= horizon:
                del entries[0]

    def _forget_journal(self) -> None:
        """Drop what no view can see any more."""
        horizon = self.slot - self.finality_lag - 1
        for key in [k for k, e in self._journal.items() if e[-1][0] <= horizon]:
            del self._journal[key]

    @property
    def block_height(self) -> int:
        return self.slot

    def latest_blockhash(self) -> tuple[str, int]:
        """The newest blockhash and its lastValidBlockHeight."""
        newest = next(reversed(self._blockhashes))
        return newest, self._blockhashes[newest] + self.validity_slots

    def last_valid_height(self, blockhash: str) -> int | None:
        issued = self._blockhashes.get(blockhash)
        return None if issued is None else issued + self.validity_slots

    def is_blockhash_valid(self, blockhash: str) -> bool:
        last = self.last_valid_height(blockhash)
        return last is not None and self.block_height <= last

    # -- accounts -------------------------------------------------------------
    def account(self, key: Pubkey) -> Account | None:
        acct = self.svm.get_account(key)
        # LiteSVM keeps restored-empty accounts; the RPC shows no account for 0 lamports.
        return None if acct is None or acct.lamports == 0 else acct

    def balance(self, key: Pubkey) -> int:
        return self.svm.get_balance(key) or 0

    def mint_decimals(self, mint: Pubkey) -> int | None:
        if mint not in self._decimals:
            acct = self.account(mint)
            if acct is None or acct.owner != TOKEN_PROGRAM_ID or len(acct.data) != MINT_LEN:
                return None
            self._decimals[mint] = Mint.from_bytes(bytes(acct.data)).decimals
        return self._decimals[mint]

    def token_account(self, key: Pubkey) -> TokenAccount | None:
        acct = self.account(key)
        if acct is None or acct.owner != TOKEN_PROGRAM_ID or len(acct.data) != TOKEN_ACCOUNT_LEN:
            return None
        return TokenAccount.from_bytes(bytes(acct.data))

    def set_account(self, key: Pubkey, account: Account) -> None:
        self._note_writes([key])
        self.svm.set_account(key, account)

    # -- transactions -----------------------------------------------------------
    def check(self, tx: VersionedTransaction, sig_verify: bool = True) -> None:
        """Refuse what a leader would drop before execution; raise Rejected."""
        if sig_verify and not all(tx.verify_with_results()):
            raise Rejected("SignatureFailure")
        if not self.is_blockhash_valid(str(tx.message.recent_blockhash)):
            raise Rejected("BlockhashNotFound")
        if tx.signatures[0] in self._records:
            raise Rejected("AlreadyProcessed")

    def execute(self, tx: VersionedTransaction, sig_verify: bool = True) -> Outcome:
        """Check and run one transaction, recording it if it was committed.

        `sig_verify=False` only for a transaction whose signatures were just verified.
        """
        try:
            self.check(tx, sig_verify=sig_verify)
        except Rejected:
            self.stats.rejected += 1
            raise
        outcome = self._run(tx)
        if outcome.record is not None:
            self._store(outcome.record)
        else:
            self.stats.rejected += 1
        return outcome

    def execute_bundle(self, txs: list[VersionedTransaction]) -> tuple[int, Any] | None:
        """Run all of `txs` in order, or none: on failure every written account is
        restored and nothing is recorded. Returns None, or (index, err) of the failure."""
        seen: set[Signature] = set()
        for i, tx in enumerate(txs):
            try:
                self.check(tx)
            except Rejected as exc:
                return i, exc.err
            if tx.signatures[0] in seen:
                return i, "AlreadyProcessed"
            seen.add(tx.signatures[0])
        snapshot: dict[Pubkey, Account | None] = {}
        for tx in txs:
            for key in writable_keys(tx):
                if key not in snapshot:
                    snapshot[key] = self.svm.get_account(key)
        records: list[TxRecord] = []
        for i, tx in enumerate(txs):
            outcome = self._run(tx)
            if outcome.err is not None or outcome.record is None:
                for key, acct in snapshot.items():
                    self.svm.set_account(key, acct or Account(0, b"", SYSTEM_PROGRAM_ID))
                return i, outcome.err
            records.append(outcome.record)
        for record in records:
            self._store(record)
        return None

    def simulate(self, tx: VersionedTransaction, sig_verify: bool) -> Outcome:
        """Run without committing anything; Rejected for pre-execution refusals."""
        self.check(tx, sig_verify=sig_verify)
        result = self.svm.simulate_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            meta = result.meta()
            return Outcome(
                error_json(result.err()), meta.logs(), meta.compute_units_consumed(), None
            )
        meta = result.meta()
        return Outcome(None, meta.logs(), meta.compute_units_consumed(), None)

    def _run(self, tx: VersionedTransaction) -> Outcome:
        keys = tx.message.account_keys
        programs = {keys[ix.program_id_index] for ix in tx.message.instructions}
        payer = keys[0]
        pre_balances, pre_token = self._balances(keys, programs)
        self._note_writes(writable_keys(tx))
        result = self.svm.send_transaction(tx)
        meta: TransactionMetadata
        if isinstance(result, FailedTransactionMetadata):
            err, meta = error_json(result.err()), result.meta()
            # Refused while loading (no fee charged): a validator drops it, records nothing.
            if self.balance(payer) == pre_balances[0]:
                return Outcome(err, meta.logs(), meta.compute_units_consumed(), None)
        else:
            err, meta = None, result
        post_balances, post_token = self._balances(keys, programs)
        record = TxRecord(
            signature=tx.signatures[0],
            slot=self.slot,
            block_time=self.block_time,
            err=err,
            fee=meta.fee(),
            logs=meta.logs(),
            units=meta.compute_units_consumed(),
            tx=tx,
            pre_balances=pre_balances,
            post_balances=post_balances,
            pre_token=pre_token,
            post_token=post_token,
        )
        return Outcome(err, record.logs, record.units, record)

    def _balances(
        self, keys: list[Pubkey], programs: set[Pubkey]
    ) -> tuple[list[int], list[dict[str, Any]]]:
        lamports: list[int] = []
        tokens: list[dict[str, Any]] = []
        for i, key in enumerate(keys):
            if key in programs:  # skip copying program binaries
                lamports.append(self.balance(key))
                continue
            acct = self.svm.get_account(key)
            lamports.append(0 if acct is None else acct.lamports)
            if acct is None or acct.owner != TOKEN_PROGRAM_ID:
                continue
            if len(acct.data) != TOKEN_ACCOUNT_LEN:
                continue
            state = TokenAccount.from_bytes(bytes(acct.data))
            decimals = self.mint_decimals(state.mint)
            if decimals is None:
                continue
            tokens.append({
                "accountIndex": i,
                "mint": str(state.mint),
                "owner": str(state.owner),
                "programId": str(TOKEN_PROGRAM_ID),
                "uiTokenAmount": ui_token_amount(state.amount, decimals),
            })  # fmt: skip
        return lamports, tokens

    def _store(self, record: TxRecord) -> None:
        self._records[record.signature] = record
        if record.err is None:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)

    # -- history ------------------------------------------------------------------
    def record(self, signature: Signature) -> TxRecord | None:
        return self._records.get(signature)

    def newest_first(self) -> Iterator[TxRecord]:
        """Every committed transaction still held, the newest first (account histories)."""
        return reversed(self._records.values())

    def status(
        self, signature: Signature, search_history: bool, at: int | None = None
    ) -> dict[str, Any] | None:
        """The RPC's getSignatureStatuses entry for a signature, or None if unknown,
        as a node at slot `at` (default: the newest) answers it."""
        at = self.slot if at is None else at
        rec = self._records.get(signature)
        if rec is None or rec.slot > at:
            return None
        if not search_history and rec.slot < at - STATUS_CACHE_SLOTS:
            return None
        depth = at - rec.slot
        if depth >= self.finality_lag:
            confirmations, level = None, "finalized"
        else:
            confirmations, level = depth, "confirmed" if depth > 0 else "processed"
        return {
            "slot": rec.slot,
            "confirmations": confirmations,
            "err": rec.err,
            "status": {"Ok": None} if rec.err is None else {"Err": rec.err},
            "confirmationStatus": level,
        }

    def confirmation(self, slot: int) -> str:
        depth = self.slot - slot
        if depth >= self.finality_lag:
            return "finalized"
        return "confirmed" if depth > 0 else "processed"

    @property
    def transaction_count(self) -> int:
        return self.stats.succeeded + self.stats.failed
