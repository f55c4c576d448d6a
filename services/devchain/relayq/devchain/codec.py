"""Encodings the Solana RPC speaks: base58, base64, transaction errors as JSON, token amounts."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionErrorType, TransactionStatus

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}

# The RPC's own limit on a base58 transaction (`MAX_BASE58_SIZE` in the validator).
MAX_BASE58_TRANSACTION = 1683
MAX_BASE64_TRANSACTION = 1644


class DecodeError(ValueError):
    """Input that is not valid for the encoding it claims."""


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        if c not in _B58_INDEX:
            raise DecodeError(f"invalid base58 character {c!r}")
        n = n * 58 + _B58_INDEX[c]
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def decode_transaction(text: Any, encoding: str) -> VersionedTransaction:
    """A wire transaction from the string the client sent, as the validator's RPC decodes it."""
    if not isinstance(text, str):
        raise DecodeError("transaction must be a string")
    if encoding == "base58":
        if len(text) > MAX_BASE58_TRANSACTION:
            raise DecodeError(f"base58 encoded transaction too large: {len(text)} bytes")
        raw = b58decode(text)
    elif encoding == "base64":
        if len(text) > MAX_BASE64_TRANSACTION * 4 // 3 + 4:
            raise DecodeError(f"base64 encoded transaction too large: {len(text)} bytes")
        try:
            raw = base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise DecodeError(f"invalid base64 encoding: {exc}") from None
    else:
        raise DecodeError(f"unsupported encoding: {encoding}. Supported encodings: base58, base64")
    try:
        return VersionedTransaction.from_bytes(raw)
    except Exception as exc:  # solders raises its own error types
        raise DecodeError(f"failed to deserialize VersionedTransaction: {exc}") from None


def error_json(err: TransactionErrorType) -> Any:
    """A runtime transaction error in the RPC's JSON form (`"BlockhashNotFound"`,
    `{"InstructionError": [0, {"Custom": 1}]}`), via solders' own serializer."""
    return json.loads(TransactionStatus(0, err=err).to_json())["err"]


_ERROR_TEXT = {
    "AccountInUse": "Account in use",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "SignatureFailure": "Transaction did not pass signature verification",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
}
_INSTRUCTION_TEXT = {
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "UninitializedAccount": "instruction requires an initialized account",
    "IncorrectProgramId": "incorrect program id for instruction",
    "AccountNotExecutable": "instruction expected an executable account",
    "ReadonlyLamportChange": "instruction changed the balance of a read-only account",
    "ExternalAccountLamportSpend": (
        "instruction spent from the balance of an account it does not own"
    ),
    "UnsupportedProgramId": "Unsupported program id",
}


def error_text(err: Any) -> str:
    """The validator's message for an error in JSON form (its `Display`)."""
    if isinstance(err, str):
        return _ERROR_TEXT.get(err, err)
    if isinstance(err, dict) and "InstructionError" in err:
        index, inner = err["InstructionError"]
        if isinstance(inner, dict) and "Custom" in inner:
            detail = f"custom program error: {int(inner['Custom']):#x}"
        else:
            detail = _INSTRUCTION_TEXT.get(str(inner), str(inner))
        return f"Error processing Instruction {index}: {detail}"
    return json.dumps(err)


def ui_amount_string(amount: int, decimals: int) -> str:
    """`amount` in whole tokens, trailing zeros trimmed, as the RPC's `uiAmountString`."""
    if decimals == 0:
        return str(amount)
    whole, frac = divmod(amount, 10**decimals)
    text = f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".")
    return text


def ui_token_amount(amount: int, decimals: int) -> dict[str, Any]:
    return {
        "amount": str(amount),
        "decimals": decimals,
        "uiAmount": amount / 10**decimals,
        "uiAmountString": ui_amount_string(amount, decimals),
    }
