"""Account histories, as a validator with transaction history serves them.

`getSignaturesForAddress` lists, newest first, the transactions that name an
address among their account keys, with the memo of each (`"[len] text"`, as
the validator formats it; null when there is none). It pages with `before` and
`until` (signatures) and `limit` (1 to 1000, default 1000), and, like
getTransaction, sees a transaction only once it reaches the commitment asked
(`confirmed` or the default `finalized`; `processed` is refused).
"""

from __future__ import annotations

from typing import Any

from solders.pubkey import Pubkey
from solders.signature import Signature

from relayq.devchain.ledger import Ledger, TxRecord
from relayq.devchain.responses import invalid

MAX_LIMIT = 1000
MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


def memo_of(record: TxRecord) -> str | None:
    """The transaction's memos in the validator's form, `[len] text` joined by `; `."""
    msg = record.tx.message
    keys = msg.account_keys
    memos = []
    for ix in msg.instructions:
        if keys[ix.program_id_index] == MEMO_PROGRAM_ID:
            text = bytes(ix.data).decode("utf-8", errors="replace")
            memos.append(f"[{len(bytes(ix.data))}] {text}")
    return "; ".join(memos) if memos else None


def _signature(config: dict[str, Any], name: str) -> Signature | None:
    value = config.get(name)
    if value is None:
        return None
    try:
        return Signature.from_string(value)
    except (ValueError, TypeError):
        raise invalid(f"Invalid param: {name} is not a signature") from None


def signatures_for_address(
    ledger: Ledger, address: Pubkey, config: dict[str, Any]
) -> list[dict[str, Any]]:
    """The result of getSignaturesForAddress for `address` with `config`."""
    commitment = config.get("commitment", "finalized")
    if commitment not in ("confirmed", "finalized"):
        raise invalid("Method does not support commitment below `confirmed`")
    limit = MAX_LIMIT if config.get("limit") is None else config["limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise invalid(f"Invalid limit; max {MAX_LIMIT}")
    before, until = _signature(config, "before"), _signature(config, "until")
    newest = ledger.view_slot(commitment)
    out: list[dict[str, Any]] = []
    started = before is None
    for record in ledger.newest_first():
        if not started:
            started = record.signature == before
            continue
        if record.signature == until or len(out) >= limit:
            break
        if record.slot > newest or address not in record.tx.message.account_keys:
            continue
        out.append({
            "signature": str(record.signature),
            "slot": record.slot,
            "err": record.err,
            "memo": memo_of(record),
            "blockTime": record.block_time,
            "confirmationStatus": ledger.confirmation(record.slot),
        })  # fmt: skip
    return out
