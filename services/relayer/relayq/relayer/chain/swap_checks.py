"""Checks of a Jupiter-compatible swap API's answer, made before the relayer signs anything.

The API is not trusted: it could be compromised, buggy, or answer for another
request. A quote must be the one asked for (SOL in, exactly the lamports asked,
the basket's mint out, exact-in, a guaranteed amount within the slippage
allowed of the quoted one). Every instruction must call a program on the
allow-list, be signed by no one but the relayer, and move value only into the
relayer's own accounts: SOL only into its wrapped-SOL account and no more than
the leg's lamports, tokens only into its token account for the basket's mint.
A swap program's instruction may name only the accounts the allow-list declares
for a leg (`Allowlist.check_leg`: the relayer's, the declared pools' and swap
programs', well-known programs), the same rule the signer applies. Anything
else, malformed answers included, raises SwapRefused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from spl.token.constants import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_PROGRAM_ID

from relayq.relayer.allowlist import (
    JUPITER_V6_PROGRAM_ID,
    WRAPPED_SOL_MINT,
    Allowlist,
    LegNotAllowed,
    NotAllowed,
)
from relayq.relayer.chain.errors import SwapRefused

BPS = 10_000
# SPL Token instruction tags the swap's setup and cleanup may use.
TOKEN_TRANSFER, TOKEN_CLOSE_ACCOUNT, TOKEN_TRANSFER_CHECKED, TOKEN_SYNC_NATIVE = 3, 9, 12, 17
SYSTEM_TRANSFER = 2
# Associated Token Account: create (empty data or 0) and create-idempotent (1).
ATA_CREATE = (b"", b"\x00", b"\x01")
# Jupiter v6 exact-in routes (Anchor discriminators) and the account positions of
# (authority, source, destination, payee or the program itself for none, out mint).
JUPITER_ROUTES = {
    bytes.fromhex("e517cb977ae3ad2a"): (1, 2, 3, 4, 5),  # route
    bytes.fromhex("96564774a75d0e68"): (1, 2, 3, 4, 5),  # route_with_token_ledger
    bytes.fromhex("c1209b3341d69c81"): (2, 3, 6, 6, 8),  # shared_accounts_route
    bytes.fromhex("e6798f50779f6aaa"): (2, 3, 6, 6, 8),  # ..._with_token_ledger
}


def _amount(quote: dict[str, Any], key: str) -> int:
    value = quote.get(key)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise SwapRefused("malformed", f"quote {key} is not an amount: {value!r}")


def checked_quote(raw: Any, *, mint: Pubkey, lamports: int, slippage_bps: int) -> dict[str, Any]:
    """The quote, if it is for `lamports` of SOL into `mint` within the slippage allowed.

    Returns it unchanged (it is sent back to the API for the instructions).
    """
    if not isinstance(raw, dict):
        raise SwapRefused("malformed", "the quote is not a JSON object")
    if raw.get("inputMint") != str(WRAPPED_SOL_MINT):
        raise SwapRefused("mint", f"quote input mint {raw.get('inputMint')!r} is not SOL")
    if raw.get("outputMint") != str(mint):
        raise SwapRefused("mint", f"quote output mint {raw.get('outputMint')!r} is not {mint}")
    if raw.get("swapMode", "ExactIn") != "ExactIn":
        raise SwapRefused("amount", f"quote swap mode {raw.get('swapMode')!r} is not ExactIn")
    if _amount(raw, "inAmount") != lamports:
        raise SwapRefused("amount", f"quote spends {raw.get('inAmount')!r}, not {lamports}")
    out, least = _amount(raw, "outAmount"), _amount(raw, "otherAmountThreshold")
    bps = raw.get("slippageBps")
    if isinstance(bps, bool) or not isinstance(bps, int) or not 0 <= bps <= slippage_bps:
        raise SwapRefused("slippage", f"quote slippage {bps!r} bps, allowed {slippage_bps}")
    if not 0 < least <= out or least * BPS < out * (BPS - slippage_bps):
        raise SwapRefused(
            "slippage",
            f"quote guarantees {least} of {out} quoted, beyond the {slippage_bps} bps allowed",
        )
    return raw


def parse_instruction(raw: Any) -> Instruction:
    """An instruction in Jupiter's JSON form (programId, accounts, base64 data)."""
    try:
        accounts = raw["accounts"]
        if not isinstance(accounts, list):
            raise TypeError("accounts is not a list")
        metas = []
        for a in accounts:
            signer, writable = a["isSigner"], a["isWritable"]
            if not isinstance(signer, bool) or not isinstance(writable, bool):
                raise TypeError("isSigner and isWritable must be booleans")
            metas.append(AccountMeta(_key(a["pubkey"]), signer, writable))
        if not isinstance(raw["data"], str):
            raise TypeError("data is not a string")
        data = base64.b64decode(raw["data"], validate=True)
        return Instruction(_key(raw["programId"]), data, metas)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise SwapRefused("malformed", f"bad instruction: {exc!r}") from None


