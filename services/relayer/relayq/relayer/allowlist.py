"""What the relayer may sign for: the programs, the mints, the token accounts value may go to,
and the accounts a swap leg may name.

One list per process, built from the relayer's settings and baskets. The checks
of a swap API's instructions (`chain/swap_checks.py`) consult it before
anything is signed, and so does the signer (`relayq.signer.policy`): the only
destinations are the relayer's own token accounts (swaps land there) and the
contract's (transfers go there), for the baskets' mints.

A swap leg (an instruction of a swap program) may name only the accounts its
route needs, as declared per swap program in the pools file
(`RELAYQ_SWAP_POOLS_FILE`): the program's fixed accounts (its authority, its
config) and its pools (each pool's address and its vaults). Besides those it
may name the relayer's wallet, the relayer's token accounts, the baskets' mints
and well-known programs. It may write only the relayer's token accounts and the
declared pools' accounts (and the relayer's wallet, which pays the fees and is
writable in every message). A route through an undeclared pool is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solders.compute_budget import ID as COMPUTE_BUDGET_PROGRAM_ID
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from spl.token.constants import (
    ASSOCIATED_TOKEN_PROGRAM_ID,
    TOKEN_2022_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
)
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
# Jupiter v6's event authority (the PDA of `__event_authority`), named by every route.
JUPITER_V6_EVENT_AUTHORITY = Pubkey.from_string("D8cy77BBepLMngZx6ZukaTff5hCt1HrWyKk3Hnd9oitf")
# Programs a swap leg may name as read-only accounts, besides the swap programs.
WELL_KNOWN_PROGRAMS = SUPPORT_PROGRAMS | {TOKEN_2022_PROGRAM_ID}


class NotAllowed(ValueError):
    """Something outside the allow-list: a program, a mint or a destination."""


class LegNotAllowed(NotAllowed):
    """A swap leg names or writes an account outside the declaration.

    Attributes:
        code: `account-not-allowed` (an account it may not name) or
            `write-not-allowed` (an account it may name but not write).
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class SwapPool:
    """A pool a swap leg may trade through: its address and its vaults (all writable)."""

    address: Pubkey
    accounts: frozenset[Pubkey] = frozenset()


@dataclass(frozen=True)
class SwapProgramAccounts:
    """What a leg may name of one swap program (a router or an AMM).

    Attributes:
        program: the program's id (named read-only, e.g. as a hop of a route).
        accounts: its fixed accounts (authority, config, event authority): read-only.
        pools: the pools the relayer may trade through.
    """

    program: Pubkey
    accounts: frozenset[Pubkey] = frozenset()
    pools: tuple[SwapPool, ...] = ()


