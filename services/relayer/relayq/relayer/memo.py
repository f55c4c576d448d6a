"""The memo that ties each of a purchase's transactions to that purchase.

Two purchases of the same basket and amount, signed in the same blockhash
window, would otherwise be byte-identical transactions with one signature: the
chain runs it once and both purchases claim it. A memo with the purchase id
makes every transaction unique to its purchase, and lets reconciliation and an
explorer tie a transaction to its purchase.
"""

from __future__ import annotations

from solders.instruction import Instruction
from solders.pubkey import Pubkey

# SPL Memo v2: logs its data; with no accounts it needs no signature of its own.
MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
PREFIX = "relayq:purchase:"
# A refund of a purchase's lamports names the purchase under its own prefix, so a refund
# is never taken for the purchase's swap or transfer, and reconciliation can find refunds.
REFUND_PREFIX = "relayq:refund:"


def purchase_memo(purchase_id: str) -> Instruction:
    return Instruction(MEMO_PROGRAM_ID, (PREFIX + purchase_id).encode(), [])


def refund_memo(purchase_id: str) -> Instruction:
    return Instruction(MEMO_PROGRAM_ID, (REFUND_PREFIX + purchase_id).encode(), [])
