"""Where the chain services are and which keys the relayer signs with (`RELAYQ_*` variables).

Every variable is listed in the README's relayer settings table; keep the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from solders.pubkey import Pubkey

from relayq.core.env import SettingsError, number
from relayq.relayer.allowlist import DEFAULT_SWAP_PROGRAMS


class SwapSourceKind(StrEnum):
    """Where swap instructions come from."""

    JUPITER = "jupiter"
    TREASURY = "treasury"


@dataclass(frozen=True)
class ChainSettings:
    """The relayer's chain configuration.

    Attributes:
        rpc_url: Solana JSON-RPC endpoint (`RELAYQ_SOLANA_RPC_URL`).
        jito_url: Jito block engine base URL; bundles go to `<url>/api/v1/bundles`
            (`RELAYQ_JITO_URL`).
        jito_requests_per_second: the block engine's rate limit for this client (`RELAYQ_JITO_RPS`).
        tip_lamports: the tip paid to a random tip account inside the swap transaction
            (`RELAYQ_JITO_TIP_LAMPORTS`).
        swap_source: `jupiter` (a Jupiter-compatible swap API) or `treasury` (a local
            treasury that sells at the basket's fixed prices) (`RELAYQ_SWAP_SOURCE`).
        swap_api_url: the Jupiter-compatible API base, e.g. https://lite-api.jup.ag/swap/v1
            (`RELAYQ_SWAP_API_URL`).
        slippage_bps: slippage allowed on a Jupiter quote (`RELAYQ_SLIPPAGE_BPS`).
        swap_programs: the programs a swap API's swap instruction may call, base58
            (`RELAYQ_SWAP_PROGRAMS`, comma-separated; default Jupiter v6).
        swap_pools_file: per swap program, the fixed accounts and the pools a swap
            leg may name, JSON (`RELAYQ_SWAP_POOLS_FILE`; unset: Jupiter v6's event
            authority and no pool). See `relayq/relayer/allowlist.py`.
        relayer_keypair_file: the relayer's signing key, solana-keygen JSON
            (`RELAYQ_RELAYER_KEYPAIR_FILE`); held by the signer service only, and by
            the relayer itself when no signer service is set (local development).
        signer_url: the signer service that holds the relayer's key
            (`RELAYQ_SIGNER_URL`); when set, the relayer needs no keypair.
        signer_token: the bearer token the signer service requires
            (`RELAYQ_SIGNER_TOKEN`, or a file holding it: `RELAYQ_SIGNER_TOKEN_FILE`).
        treasury_keypair_file: the local treasury's key, for the treasury swap only
            (`RELAYQ_TREASURY_KEYPAIR_FILE`).
        contract_owner: the owner of the token accounts that receive the bought tokens
            (`RELAYQ_CONTRACT_OWNER`).
        baskets_file: the baskets a client can buy, JSON (`RELAYQ_BASKETS_FILE`).
        swap_wait_seconds: how long a purchase request waits for its bundle to land
            before answering `swap_pending` (`RELAYQ_SWAP_WAIT_SECONDS`).
        confirm_wait_seconds: how long a transfer run waits for confirmation before
            checking again later (`RELAYQ_CONFIRM_WAIT_SECONDS`).
        request_timeout_seconds: timeout of one RPC or block-engine call
            (`RELAYQ_CHAIN_TIMEOUT_SECONDS`).
        purchase_concurrency: purchases one gateway process swaps at once; more wait
            their turn (`RELAYQ_PURCHASE_CONCURRENCY`).
        transfer_max_signings: transactions signed for one purchase's transfer at most;
            one more signing would be needed means the task is parked for review
            (`RELAYQ_TRANSFER_MAX_SIGNINGS`).
        purchase_window_seconds: the window of the purchase limits below
            (`RELAYQ_PURCHASE_WINDOW_SECONDS`).
        client_purchases, client_lamports: purchases and lamports one client may
            buy per window; 0 is no limit (`RELAYQ_CLIENT_PURCHASES_PER_WINDOW`,
            `RELAYQ_CLIENT_LAMPORTS_PER_WINDOW`).
        wallet_purchases, wallet_lamports: the same per buyer's wallet
            (`RELAYQ_WALLET_PURCHASES_PER_WINDOW`, `RELAYQ_WALLET_LAMPORTS_PER_WINDOW`).
        sol_reserve_lamports: what the relayer keeps beyond a purchase's own needs
            (its SOL, tip and fees) for the transfers that follow; a purchase that
            would dip into it is refused before signing (`RELAYQ_RELAYER_SOL_RESERVE_LAMPORTS`).
    """

    rpc_url: str = "http://127.0.0.1:8899"
    jito_url: str = "http://127.0.0.1:8899"
    jito_requests_per_second: float = 5.0
    tip_lamports: int = 10_000
    swap_source: SwapSourceKind = SwapSourceKind.TREASURY
    swap_api_url: str = "https://lite-api.jup.ag/swap/v1"
    slippage_bps: int = 50
    swap_programs: tuple[str, ...] = DEFAULT_SWAP_PROGRAMS
    swap_pools_file: str = ""
    relayer_keypair_file: str = ""
    signer_url: str = ""
    signer_token: str = ""
    treasury_keypair_file: str = ""
    contract_owner: str = ""
    baskets_file: str = ""
    swap_wait_seconds: float = 10.0
    confirm_wait_seconds: float = 15.0
    request_timeout_seconds: float = 5.0
    purchase_concurrency: int = 32
    transfer_max_signings: int = 3
    purchase_window_seconds: float = 3600.0
    client_purchases: int = 0
    client_lamports: int = 0
    wallet_purchases: int = 0
    wallet_lamports: int = 0
    sol_reserve_lamports: int = 10_000_000

    @property
    def configured(self) -> bool:
        """True when the relayer can run: a signer (service or key), a contract and baskets."""
        signer = self.signer_url or self.relayer_keypair_file
        return bool(signer and self.contract_owner and self.baskets_file)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ChainSettings:
        env = os.environ if environ is None else environ
        d = cls()
        raw_source = env.get("RELAYQ_SWAP_SOURCE", d.swap_source.value)
        try:
            source = SwapSourceKind(raw_source)
        except ValueError:
            raise SettingsError(
                f"RELAYQ_SWAP_SOURCE={raw_source!r} must be jupiter or treasury"
            ) from None
        settings = cls(
            rpc_url=env.get("RELAYQ_SOLANA_RPC_URL", d.rpc_url),
            jito_url=env.get("RELAYQ_JITO_URL", d.jito_url).rstrip("/"),
            jito_requests_per_second=number(
                env, "RELAYQ_JITO_RPS", d.jito_requests_per_second, 0.1
            ),
            tip_lamports=int(number(env, "RELAYQ_JITO_TIP_LAMPORTS", d.tip_lamports, 1000)),
            swap_source=source,
            swap_api_url=env.get("RELAYQ_SWAP_API_URL", d.swap_api_url).rstrip("/"),
            slippage_bps=int(number(env, "RELAYQ_SLIPPAGE_BPS", d.slippage_bps, 0)),
            swap_programs=_programs(env, d.swap_programs),
            swap_pools_file=env.get("RELAYQ_SWAP_POOLS_FILE", ""),
            relayer_keypair_file=env.get("RELAYQ_RELAYER_KEYPAIR_FILE", ""),
            signer_url=env.get("RELAYQ_SIGNER_URL", "").rstrip("/"),
            signer_token=signer_token(env),
            treasury_keypair_file=env.get("RELAYQ_TREASURY_KEYPAIR_FILE", ""),
            contract_owner=env.get("RELAYQ_CONTRACT_OWNER", ""),
            baskets_file=env.get("RELAYQ_BASKETS_FILE", ""),
            swap_wait_seconds=number(env, "RELAYQ_SWAP_WAIT_SECONDS", d.swap_wait_seconds, 0),
            confirm_wait_seconds=number(
                env, "RELAYQ_CONFIRM_WAIT_SECONDS", d.confirm_wait_seconds, 0
            ),
            request_timeout_seconds=number(
                env, "RELAYQ_CHAIN_TIMEOUT_SECONDS", d.request_timeout_seconds, 0.1
            ),
            purchase_concurrency=int(
                number(env, "RELAYQ_PURCHASE_CONCURRENCY", d.purchase_concurrency, 1)
            ),
            transfer_max_signings=int(
                number(env, "RELAYQ_TRANSFER_MAX_SIGNINGS", d.transfer_max_signings, 1)
            ),
            purchase_window_seconds=number(
                env, "RELAYQ_PURCHASE_WINDOW_SECONDS", d.purchase_window_seconds, 1
            ),
            client_purchases=_count(env, "RELAYQ_CLIENT_PURCHASES_PER_WINDOW"),
            client_lamports=_count(env, "RELAYQ_CLIENT_LAMPORTS_PER_WINDOW"),
            wallet_purchases=_count(env, "RELAYQ_WALLET_PURCHASES_PER_WINDOW"),
            wallet_lamports=_count(env, "RELAYQ_WALLET_LAMPORTS_PER_WINDOW"),
            sol_reserve_lamports=int(
                number(env, "RELAYQ_RELAYER_SOL_RESERVE_LAMPORTS", d.sol_reserve_lamports, 0)
            ),
        )
        if settings.slippage_bps > 10_000:
            raise SettingsError("RELAYQ_SLIPPAGE_BPS must be at most 10000")
        treasury = settings.swap_source is SwapSourceKind.TREASURY
        if settings.signer_url and not settings.signer_token:
            raise SettingsError(
                "RELAYQ_SIGNER_URL needs RELAYQ_SIGNER_TOKEN or RELAYQ_SIGNER_TOKEN_FILE"
            )
        if treasury and settings.configured and not settings.treasury_keypair_file:
            raise SettingsError("RELAYQ_SWAP_SOURCE=treasury needs RELAYQ_TREASURY_KEYPAIR_FILE")
        return settings


def signer_token(env: Mapping[str, str]) -> str:
    """The signer's token: `RELAYQ_SIGNER_TOKEN`, else the file `RELAYQ_SIGNER_TOKEN_FILE`."""
    token = env.get("RELAYQ_SIGNER_TOKEN", "")
    path = env.get("RELAYQ_SIGNER_TOKEN_FILE", "")
    if not token and path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read RELAYQ_SIGNER_TOKEN_FILE {path}: {exc}") from None
    return token


def _count(env: Mapping[str, str], name: str) -> int:
    """A limit: a whole number, 0 (the default) for none."""
    value = number(env, name, 0, 0)
    if value != int(value):
        raise SettingsError(f"{name} must be a whole number")
    return int(value)


def _programs(env: Mapping[str, str], default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get("RELAYQ_SWAP_PROGRAMS")
    if raw is None:
        return default
    programs = tuple(p.strip() for p in raw.split(",") if p.strip())
    for program in programs:
        try:
            Pubkey.from_string(program)
        except ValueError:
            raise SettingsError(
                f"RELAYQ_SWAP_PROGRAMS: {program!r} is not a base58 program id"
            ) from None
    if not programs:
        raise SettingsError("RELAYQ_SWAP_PROGRAMS names no program")
    return programs
