"""What the signer signs: a message judged instruction by instruction against the allow-list.

The policy is judged on the decoded message, with its address lookup tables
resolved first (a table the signer cannot read refuses the message: accounts it
cannot see are accounts it cannot judge). A message passes when:

- the relayer is its fee payer;
- every instruction calls a program on the allow-list (`relayq.relayer.allowlist`);
- every instruction that moves the relayer's lamports or tokens sends them only
  where its purpose allows: a `transfer` moves tokens to the contract's token
  accounts and no lamports; a `swap` moves lamports to the swap's counterparty,
  the relayer's wrapped-SOL account or a tip account, and tokens to the
  relayer's or the contract's token accounts; a `tip` moves lamports to a tip
  account only; a `refund` moves lamports once, by one system transfer, to the
  buyer's wallet the request names (`refund_to`), nothing else, and carries a
  refund memo (`relayq:refund:<purchase id>`);
- every instruction of a swap program (a swap leg, `swap` only) names only the
  accounts the allow-list declares for a leg, looked-up ones included: the
  relayer's wallet and token accounts, a declared swap program's fixed
  accounts, a declared pool's accounts, the baskets' mints and well-known
  programs; and of those it writes (as the message marks them) only the
  relayer's and the declared pools' (`SwapLeg`);
- the lamports it moves stay under the per-transaction cap and, with what was
  signed before, under the per-window cap.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from solders.address_lookup_table_account import AddressLookupTable
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from spl.token.constants import TOKEN_PROGRAM_ID

from relayq.relayer.allowlist import WRAPPED_SOL_MINT, Allowlist, LegNotAllowed
from relayq.relayer.memo import MEMO_PROGRAM_ID, REFUND_PREFIX
from relayq.relayer.signing import Purpose

# System program instructions (u32 little-endian tag) the relayer may sign.
SYSTEM_CREATE_ACCOUNT = 0
SYSTEM_TRANSFER = 2
# SPL Token instructions (one-byte tag).
TOKEN_TRANSFER = 3
TOKEN_CLOSE_ACCOUNT = 9
TOKEN_TRANSFER_CHECKED = 12
# Instructions that move nothing of the relayer's: account set-up, wrapped-SOL sync.
TOKEN_HARMLESS = frozenset({1, 16, 17, 18})  # InitializeAccount, 2, 3; SyncNative


class Refused(Exception):
    """The policy refuses the message; nothing is signed.

    Attributes:
        code: the refusal's code, the problem+json `code` and the metric's `reason`.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# Every refusal code, for the API description and the tests.
REFUSALS = (
    "invalid-message",
    "unknown-purpose",
    "fee-payer-not-relayer",
    "lookup-table-unresolved",
    "program-not-allowed",
    "instruction-not-allowed",
    "destination-not-allowed",
    "tip-not-allowed",
    "account-not-allowed",
    "write-not-allowed",
    "over-transaction-cap",
    "over-window-cap",
    "refund-wallet-missing",
    "refund-memo-missing",
    "refund-not-one-transfer",
)

AccountReader = Callable[[Pubkey], Awaitable[bytes | None]]
TipAccounts = Callable[[], Awaitable[Iterable[Pubkey]]]


@dataclass(frozen=True)
class Limits:
    """Caps on the lamports the relayer's signature may move.

    Attributes:
        per_transaction: lamports one message may move at most.
        per_window: lamports all messages signed in `window_seconds` may move at most.
        window_seconds: the sliding window of `per_window`.
    """

    per_transaction: int
    per_window: int
    window_seconds: float


