"""Where swap instructions come from: a Jupiter-compatible swap API, or a local treasury.

Both give, per basket token, the instructions that turn the relayer's SOL into
that token in the relayer's own token account; the relayer then packs them,
with its Jito tip, into the transactions of one bundle. Nothing here signs for
the relayer or sends anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from solders.address_lookup_table_account import AddressLookupTable, AddressLookupTableAccount
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import get_associated_token_address
from spl.token.instructions import transfer_checked as spl_transfer_checked
from spl.token.models import TransferCheckedParams

from relayq.relayer.allowlist import Allowlist
from relayq.relayer.baskets import BasketToken, Leg
from relayq.relayer.chain.errors import ChainRejected, ChainUnavailable, SwapRefused
from relayq.relayer.chain.metrics import CHAIN_REQUEST_SECONDS, CHAIN_REQUESTS, SWAPS_REFUSED
from relayq.relayer.chain.retrying import with_retries
from relayq.relayer.chain.rpc import SolanaRpc
from relayq.relayer.chain.swap_checks import checked_instructions, checked_quote

WRAPPED_SOL_MINT = "So11111111111111111111111111111111111111112"


class InsufficientLiquidity(Exception):
    """The swap source cannot sell this much of a token now."""

    def __init__(self, symbol: str, wanted: int, available: int | None) -> None:
        have = "no route" if available is None else f"{available} available"
        super().__init__(f"cannot buy {wanted} base units of {symbol}: {have}")
        self.symbol = symbol


@dataclass(frozen=True)
class LegPlan:
    """A leg with the instructions that execute it and the extra signers they need."""

    leg: Leg
    instructions: list[Instruction]
    signers: list[Keypair] = field(default_factory=list)
    lookup_tables: list[AddressLookupTableAccount] = field(default_factory=list)


class SwapSource(Protocol):
    price_source: str

    async def plan(self, relayer: Pubkey, token: BasketToken, lamports: int) -> LegPlan:
        """Instructions that buy `token` for `lamports` into the relayer's token account."""
        ...

    async def close(self) -> None: ...


class TreasurySwap:
    """A local treasury selling at the basket's fixed prices: SOL in, tokens out, one transaction.

    The treasury co-signs its leg, so the exchange is atomic: both transfers land or neither.
    """

    price_source = "treasury"

    def __init__(self, rpc: SolanaRpc, treasury: Keypair) -> None:
        self.rpc = rpc
        self.treasury = treasury

    async def plan(self, relayer: Pubkey, token: BasketToken, lamports: int) -> LegPlan:
        if token.lamports_per_token is None:
            raise ChainRejected(f"token {token.symbol} has no lamportsPerToken for the treasury")
        amount = lamports * 10**token.decimals // token.lamports_per_token
        source = get_associated_token_address(self.treasury.pubkey(), token.mint)
        available = await self.rpc.token_balance(source)
        if amount <= 0 or available < amount:
            raise InsufficientLiquidity(token.symbol, amount, available)
        pay = transfer(
            TransferParams(from_pubkey=relayer, to_pubkey=self.treasury.pubkey(), lamports=lamports)
        )
        give = spl_transfer_checked(
            TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                source=source,
                mint=token.mint,
                dest=get_associated_token_address(relayer, token.mint),
                owner=self.treasury.pubkey(),
                amount=amount,
                decimals=token.decimals,
            )
        )
        return LegPlan(Leg(token, lamports, amount), [pay, give], [self.treasury])

    async def close(self) -> None:
        return None


class JupiterSwap:
    """A Jupiter-compatible swap API (`GET /quote`, `POST /swap-instructions`).

    The amount bought is the quote's `otherAmountThreshold`, the least the route
    guarantees after slippage; any surplus stays with the relayer. The quote and
    the instructions are checked against the request and the allow-list
    (`swap_checks`) before they are handed on to be signed: a bad answer raises
    SwapRefused.
    """

    price_source = "jupiter"

    def __init__(
        self,
        base_url: str,
        rpc: SolanaRpc,
        slippage_bps: int,
        allowlist: Allowlist,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.allowlist = allowlist
        self.rpc = rpc
        self.slippage_bps = slippage_bps
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            async with self._session.request(method, f"{self.base_url}{path}", **kwargs) as resp:
                if resp.status == 429 or resp.status >= 500:
                    outcome = "unavailable"
                    raise ChainUnavailable(f"swap api {path}: HTTP {resp.status}")
                text = await resp.text()
                try:
                    body = json.loads(text)
                except ValueError:
                    body = None
                if resp.status >= 400:
                    outcome = "error"
                    raise ChainRejected(f"swap api {path}: HTTP {resp.status}: {text}", data=body)
                if body is None:
                    outcome = "error"
                    raise SwapRefused("malformed", f"swap api {path} answered no JSON object")
                return body
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
            outcome = "unavailable"
            raise ChainUnavailable(f"swap api {path}: {exc}") from exc
        finally:
            CHAIN_REQUESTS.labels(service="swap", method=path, outcome=outcome).inc()
            CHAIN_REQUEST_SECONDS.labels(service="swap", method=path).observe(
                time.perf_counter() - t0
            )

    async def plan(self, relayer: Pubkey, token: BasketToken, lamports: int) -> LegPlan:
        try:
            return await self._checked_plan(relayer, token, lamports)
        except SwapRefused as exc:
            SWAPS_REFUSED.labels(check=exc.check).inc()
            raise

    async def _checked_plan(self, relayer: Pubkey, token: BasketToken, lamports: int) -> LegPlan:
        if relayer != self.allowlist.relayer:
            raise SwapRefused("authority", f"{relayer} is not the relayer of the allow-list")
        params = {
            "inputMint": WRAPPED_SOL_MINT,
            "outputMint": str(token.mint),
            "amount": str(lamports),
            "slippageBps": str(self.slippage_bps),
        }
        try:
            raw_quote = await with_retries(lambda: self._request("GET", "/quote", params=params))
        except ChainRejected as exc:
            raise InsufficientLiquidity(token.symbol, 0, None) from exc
        quote = checked_quote(
            raw_quote, mint=token.mint, lamports=lamports, slippage_bps=self.slippage_bps
        )
        amount = int(quote["otherAmountThreshold"])
        body = {
            "quoteResponse": quote,
            "userPublicKey": str(relayer),
            "wrapAndUnwrapSol": True,
            "dynamicComputeUnitLimit": True,
        }
        found = await with_retries(lambda: self._request("POST", "/swap-instructions", json=body))
        instructions = checked_instructions(
            found, self.allowlist, mint=token.mint, lamports=lamports
        )
        tables = found.get("addressLookupTableAddresses", [])
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            raise SwapRefused("malformed", "addressLookupTableAddresses is not a list of keys")
        try:
            lookup = await self._lookup_tables(tables)
        except ValueError as exc:
            raise SwapRefused("malformed", f"bad address lookup table: {exc}") from None
        return LegPlan(Leg(token, lamports, amount), instructions, [], lookup)

    async def _lookup_tables(self, addresses: list[str]) -> list[AddressLookupTableAccount]:
        out = []
        for address in addresses:
            key = Pubkey.from_string(address)
            data = await self.rpc.account_data(key)
            if data is None:
                raise ChainRejected(f"address lookup table {address} not found")
            table = AddressLookupTable.deserialize(data)
            out.append(AddressLookupTableAccount(key, list(table.addresses)))
        return out
