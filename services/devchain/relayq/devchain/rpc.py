"""Solana JSON-RPC methods over the devchain ledger, answered as a validator answers them.

Methods: getHealth, getVersion, getGenesisHash, getSlot, getBlockHeight,
getTransactionCount, getEpochInfo, getLatestBlockhash, isBlockhashValid,
getMinimumBalanceForRentExemption, getFeeForMessage, getRecentPrioritizationFees,
getBalance, getAccountInfo, getMultipleAccounts (base64, base58, jsonParsed for
SPL mints and token accounts), getTokenAccountBalance, getTokenSupply,
getTokenAccountsByOwner (by mint or program id), getSignatureStatuses,
getSignaturesForAddress (account history with memos, `history.py`),
getTransaction (json, jsonParsed with partially decoded instructions, base64,
base58; meta with fee, balances and token balances), sendTransaction (base58
default, base64; preflight or skipPreflight), simulateTransaction, requestAirdrop.
Anything else is -32601. Preflight failures are -32002 with the simulation
result as `data`; a bad signature is -32003; bad input -32602.

Reads honour `commitment` (default `finalized`, as a validator's): getSlot,
getBlockHeight, getEpochInfo, getLatestBlockhash, getBalance, getAccountInfo,
getMultipleAccounts and getTokenAccountBalance answer from the ledger's view
at that level (processed: the newest slot; confirmed: one behind; finalized:
`--finality-lag` slots behind), with that view's slot as `context.slot`.
getTransaction, like the validator, finds a transaction only once it reaches
the requested commitment and refuses `processed`. Statuses move processed ->
confirmed (next slot) -> finalized (the lag later); their `context.slot` is
the newest slot. A node without transaction history (fault `historyOff`)
answers -32011 to getSignatureStatuses with `searchTransactionHistory`; one
behind (fault `statusLagSlots`) answers it from an older slot.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.token import ID as TOKEN_PROGRAM_ID
from solders.token.state import Mint, TokenAccount
from solders.transaction import Transaction, VersionedTransaction

from relayq.devchain.codec import (
    DecodeError,
    decode_transaction,
    error_text,
    ui_token_amount,
)
from relayq.devchain.faults import Faults
from relayq.devchain.history import signatures_for_address
from relayq.devchain.ledger import (
    COMMITMENTS,
    MINT_LEN,
    TOKEN_ACCOUNT_LEN,
    Ledger,
    Rejected,
)
from relayq.devchain.responses import (
    RpcError,
    encode_account,
    encode_transaction,
    invalid,
    simulation_result,
    transaction_meta,
    with_blockhash,
)

API_VERSION = "2.2.16"
FEATURE_SET = 3294202862
SLOTS_PER_EPOCH = 432_000
MAX_MULTIPLE_ACCOUNTS = 100
MAX_SIGNATURE_STATUSES = 256
MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


def _pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise invalid("Invalid params: expected a base-58 public key string")
    try:
        return Pubkey.from_string(value)
    except ValueError:
        raise invalid("Invalid param: Invalid") from None


def _config(params: list[Any], index: int) -> dict[str, Any]:
    value = params[index] if len(params) > index else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"Invalid params: parameter {index} must be an object")
    return value


def _commitment(params: list[Any], index: int) -> str:
    """The `commitment` of the config object at `index`; finalized when absent."""
    value = _config(params, index).get("commitment", "finalized")
    if value not in COMMITMENTS:
        raise invalid(f"Invalid params: commitment must be one of {', '.join(COMMITMENTS)}")
    return str(value)


def _arg(params: list[Any], index: int, name: str) -> Any:
    if len(params) <= index:
        raise invalid(f"Invalid params: missing `{name}`")
    return params[index]


@dataclass
class SolanaRpc:
    """The method table of the Solana RPC."""

    ledger: Ledger
    faults: Faults
    faucet: Keypair
    dropped_transactions: int = 0
    _airdrops: int = 0

    def __post_init__(self) -> None:
        self.methods: dict[str, Callable[[list[Any]], Any]] = {
            name[len("m_") :]: getattr(self, name) for name in dir(self) if name.startswith("m_")
        }

    def call(self, method: str, params: list[Any]) -> Any:
        handler = self.methods.get(method)
        if handler is None:
            raise RpcError(-32601, "Method not found")
        return handler(params)

    def _ctx(self, value: Any, slot: int | None = None) -> dict[str, Any]:
        at = self.ledger.slot if slot is None else slot
        return {"context": {"slot": at, "apiVersion": API_VERSION}, "value": value}

    def _at(self, value: Any, commitment: str) -> dict[str, Any]:
        """An answer read at `commitment`: its context is that view's slot."""
        return self._ctx(value, self.ledger.view_slot(commitment))

    # -- cluster --------------------------------------------------------------
    def m_getHealth(self, params: list[Any]) -> str:
        return "ok"

    def m_getVersion(self, params: list[Any]) -> dict[str, Any]:
        return {"solana-core": API_VERSION, "feature-set": FEATURE_SET}

    def m_getGenesisHash(self, params: list[Any]) -> str:
        return str(self.ledger.genesis_hash)

    def m_getSlot(self, params: list[Any]) -> int:
        return self.ledger.view_slot(_commitment(params, 0))

    def m_getBlockHeight(self, params: list[Any]) -> int:
        return self.ledger.block_height_at(_commitment(params, 0))

    def m_getTransactionCount(self, params: list[Any]) -> int:
        return self.ledger.transaction_count

    def m_getEpochInfo(self, params: list[Any]) -> dict[str, Any]:
        commitment = _commitment(params, 0)
        slot = self.ledger.view_slot(commitment)
        return {
            "absoluteSlot": slot,
            "blockHeight": self.ledger.block_height_at(commitment),
            "epoch": slot // SLOTS_PER_EPOCH,
            "slotIndex": slot % SLOTS_PER_EPOCH,
            "slotsInEpoch": SLOTS_PER_EPOCH,
            "transactionCount": self.ledger.transaction_count,
        }

    def m_getLatestBlockhash(self, params: list[Any]) -> dict[str, Any]:
        commitment = _commitment(params, 0)
        blockhash, last_valid = self.ledger.latest_blockhash_at(commitment)
        return self._at({"blockhash": blockhash, "lastValidBlockHeight": last_valid}, commitment)

    def m_isBlockhashValid(self, params: list[Any]) -> dict[str, Any]:
        value = _arg(params, 0, "blockhash")
        if not isinstance(value, str):
            raise invalid("Invalid params: blockhash must be a string")
        try:
            Hash.from_string(value)
        except Exception:  # solders' ParseHashError
            raise invalid("Invalid param: Invalid") from None
        return self._ctx(self.ledger.is_blockhash_valid(value))

    def m_getMinimumBalanceForRentExemption(self, params: list[Any]) -> int:
        size = _arg(params, 0, "dataLength")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise invalid("Invalid params: dataLength must be a non-negative integer")
        return self.ledger.svm.minimum_balance_for_rent_exemption(size)

    def m_getFeeForMessage(self, params: list[Any]) -> dict[str, Any]:
        raw = _arg(params, 0, "message")
        try:
            msg = Message.from_bytes(base64.b64decode(raw, validate=True))
        except Exception:
            raise invalid("Invalid params: message must be a base64 encoded message") from None
        return self._ctx(5000 * msg.header.num_required_signatures)

    def m_getRecentPrioritizationFees(self, params: list[Any]) -> list[Any]:
        return []

    # -- accounts -------------------------------------------------------------
    def m_getBalance(self, params: list[Any]) -> dict[str, Any]:
        commitment = _commitment(params, 1)
        acct = self.ledger.account_at(_pubkey(_arg(params, 0, "pubkey")), commitment)
        return self._at(0 if acct is None else acct.lamports, commitment)

    def _account_value(self, key: Pubkey, config: dict[str, Any]) -> dict[str, Any] | None:
        acct = self.ledger.account_at(key, _commitment([config], 0))
        return (
            None
            if acct is None
            else encode_account(self.ledger, acct, config.get("encoding", "base64"))
        )

    def m_getAccountInfo(self, params: list[Any]) -> dict[str, Any]:
        key = _pubkey(_arg(params, 0, "pubkey"))
        value = self._account_value(key, _config(params, 1))
        return self._at(value, _commitment(params, 1))

    def m_getMultipleAccounts(self, params: list[Any]) -> dict[str, Any]:
        keys = _arg(params, 0, "pubkeys")
        if not isinstance(keys, list) or len(keys) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        config = _config(params, 1)
        values = [self._account_value(_pubkey(k), config) for k in keys]
        return self._at(values, _commitment(params, 1))

    def m_getTokenAccountBalance(self, params: list[Any]) -> dict[str, Any]:
        commitment = _commitment(params, 1)
        state = self.ledger.token_account_at(_pubkey(_arg(params, 0, "pubkey")), commitment)
        decimals = None if state is None else self.ledger.mint_decimals(state.mint)
        if state is None or decimals is None:
            raise invalid("Invalid param: not a Token account")
        return self._at(ui_token_amount(state.amount, decimals), commitment)

    def m_getTokenSupply(self, params: list[Any]) -> dict[str, Any]:
        acct = self.ledger.account(_pubkey(_arg(params, 0, "pubkey")))
        if acct is None or acct.owner != TOKEN_PROGRAM_ID or len(acct.data) != MINT_LEN:
            raise invalid("Invalid param: not a Token mint")
        mint = Mint.from_bytes(bytes(acct.data))
        return self._ctx(ui_token_amount(mint.supply, mint.decimals))

    def m_getTokenAccountsByOwner(self, params: list[Any]) -> dict[str, Any]:
        owner = _pubkey(_arg(params, 0, "owner"))
        selector = _arg(params, 1, "filter")
        if not isinstance(selector, dict) or len(selector) != 1:
            raise invalid('Invalid params: filter must be {"mint": ..} or {"programId": ..}')
        mint: Pubkey | None = None
        if "mint" in selector:
            mint = _pubkey(selector["mint"])
        elif _pubkey(selector.get("programId")) != TOKEN_PROGRAM_ID:
            raise invalid("Invalid param: unrecognized Token program id")
        config = _config(params, 2)
        encoding = config.get("encoding", "base64")
        found = []
        for key, acct in self.ledger.svm.get_program_accounts(TOKEN_PROGRAM_ID):
            if len(acct.data) != TOKEN_ACCOUNT_LEN or acct.lamports == 0:
                continue
            state = TokenAccount.from_bytes(bytes(acct.data))
            if state.owner == owner and (mint is None or state.mint == mint):
                found.append(
                    {"pubkey": str(key), "account": encode_account(self.ledger, acct, encoding)}
                )
        return self._ctx(found)

    # -- transactions -----------------------------------------------------------
    def m_getSignatureStatuses(self, params: list[Any]) -> dict[str, Any]:
        sigs = _arg(params, 0, "signatures")
        if not isinstance(sigs, list) or len(sigs) > MAX_SIGNATURE_STATUSES:
            raise invalid(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
        search = bool(_config(params, 1).get("searchTransactionHistory", False))
        if search and self.faults.history_off:
            raise RpcError(-32011, "Transaction history is not available from this node")
        at = max(1, self.ledger.slot - self.faults.status_lag_slots)
        return self._ctx([self.ledger.status(self._signature(s), search, at) for s in sigs], at)

    @staticmethod
    def _signature(value: Any) -> Signature:
        try:
            return Signature.from_string(value)
        except (ValueError, TypeError):
            raise invalid("Invalid param: Invalid") from None

    def m_getTransaction(self, params: list[Any]) -> dict[str, Any] | None:
        sig = self._signature(_arg(params, 0, "signature"))
        config = _config(params, 1)
        commitment = config.get("commitment", "finalized")
        if commitment not in ("confirmed", "finalized"):
            raise invalid("Method does not support commitment below `confirmed`")
        rec = self.ledger.record(sig)
        depth = self.ledger.finality_lag if commitment == "finalized" else 1
        if rec is None or self.ledger.slot - rec.slot < depth:
            return None
        max_version = config.get("maxSupportedTransactionVersion")
        is_v0 = isinstance(rec.tx.message, MessageV0)
        if is_v0 and max_version is None:
            raise RpcError(
                -32015,
                "Transaction version (0) is not supported by the requesting client. Please try "
                "the request again with the following configuration parameter: "
                '"maxSupportedTransactionVersion": 0',
            )
        result = {
            "slot": rec.slot,
            "blockTime": rec.block_time,
            "meta": transaction_meta(rec),
            "transaction": encode_transaction(rec.tx, config.get("encoding", "json")),
        }
        if max_version is not None:
            result["version"] = 0 if is_v0 else "legacy"
        return result

    def m_getSignaturesForAddress(self, params: list[Any]) -> list[dict[str, Any]]:
        address = _pubkey(_arg(params, 0, "address"))
        return signatures_for_address(self.ledger, address, _config(params, 1))

    def _decode(self, params: list[Any], config: dict[str, Any]) -> VersionedTransaction:
        try:
            tx = decode_transaction(
                _arg(params, 0, "transaction"), config.get("encoding", "base58")
            )
        except DecodeError as exc:
            raise invalid(f"invalid transaction: {exc}") from None
        try:
            tx.sanitize()
        except Exception:  # solders' SanitizeError
            raise invalid(
                "invalid transaction: Transaction failed to sanitize accounts offsets correctly"
            ) from None
        return tx

    def m_sendTransaction(self, params: list[Any]) -> str:
        config = _config(params, 1)
        tx = self._decode(params, config)
        signature = str(tx.signatures[0])
        # Verifying signatures is the costliest step: do it once per call.
        verified = all(tx.verify_with_results())
        if not config.get("skipPreflight", False):
            if not verified:
                raise RpcError(-32003, "Transaction signature verification failure")
            try:
                sim = self.ledger.simulate(tx, sig_verify=False)
                err, logs, units = sim.err, sim.logs, sim.units
            except Rejected as exc:
                err, logs, units = exc.err, [], 0
            if err is not None:
                raise RpcError(
                    -32002,
                    f"Transaction simulation failed: {error_text(err)}",
                    simulation_result(err, logs, units),
                )
        if self.faults.consume_drop_transaction():
            self.dropped_transactions += 1
            return signature
        if not verified:
            return signature  # skipPreflight: the leader drops it
        # skipPreflight: a refused transaction is dropped, the client only sees the signature.
        with contextlib.suppress(Rejected):
            self.ledger.execute(tx, sig_verify=False)
        return signature

    def m_simulateTransaction(self, params: list[Any]) -> dict[str, Any]:
        config = _config(params, 1)
        sig_verify = bool(config.get("sigVerify", False))
        replace = bool(config.get("replaceRecentBlockhash", False))
        if sig_verify and replace:
            raise invalid("sigVerify may not be used with replaceRecentBlockhash")
        tx = self._decode(params, config)
        replacement = None
        if replace:
            blockhash, last_valid = self.ledger.latest_blockhash()
            replacement = {"blockhash": blockhash, "lastValidBlockHeight": last_valid}
            tx = with_blockhash(tx, Hash.from_string(blockhash))
        try:
            sim = self.ledger.simulate(tx, sig_verify=sig_verify)
            result = simulation_result(sim.err, sim.logs, sim.units)
        except Rejected as exc:
            result = simulation_result(exc.err, [], 0)
        result["replacementBlockhash"] = replacement
        return self._ctx(result)

    def m_requestAirdrop(self, params: list[Any]) -> str:
        to = _pubkey(_arg(params, 0, "pubkey"))
        lamports = _arg(params, 1, "lamports")
        if isinstance(lamports, bool) or not isinstance(lamports, int) or lamports <= 0:
            raise invalid("Invalid params: lamports must be a positive integer")
        self._airdrops += 1
        # The memo keeps equal requests in one slot from having the same signature.
        memo = Instruction(MEMO_PROGRAM_ID, f"airdrop {self._airdrops}".encode(), [])
        ixs = [
            transfer(
                TransferParams(from_pubkey=self.faucet.pubkey(), to_pubkey=to, lamports=lamports)
            ),
            memo,
        ]
        blockhash = Hash.from_string(self.ledger.latest_blockhash()[0])
        msg = Message.new_with_blockhash(ixs, self.faucet.pubkey(), blockhash)
        tx = VersionedTransaction.from_legacy(Transaction([self.faucet], msg, blockhash))
        try:
            outcome = self.ledger.execute(tx)
        except Rejected as exc:
            raise RpcError(-32603, f"Internal error: airdrop failed: {exc.err}") from None
        if outcome.err is not None:
            raise RpcError(-32603, f"Internal error: airdrop failed: {error_text(outcome.err)}")
        return str(tx.signatures[0])