class SpendWindow:
    """The lamports signed for in the last `seconds` (one signer process keeps the count)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._spent: deque[tuple[float, int]] = deque()

    def total(self) -> int:
        horizon = self._clock() - self.seconds
        while self._spent and self._spent[0][0] <= horizon:
            self._spent.popleft()
        return sum(n for _, n in self._spent)

    def add(self, lamports: int) -> None:
        self._spent.append((self._clock(), lamports))


@dataclass
class Policy:
    """The signer's policy for one relayer.

    Attributes:
        allowlist: the relayer's allow-list: programs, mints, token destinations.
        limits: the lamport caps.
        tip_accounts: the block engine's tip accounts (cached by the caller).
        read_account: an account's data from the RPC (None: no such account), to
            resolve address lookup tables.
        counterparties: accounts a swap may pay lamports to directly (a treasury).
    """

    allowlist: Allowlist
    limits: Limits
    tip_accounts: TipAccounts
    read_account: AccountReader
    counterparties: frozenset[Pubkey] = frozenset()

    def __post_init__(self) -> None:
        self.window = SpendWindow(self.limits.window_seconds)

    async def judge(self, message: MessageV0, purpose: str, refund_to: Pubkey | None = None) -> int:
        """The lamports `message` moves for `purpose`; Refused when the policy refuses it.

        `refund_to` is the buyer's wallet a `refund` pays, named by the caller, and
        only with that purpose. Does not count the lamports against the window:
        `reserve` does, before signing.
        """
        try:
            kind = Purpose(purpose)
        except ValueError:
            raise Refused("unknown-purpose", f"purpose {purpose!r} is not one of "
                          f"{[p.value for p in Purpose]}") from None  # fmt: skip
        if (kind is Purpose.REFUND) != (refund_to is not None):
            raise Refused("refund-wallet-missing", "a refund, and only a refund, names the "
                          "buyer's wallet it pays")  # fmt: skip
        relayer = self.allowlist.relayer
        if not message.account_keys or message.account_keys[0] != relayer:
            raise Refused("fee-payer-not-relayer", "the relayer must be the fee payer")
        keys = await self._accounts(message)
        tips = frozenset(await self.tip_accounts())
        moved = 0
        system_calls = 0
        refund_memo = False
        for n, ix in enumerate(message.instructions):
            try:
                program = keys[ix.program_id_index]
                accounts = [keys[i] for i in bytes(ix.accounts)]
            except IndexError:
                raise Refused("invalid-message", f"instruction {n} names no account") from None
            if program not in self.allowlist.programs:
                raise Refused("program-not-allowed", f"instruction {n}: program {program}")
            data = bytes(ix.data)
            if program == SYSTEM_PROGRAM_ID:
                system_calls += 1
                moved += self._system(n, kind, accounts, data, tips, refund_to)
            elif program == MEMO_PROGRAM_ID:
                refund_memo = refund_memo or data.startswith(REFUND_PREFIX.encode())
            elif program == TOKEN_PROGRAM_ID:
                self._token(n, kind, accounts, data)
            elif program in self.allowlist.swap_programs:
                if kind is not Purpose.SWAP:
                    raise Refused("instruction-not-allowed", f"instruction {n}: a swap in a {kind}")
                SwapLeg(self.allowlist).judge(n, message, keys, bytes(ix.accounts))
        if kind is Purpose.REFUND:
            if system_calls != 1 or moved == 0:
                raise Refused("refund-not-one-transfer", f"a refund is one SOL transfer to the "
                              f"buyer; this message makes {system_calls} system calls")  # fmt: skip
            if not refund_memo:
                raise Refused("refund-memo-missing", f"a refund carries a {REFUND_PREFIX} memo")
        if moved > self.limits.per_transaction:
            raise Refused("over-transaction-cap", f"{moved} lamports > "
                          f"{self.limits.per_transaction} per transaction")  # fmt: skip
        return moved

    def reserve(self, lamports: int) -> None:
        """Count `lamports` against the window; Refused when they would pass its cap.

        Synchronous, so no other request is judged between the check and the count.
        """
        spent = self.window.total()
        if spent + lamports > self.limits.per_window:
            cap = f"{self.limits.per_window} per {self.limits.window_seconds:g} s"
            raise Refused("over-window-cap", f"{spent} + {lamports} lamports > {cap}")
        self.window.add(lamports)

    async def _accounts(self, message: MessageV0) -> list[Pubkey]:
        """Static keys, then every table's writable, then every table's read-only addresses."""
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        for lookup in message.address_table_lookups:
            data = await self.read_account(lookup.account_key)
            if data is None:
                raise Refused("lookup-table-unresolved", f"no table {lookup.account_key}")
            try:
                addresses = AddressLookupTable.deserialize(data).addresses
                writable += [addresses[i] for i in bytes(lookup.writable_indexes)]
                readonly += [addresses[i] for i in bytes(lookup.readonly_indexes)]
            except (ValueError, IndexError) as exc:
                raise Refused(
                    "lookup-table-unresolved", f"table {lookup.account_key}: {exc}"
                ) from None
        return [*message.account_keys, *writable, *readonly]

    def _system(
        self,
        n: int,
        kind: Purpose,
        accounts: list[Pubkey],
        data: bytes,
        tips: frozenset[Pubkey],
        refund_to: Pubkey | None = None,
    ) -> int:
        relayer = self.allowlist.relayer
        if relayer not in accounts:
            return 0
        tag = struct.unpack_from("<I", data)[0] if len(data) >= 4 else -1
        if tag not in (SYSTEM_TRANSFER, SYSTEM_CREATE_ACCOUNT) or len(data) < 12:
            raise Refused("instruction-not-allowed", f"instruction {n}: system instruction {tag}")
        if accounts[0] != relayer:
            raise Refused("instruction-not-allowed", f"instruction {n}: relayer not the payer")
        lamports: int = struct.unpack_from("<Q", data, 4)[0]
        to = accounts[1] if len(accounts) > 1 else None
        if tag == SYSTEM_CREATE_ACCOUNT:
            if kind is not Purpose.SWAP:
                raise Refused("instruction-not-allowed", f"instruction {n}: account creation")
            return lamports
        if kind is Purpose.REFUND:
            if to != refund_to:
                raise Refused("destination-not-allowed", f"instruction {n}: a refund to {to}, "
                              f"the request names {refund_to}")  # fmt: skip
            return lamports
        if to in tips:
            if kind is Purpose.TRANSFER:
                raise Refused("destination-not-allowed", f"instruction {n}: a tip in a transfer")
            return lamports
        swap_payee = {*self.counterparties, self.allowlist.relayer_account(WRAPPED_SOL_MINT)}
        if kind is Purpose.SWAP and to in swap_payee:
            return lamports
        if kind is Purpose.TRANSFER:
            raise Refused("destination-not-allowed", f"instruction {n}: lamports to {to}")
        raise Refused("tip-not-allowed", f"instruction {n}: lamports to {to}, not a tip account")

    def _token(self, n: int, kind: Purpose, accounts: list[Pubkey], data: bytes) -> None:
        tag = data[0] if data else -1
        if tag in TOKEN_HARMLESS:
            return
        if tag in (TOKEN_TRANSFER, TOKEN_TRANSFER_CHECKED):
            dest_at = 1 if tag == TOKEN_TRANSFER else 2
            if len(accounts) <= dest_at:
                raise Refused("invalid-message", f"instruction {n}: a transfer without accounts")
            dest = accounts[dest_at]
            if kind is Purpose.TRANSFER:
                allowed = {self.allowlist.contract_account(m) for m in self.allowlist.mints}
            elif kind is Purpose.SWAP:
                allowed = set(self.allowlist.destinations)
            else:
                allowed = set()
            if dest not in allowed:
                raise Refused("destination-not-allowed", f"instruction {n}: tokens to {dest}")
            return
        unwrap = len(accounts) > 1 and accounts[1] == self.allowlist.relayer
        if tag == TOKEN_CLOSE_ACCOUNT and kind is Purpose.SWAP and unwrap:
            return  # unwrapping SOL back to the relayer
        raise Refused("instruction-not-allowed", f"instruction {n}: token instruction {tag}")


@dataclass(frozen=True)
class SwapLeg:
    """The accounts one swap program's instruction may name and write (`Allowlist.check_leg`).

    Writability is the message's (`is_maybe_writable`: its header for static
    keys, the writable half of a lookup table for looked-up ones), since that is
    what the program is given, whatever the caller meant.
    """

    allowlist: Allowlist

    def judge(self, n: int, message: MessageV0, keys: list[Pubkey], indexes: bytes) -> None:
        named = [(keys[i], message.is_maybe_writable(i)) for i in indexes]
        try:
            self.allowlist.check_leg(named)
        except LegNotAllowed as exc:
            raise Refused(exc.code, f"instruction {n}: {exc}") from None
