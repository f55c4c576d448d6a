"""Genesis state of the devchain and the manifest that tells clients about it.

Every key is derived from the `--seed` string, so the same seed gives the same
addresses on every start. The state is built by real transactions through the
SPL Token program, except the associated token accounts: LiteSVM does not ship
the Associated Token Account program, so they are written directly (correctly
packed, rent-exempt, at their derived addresses) and behave like any other.

Manifest (`<state-dir>/chain.json`), every key always present::

    {
      "rpcUrl": "http://127.0.0.1:8899",        # Solana JSON-RPC (POST /)
      "jitoUrl": "http://127.0.0.1:8899",       # block engine base: POST <jitoUrl>/api/v1/bundles
      "tipAccounts": ["<pubkey>", ... 8],       # funded rent-exempt system accounts
      "minTipLamports": 1000,                   # smallest accepted bundle tip
      "treasury": {"pubkey": "..", "keypairFile": "/abs/treasury.json"},
      "relayer":  {"pubkey": "..", "keypairFile": "/abs/relayer.json"},
      "contract": {"owner": "..", "keypairFile": "/abs/contract.json",
                   "tokenAccounts": {"<mint>": "<owner's associated token account>"}},
      "mints": [{"symbol": "RLQA", "mint": "..", "decimals": 6,
                 "treasuryAccount": "<treasury ATA>", "relayerAccount": "<relayer ATA>"}, ...],
      "slotMs": 400,
      "blockhashValiditySlots": 150,
      "seed": "relayq-devchain"
    }

Balances at start: treasury 1,000,000 SOL and 10^15 base units of each mint
(the mint authority is the treasury); relayer 1,000 SOL and empty token
accounts for each mint; contract owner 10 SOL and empty token accounts.
Keypair files hold the 64 secret-key bytes as a JSON array (solana-keygen
format), mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solders.account import Account
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.token import ID as TOKEN_PROGRAM_ID
from solders.token.associated import get_associated_token_address
from solders.token.state import TokenAccount, TokenAccountState
from solders.transaction import Transaction, VersionedTransaction

from relayq.devchain.ledger import MINT_LEN, TOKEN_ACCOUNT_LEN, Ledger

LAMPORTS_PER_SOL = 1_000_000_000
SYMBOLS = ("RLQA", "RLQB", "RLQC")
DECIMALS = 6
TREASURY_TOKENS = 10**15
TREASURY_LAMPORTS = 1_000_000 * LAMPORTS_PER_SOL
RELAYER_LAMPORTS = 1_000 * LAMPORTS_PER_SOL
CONTRACT_LAMPORTS = 10 * LAMPORTS_PER_SOL
FAUCET_LAMPORTS = 10**17  # requestAirdrop pays from this
TIP_ACCOUNT_COUNT = 8


def derive_keypair(seed: str, name: str) -> Keypair:
    """A keypair that depends only on the seed string and its role name."""
    return Keypair.from_seed(hashlib.sha256(f"relayq-devchain/{seed}/{name}".encode()).digest())


@dataclass(frozen=True)
class MintInfo:
    """One token of the basket and its well-known token accounts."""

    symbol: str
    keypair: Keypair
    decimals: int
    treasury_account: Pubkey
    relayer_account: Pubkey
    contract_account: Pubkey

    @property
    def mint(self) -> Pubkey:
        return self.keypair.pubkey()


@dataclass(frozen=True)
class Genesis:
    """The keys of the seeded state (derived, nothing executed yet)."""

    seed: str
    treasury: Keypair
    relayer: Keypair
    contract: Keypair
    faucet: Keypair
    tip_accounts: tuple[Pubkey, ...]
    mints: tuple[MintInfo, ...]

    @classmethod
    def derive(cls, seed: str) -> Genesis:
        treasury, relayer, contract = (
            derive_keypair(seed, n) for n in ("treasury", "relayer", "contract")
        )
        mints = []
        for symbol in SYMBOLS:
            kp = derive_keypair(seed, f"mint/{symbol}")
            mint = kp.pubkey()
            mints.append(MintInfo(
                symbol, kp, DECIMALS,
                get_associated_token_address(treasury.pubkey(), mint),
                get_associated_token_address(relayer.pubkey(), mint),
                get_associated_token_address(contract.pubkey(), mint),
            ))  # fmt: skip
        tips = tuple(derive_keypair(seed, f"tip/{i}").pubkey() for i in range(TIP_ACCOUNT_COUNT))
        return cls(
            seed, treasury, relayer, contract, derive_keypair(seed, "faucet"), tips, tuple(mints)
        )


def _send(ledger: Ledger, payer: Keypair, signers: list[Keypair], ixs: list[Instruction]) -> None:
    blockhash, _ = ledger.latest_blockhash()
    msg = Message.new_with_blockhash(ixs, payer.pubkey(), Hash.from_string(blockhash))
    tx = VersionedTransaction.from_legacy(Transaction(signers, msg, Hash.from_string(blockhash)))
    outcome = ledger.execute(tx)
    if outcome.err is not None:
        raise RuntimeError(f"genesis transaction failed: {outcome.err} {outcome.logs}")


def initialize_mint_ix(mint: Pubkey, decimals: int, authority: Pubkey) -> Instruction:
    """SPL Token InitializeMint2 (tag 20), no freeze authority."""
    data = bytes([20, decimals]) + bytes(authority) + b"\x00"
    return Instruction(TOKEN_PROGRAM_ID, data, [AccountMeta(mint, False, True)])


def mint_to_ix(mint: Pubkey, dest: Pubkey, authority: Pubkey, amount: int) -> Instruction:
    """SPL Token MintTo (tag 7)."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        bytes([7]) + amount.to_bytes(8, "little"),
        [
            AccountMeta(mint, False, True),
            AccountMeta(dest, False, True),
            AccountMeta(authority, True, False),
        ],
    )