# Without a pools file: Jupiter v6's fixed account and no pool, so no route passes that
# names one. Routes through pools need them declared.
DEFAULT_SWAP_ACCOUNTS = (
    SwapProgramAccounts(JUPITER_V6_PROGRAM_ID, frozenset({JUPITER_V6_EVENT_AUTHORITY})),
)


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
        swap_accounts: per swap program, the fixed accounts and the pools a swap
            leg may name (the pools file).
    """

    relayer: Pubkey
    contract_owner: Pubkey
    mints: frozenset[Pubkey]
    swap_programs: frozenset[Pubkey]
    swap_accounts: tuple[SwapProgramAccounts, ...] = DEFAULT_SWAP_ACCOUNTS
    _leg_writable: frozenset[Pubkey] = field(init=False, repr=False, compare=False)
    _leg_readable: frozenset[Pubkey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        relayer_accounts = {self.relayer_account(m) for m in (*self.mints, WRAPPED_SOL_MINT)}
        pools = {
            a
            for p in self.swap_accounts
            for pool in p.pools
            for a in (pool.address, *pool.accounts)
        }
        writable = frozenset(relayer_accounts | pools | {self.relayer})
        fixed = {a for p in self.swap_accounts for a in (p.program, *p.accounts)}
        programs = self.swap_programs | WELL_KNOWN_PROGRAMS
        readable = writable | fixed | programs | self.mints | {WRAPPED_SOL_MINT}
        object.__setattr__(self, "_leg_writable", writable)
        object.__setattr__(self, "_leg_readable", frozenset(readable))

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

    def check_leg(self, accounts: Iterable[tuple[Pubkey, bool]]) -> None:
        """Check the (account, writable) pairs a swap program's instruction names.

        Raises LegNotAllowed for an account outside the declaration, or one it may
        only read that is writable.
        """
        for account, writable in accounts:
            if account not in self._leg_readable:
                raise LegNotAllowed(
                    "account-not-allowed",
                    f"the swap names {account}: not the relayer's, not a declared pool's"
                    " or swap program's account",
                )
            if writable and account not in self._leg_writable:
                raise LegNotAllowed(
                    "write-not-allowed",
                    f"the swap writes {account}: neither the relayer's token account"
                    " nor a declared pool's",
                )


def build_allowlist(
    relayer: Pubkey,
    contract_owner: Pubkey,
    baskets: Iterable[Basket],
    swap_programs: Iterable[str] = DEFAULT_SWAP_PROGRAMS,
    swap_accounts: Iterable[SwapProgramAccounts] = DEFAULT_SWAP_ACCOUNTS,
) -> Allowlist:
    """The allow-list of a relayer selling `baskets`; ValueError for a malformed program id."""
    return Allowlist(
        relayer=relayer,
        contract_owner=contract_owner,
        mints=frozenset(t.mint for b in baskets for t in b.tokens),
        swap_programs=frozenset(Pubkey.from_string(p) for p in swap_programs),
        swap_accounts=tuple(swap_accounts),
    )


class PoolsError(ValueError):
    """The pools file is not usable."""


def load_swap_accounts(path: str | Path) -> tuple[SwapProgramAccounts, ...]:
    """The declaration in the pools file at `path`; the default when `path` is empty.

    Raises PoolsError for a file that cannot be read or is malformed.
    """
    if not path:
        return DEFAULT_SWAP_ACCOUNTS
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PoolsError(f"cannot read pools file {path}: {exc}") from None
    return parse_swap_accounts(raw)


def parse_swap_accounts(raw: Any) -> tuple[SwapProgramAccounts, ...]:
    """`{"programs": [{program, accounts: [...], pools: [{address, accounts: [...]}]}]}`.

    Every key is base58; `accounts` and `pools` may be left out. A program
    declared twice is an error (one entry per program keeps the file reviewable).
    """
    if not isinstance(raw, Mapping) or not isinstance(raw.get("programs"), list):
        raise PoolsError('pools file must be {"programs": [...]}')
    out: list[SwapProgramAccounts] = []
    for i, entry in enumerate(raw["programs"]):
        where = f"programs[{i}]"
        try:
            if not isinstance(entry, Mapping):
                raise TypeError("not an object")
            pools = entry.get("pools", [])
            if not isinstance(pools, list):
                raise TypeError("pools is not a list")
            declared = SwapProgramAccounts(
                program=_key(entry["program"]),
                accounts=_keys(entry.get("accounts", [])),
                pools=tuple(_pool(p) for p in pools),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PoolsError(f"{where}: {exc}") from None
        if any(p.program == declared.program for p in out):
            raise PoolsError(f"{where}: program {declared.program} declared twice")
        out.append(declared)
    return tuple(out)


def _pool(raw: Any) -> SwapPool:
    if not isinstance(raw, Mapping):
        raise TypeError(f"pool {raw!r} is not an object")
    return SwapPool(_key(raw["address"]), _keys(raw.get("accounts", [])))


def _keys(raw: Any) -> frozenset[Pubkey]:
    if not isinstance(raw, list):
        raise TypeError(f"{raw!r} is not a list of keys")
    return frozenset(_key(k) for k in raw)


def _key(raw: Any) -> Pubkey:
    if not isinstance(raw, str):
        raise TypeError(f"{raw!r} is not a base58 key")
    try:
        return Pubkey.from_string(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a base58 key") from None
