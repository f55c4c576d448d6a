"""The JSON shapes of Solana RPC answers: error objects, accounts, transactions, simulations."""

from __future__ import annotations

import base64
from typing import Any

from solders.account import Account
from solders.hash import Hash
from solders.message import Message, MessageV0
from solders.token import ID as TOKEN_PROGRAM_ID
from solders.token.state import Mint, TokenAccount
from solders.transaction import VersionedTransaction

from relayq.devchain.codec import b58encode, ui_token_amount
from relayq.devchain.ledger import MINT_LEN, TOKEN_ACCOUNT_LEN, Ledger, TxRecord, writable_keys


class RpcError(Exception):
    """A JSON-RPC error object: code, message and optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            body["data"] = self.data
        return body


def invalid(message: str) -> RpcError:
    return RpcError(-32602, message)


def simulation_result(err: Any, logs: list[str], units: int) -> dict[str, Any]:
    """The RpcSimulateTransactionResult object (simulateTransaction, preflight error data)."""
    return {
        "err": err,
        "logs": logs,
        "accounts": None,
        "unitsConsumed": units,
        "returnData": None,
        "innerInstructions": None,
        "replacementBlockhash": None,
    }


def encode_account(ledger: Ledger, acct: Account, encoding: str) -> dict[str, Any]:
    data = bytes(acct.data)
    encoded: Any
    if encoding == "jsonParsed":
        encoded = parsed_token_account(ledger, acct) or [base64.b64encode(data).decode(), "base64"]
    elif encoding == "base64":
        encoded = [base64.b64encode(data).decode(), "base64"]
    elif encoding in ("base58", "binary"):
        if len(data) > 128:
            raise invalid("Encoded binary (base 58) data should be less than 128 bytes, "
                          "please use Base64 encoding.")  # fmt: skip
        encoded = [b58encode(data), "base58"] if encoding == "base58" else b58encode(data)
    else:
        raise invalid(f"Invalid params: unsupported encoding {encoding!r}")
    return {
        "data": encoded,
        "executable": acct.executable,
        "lamports": acct.lamports,
        "owner": str(acct.owner),
        "rentEpoch": acct.rent_epoch,
        "space": len(data),
    }


def parsed_token_account(ledger: Ledger, acct: Account) -> dict[str, Any] | None:
    """The spl-token jsonParsed form of mints and token accounts."""
    if acct.owner != TOKEN_PROGRAM_ID:
        return None
    data = bytes(acct.data)
    info: dict[str, Any]
    if len(data) == TOKEN_ACCOUNT_LEN:
        state = TokenAccount.from_bytes(data)
        decimals = ledger.mint_decimals(state.mint)
        if decimals is None:
            return None
        info = {
            "isNative": state.is_native is not None,
            "mint": str(state.mint),
            "owner": str(state.owner),
            "state": str(state.state).rsplit(".", 1)[-1].lower(),
            "tokenAmount": ui_token_amount(state.amount, decimals),
        }
        kind = "account"
    elif len(data) == MINT_LEN:
        mint = Mint.from_bytes(data)
        info = {
            "decimals": mint.decimals,
            "freezeAuthority": None
            if mint.freeze_authority is None
            else str(mint.freeze_authority),
            "isInitialized": mint.is_initialized,
            "mintAuthority": None if mint.mint_authority is None else str(mint.mint_authority),
            "supply": str(mint.supply),
        }
        kind = "mint"
    else:
        return None
    return {"program": "spl-token", "parsed": {"info": info, "type": kind}, "space": len(data)}


def transaction_meta(rec: TxRecord) -> dict[str, Any]:
    return {
        "err": rec.err,
        "status": {"Ok": None} if rec.err is None else {"Err": rec.err},
        "fee": rec.fee,
        "preBalances": rec.pre_balances,
        "postBalances": rec.post_balances,
        "innerInstructions": [],
        "logMessages": rec.logs,
        "preTokenBalances": rec.pre_token,
        "postTokenBalances": rec.post_token,
        "rewards": [],
        "loadedAddresses": {"writable": [], "readonly": []},
        "computeUnitsConsumed": rec.units,
    }


def encode_transaction(tx: VersionedTransaction, encoding: str) -> Any:
    if encoding == "base64":
        return [base64.b64encode(bytes(tx)).decode(), "base64"]
    if encoding == "base58":
        return [b58encode(bytes(tx)), "base58"]
    if encoding == "jsonParsed":
        return _parsed_transaction(tx)
    if encoding != "json":
        raise invalid(f"Invalid params: unsupported encoding {encoding!r}")
    msg = tx.message
    h = msg.header
    message: dict[str, Any] = {
        "accountKeys": [str(k) for k in msg.account_keys],
        "header": {
            "numRequiredSignatures": h.num_required_signatures,
            "numReadonlySignedAccounts": h.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": h.num_readonly_unsigned_accounts,
        },
        "recentBlockhash": str(msg.recent_blockhash),
        "instructions": [
            {
                "programIdIndex": ix.program_id_index,
                "accounts": list(bytes(ix.accounts)),
                "data": b58encode(bytes(ix.data)),
                "stackHeight": None,
            }
            for ix in msg.instructions
        ],
    }
    if isinstance(msg, MessageV0):
        message["addressTableLookups"] = []
    return {"signatures": [str(s) for s in tx.signatures], "message": message}


def _parsed_transaction(tx: VersionedTransaction) -> dict[str, Any]:
    """The jsonParsed form; instructions stay partially decoded (program, accounts, data)."""
    msg = tx.message
    keys = msg.account_keys
    signers = msg.header.num_required_signatures
    writable = set(writable_keys(tx))
    message: dict[str, Any] = {
        "accountKeys": [
            {
                "pubkey": str(k),
                "signer": i < signers,
                "source": "transaction",
                "writable": k in writable,
            }
            for i, k in enumerate(keys)
        ],
        "recentBlockhash": str(msg.recent_blockhash),
        "instructions": [
            {
                "programId": str(keys[ix.program_id_index]),
                "accounts": [str(keys[a]) for a in bytes(ix.accounts)],
                "data": b58encode(bytes(ix.data)),
                "stackHeight": None,
            }
            for ix in msg.instructions
        ],
    }
    if isinstance(msg, MessageV0):
        message["addressTableLookups"] = []
    return {"signatures": [str(s) for s in tx.signatures], "message": message}


def with_blockhash(tx: VersionedTransaction, blockhash: Hash) -> VersionedTransaction:
    """The transaction with its recent blockhash replaced (signatures kept, now invalid)."""
    msg = tx.message
    if isinstance(msg, MessageV0):
        new_msg: Message | MessageV0 = MessageV0(
            msg.header, msg.account_keys, blockhash, msg.instructions, msg.address_table_lookups
        )
    else:
        new_msg = Message.new_with_compiled_instructions(
            msg.header.num_required_signatures,
            msg.header.num_readonly_signed_accounts,
            msg.header.num_readonly_unsigned_accounts,
            msg.account_keys,
            blockhash,
            msg.instructions,
        )
    return VersionedTransaction.populate(new_msg, tx.signatures)
