"""What the relayer may sign for: the programs, the mints and the token accounts value may go to.

One list per process, built from the relayer's settings and baskets. The checks
of a swap API's instructions (`chain/swap_checks.py`) consult it before
anything is signed, and so must any signer that refuses transactions moving
value elsewhere: the only destinations are the relayer's own token accounts
(swaps land there) and the contract's (transfers go there), for the baskets'
mints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from solders.compute_budget import ID as COMPUTE_BUDGET_PROGRAM_ID
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from spl.token.constants import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import get_associated_token_address

from relayq.relayer.baskets import Basket
from relayq.relayer.memo import MEMO_PROGRAM_ID

WRAPPED_SOL_MINT = Pubkey.from_string("So11111111111111111111111111111111111111112")
JUPITER_V6_PROGRAM_ID = Pubkey.from_string("JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4")
# The programs a swap's setup and cleanup use around the swap itself (wrap, unwrap, accounts).
SUPPORT_PROGRAMS = frozenset(
    {
        SYSTEM_PROGRAM_ID,
        TOKEN_PROGRAM_ID,
        ASSOCIATED_TOKEN_PROGRAM_ID,
        COMPUTE_BUDGET_PROGRAM_ID,
        MEMO_PROGRAM_ID,
    }
)
DEFAULT_SWAP_PROGRAMS = (str(JUPITER_V6_PROGRAM_ID),)


class NotAllowed(ValueError):
    """Something outside the allow-list: a program, a mint or a destination."""


@dataclass(frozen=True)
class Allowlist:
    """The relayer's allow-list.

    Attributes:
        relayer: the relayer's key, the only signer the relayer provides.
        contract_owner: the owner of the token accounts purchases are delivered to.
        mints: the baskets' mints: the only tokens bought or delivered.
        swap_programs: programs that may perform a swap (a Jupiter-compatible router).
        programs: every program an instruction the relayer signs may call:
            the swap programs and the support programs (System, SPL Token,
            Associated Token Account, Compute Budget, Memo).
    """

    relayer: Pubkey
    contract_owner: Pubkey
    mints: frozenset[Pubkey]
    swap_programs: frozenset[Pubkey]

    @property
    def programs(self) -> frozenset[Pubkey]:
        return self.swap_programs | SUPPORT_PROGRAMS

    def relayer_account(self, mint: Pubkey) -> Pubkey:
        """The relayer's token account for `mint` (where a swap must deliver)."""
        return get_associated_token_address(self.relayer, mint)

    def contract_account(self, mint: Pubkey) -> Pubkey:
        """The contract's token account for `mint` (where a transfer must deliver)."""
        return get_associated_token_address(self.contract_owner, mint)

    @property
    def destinations(self) -> frozenset[Pubkey]:
        """Every token account value may be moved to: the relayer's and the contract's."""
        relayer = {self.relayer_account(m) for m in (*self.mints, WRAPPED_SOL_MINT)}
        return frozenset(relayer | {self.contract_account(m) for m in self.mints})

    def check_program(self, program: Pubkey) -> None:
        if program not in self.programs:
            raise NotAllowed(f"program {program} is not on the allow-list")

    def check_mint(self, mint: Pubkey) -> None:
        if mint not in self.mints:
            raise NotAllowed(f"mint {mint} is not a basket's")

    def check_destination(self, account: Pubkey) -> None:
        if account not in self.destinations:
            raise NotAllowed(f"token account {account} is neither the relayer's nor the contract's")


def build_allowlist(
    relayer: Pubkey,
    contract_owner: Pubkey,
    baskets: Iterable[Basket],
    swap_programs: Iterable[str] = DEFAULT_SWAP_PROGRAMS,
) -> Allowlist:
    """The allow-list of a relayer selling `baskets`; ValueError for a malformed program id."""
    return Allowlist(
        relayer=relayer,
        contract_owner=contract_owner,
        mints=frozenset(t.mint for b in baskets for t in b.tokens),
        swap_programs=frozenset(Pubkey.from_string(p) for p in swap_programs),
    )