def _key(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a base58 key")
    return Pubkey.from_string(value)


def checked_instructions(
    raw: Any, allow: Allowlist, *, mint: Pubkey, lamports: int
) -> list[Instruction]:
    """The instructions of a `/swap-instructions` answer, in order, once each passed its checks."""
    if not isinstance(raw, dict):
        raise SwapRefused("malformed", "the swap instructions are not a JSON object")
    setup, cleanup = raw.get("setupInstructions", []), raw.get("cleanupInstruction")
    if not isinstance(setup, list) or "swapInstruction" not in raw:
        raise SwapRefused("malformed", "setupInstructions or swapInstruction missing")
    setup_ix = [parse_instruction(i) for i in setup]
    swap_ix = parse_instruction(raw["swapInstruction"])
    cleanup_ix = [parse_instruction(cleanup)] if cleanup else []
    instructions = [*setup_ix, swap_ix, *cleanup_ix]
    wrapped = 0
    try:
        for ix in instructions:
            allow.check_program(ix.program_id)
            _check_signers(ix.accounts, allow)
            if ix.program_id in allow.swap_programs:
                _check_route(ix, allow, mint)  # wherever it sits, a swap delivers to us
                _check_leg_accounts(ix, allow)
            else:
                wrapped += _check_support(ix, allow, mint)
        if swap_ix.program_id not in allow.swap_programs:
            raise SwapRefused("program", f"the swap instruction calls {swap_ix.program_id}")
    except NotAllowed as exc:
        raise SwapRefused("program", str(exc)) from None
    if wrapped > lamports:
        raise SwapRefused("amount", f"the instructions wrap {wrapped} lamports, not {lamports}")
    return instructions


def _check_signers(accounts: Sequence[AccountMeta], allow: Allowlist) -> None:
    for a in accounts:
        if a.is_signer and a.pubkey != allow.relayer:
            raise SwapRefused("authority", f"an instruction needs {a.pubkey} to sign")


def _account(ix: Instruction, index: int) -> Pubkey:
    if index >= len(ix.accounts):
        raise SwapRefused("malformed", f"{ix.program_id} instruction has too few accounts")
    return ix.accounts[index].pubkey


def _check_support(ix: Instruction, allow: Allowlist, mint: Pubkey) -> int:
    """Check an instruction of a support program; the lamports it wraps."""
    data = bytes(ix.data)
    wsol = allow.relayer_account(WRAPPED_SOL_MINT)
    if ix.program_id == SYSTEM_PROGRAM_ID:
        if len(data) != 12 or int.from_bytes(data[:4], "little") != SYSTEM_TRANSFER:
            raise SwapRefused("program", "a System instruction other than a transfer")
        if _account(ix, 0) != allow.relayer or _account(ix, 1) != wsol:
            raise SwapRefused("destination", f"SOL sent to {_account(ix, 1)}, not to wrap")
        return int.from_bytes(data[4:12], "little")
    if ix.program_id == TOKEN_PROGRAM_ID:
        tag = data[0] if data else None
        if tag == TOKEN_SYNC_NATIVE and _account(ix, 0) == wsol:
            return 0
        if tag == TOKEN_CLOSE_ACCOUNT and _account(ix, 0) == wsol:
            if _account(ix, 1) != allow.relayer:
                raise SwapRefused("destination", f"wrapped SOL closed to {_account(ix, 1)}")
            return 0
        if tag in (TOKEN_TRANSFER, TOKEN_TRANSFER_CHECKED):
            dest = _account(ix, 1 if tag == TOKEN_TRANSFER else 2)
            if dest not in (wsol, allow.relayer_account(mint)):
                raise SwapRefused("destination", f"tokens sent to {dest}")
            return 0
        raise SwapRefused("program", f"SPL Token instruction {tag} is not allowed in a swap")
    if ix.program_id == ASSOCIATED_TOKEN_PROGRAM_ID:
        if data not in ATA_CREATE or _account(ix, 2) != allow.relayer:
            raise SwapRefused("destination", "an associated token account not the relayer's")
        if _account(ix, 3) not in (WRAPPED_SOL_MINT, mint):
            raise SwapRefused("mint", f"a token account for {_account(ix, 3)}")
    return 0


def _check_leg_accounts(ix: Instruction, allow: Allowlist) -> None:
    """The swap names only the relayer's, declared pools' and swap programs' accounts."""
    try:
        allow.check_leg((a.pubkey, a.is_writable) for a in ix.accounts)
    except LegNotAllowed as exc:
        raise SwapRefused("account", str(exc)) from None


def _check_route(ix: Instruction, allow: Allowlist, mint: Pubkey) -> None:
    """The swap's output goes to the relayer's token account for `mint`."""
    out = allow.relayer_account(mint)
    if ix.program_id == JUPITER_V6_PROGRAM_ID:
        layout = JUPITER_ROUTES.get(bytes(ix.data[:8]))
        if layout is None:
            raise SwapRefused("program", "a Jupiter instruction other than an exact-in route")
        authority, source, dest, payee, out_mint = (_account(ix, i) for i in layout)
        if authority != allow.relayer or source != allow.relayer_account(WRAPPED_SOL_MINT):
            raise SwapRefused("authority", "the route spends from an account not the relayer's")
        if out_mint != mint:
            raise SwapRefused("mint", f"the route buys {out_mint}, not {mint}")
        if dest != out or payee not in (out, JUPITER_V6_PROGRAM_ID):
            raise SwapRefused("destination", f"the route delivers to {payee}, not to {out}")
        return
    # Another allowed router: at least its output must be writable in the relayer's account.
    if not any(a.pubkey == out and a.is_writable for a in ix.accounts):
        raise SwapRefused("destination", f"the swap does not deliver into {out}")