def token_account(ledger: Ledger, address: Pubkey, mint: Pubkey, owner: Pubkey) -> None:
    """An initialized, empty token account at `address` (an associated token address)."""
    state = TokenAccount(mint, owner, 0, None, TokenAccountState.Initialized, None, 0, None)
    lamports = ledger.svm.minimum_balance_for_rent_exemption(TOKEN_ACCOUNT_LEN)
    ledger.set_account(address, Account(lamports, bytes(state), TOKEN_PROGRAM_ID))


def create_genesis(ledger: Ledger, g: Genesis) -> None:
    """Fund the accounts, create the mints and token accounts, mint the treasury's supply."""
    faucet = g.faucet
    ledger.set_account(faucet.pubkey(), Account(FAUCET_LAMPORTS, b"", Pubkey.default()))
    rent_free = ledger.svm.minimum_balance_for_rent_exemption(0)
    funding = [
        (g.treasury.pubkey(), TREASURY_LAMPORTS),
        (g.relayer.pubkey(), RELAYER_LAMPORTS),
        (g.contract.pubkey(), CONTRACT_LAMPORTS),
        *((tip, rent_free) for tip in g.tip_accounts),
    ]
    ixs = [
        transfer(TransferParams(from_pubkey=faucet.pubkey(), to_pubkey=k, lamports=n))
        for k, n in funding
    ]
    _send(ledger, faucet, [faucet], ixs)
    mint_rent = ledger.svm.minimum_balance_for_rent_exemption(MINT_LEN)
    treasury = g.treasury
    for m in g.mints:
        create = create_account(CreateAccountParams(
            from_pubkey=treasury.pubkey(), to_pubkey=m.mint, lamports=mint_rent,
            space=MINT_LEN, owner=TOKEN_PROGRAM_ID,
        ))  # fmt: skip
        _send(ledger, treasury, [treasury, m.keypair],
              [create, initialize_mint_ix(m.mint, m.decimals, treasury.pubkey())])  # fmt: skip
        for owner, address in (
            (treasury.pubkey(), m.treasury_account),
            (g.relayer.pubkey(), m.relayer_account),
            (g.contract.pubkey(), m.contract_account),
        ):
            token_account(ledger, address, m.mint, owner)
        mint_supply = mint_to_ix(m.mint, m.treasury_account, treasury.pubkey(), TREASURY_TOKENS)
        _send(ledger, treasury, [treasury], [mint_supply])


def write_keypair(path: Path, keypair: Keypair) -> None:
    """solana-keygen format (JSON array of the 64 secret bytes), readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(list(bytes(keypair)), f)
    os.chmod(path, 0o600)


def read_keypair(path: str | Path) -> Keypair:
    return Keypair.from_bytes(bytes(json.loads(Path(path).read_text())))


def write_manifest(
    state_dir: Path,
    g: Genesis,
    *,
    url: str,
    slot_ms: int,
    validity_slots: int,
    min_tip_lamports: int,
) -> dict[str, Any]:
    """Write the keypair files and chain.json (atomically) into state_dir; return the manifest."""
    state_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, kp in (("treasury", g.treasury), ("relayer", g.relayer), ("contract", g.contract)):
        files[name] = (state_dir / f"{name}.json").resolve()
        write_keypair(files[name], kp)
    manifest = {
        "rpcUrl": url,
        "jitoUrl": url,
        "tipAccounts": [str(t) for t in g.tip_accounts],
        "minTipLamports": min_tip_lamports,
        "treasury": {"pubkey": str(g.treasury.pubkey()), "keypairFile": str(files["treasury"])},
        "relayer": {"pubkey": str(g.relayer.pubkey()), "keypairFile": str(files["relayer"])},
        "contract": {
            "owner": str(g.contract.pubkey()),
            "keypairFile": str(files["contract"]),
            "tokenAccounts": {str(m.mint): str(m.contract_account) for m in g.mints},
        },
        "mints": [
            {
                "symbol": m.symbol,
                "mint": str(m.mint),
                "decimals": m.decimals,
                "treasuryAccount": str(m.treasury_account),
                "relayerAccount": str(m.relayer_account),
            }
            for m in g.mints
        ],
        "slotMs": slot_ms,
        "blockhashValiditySlots": validity_slots,
        "seed": g.seed,
    }
    tmp = state_dir / "chain.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(state_dir / "chain.json")
    return manifest
