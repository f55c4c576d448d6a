"""A Jito block engine client: the bundle JSON-RPC methods over aiohttp.

The block engine rate-limits each client (a few requests per second by
default), so every call waits for a slot of a local limiter first, and a 429
answer is retried with backoff rather than failing the purchase.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from relayq.relayer.chain.errors import ChainRejected, ChainUnavailable
from relayq.relayer.chain.metrics import CHAIN_REQUEST_SECONDS, CHAIN_REQUESTS
from relayq.relayer.chain.retrying import with_retries

MAX_BUNDLE_TRANSACTIONS = 5
TIP_ACCOUNTS_TTL_SECONDS = 600.0


@dataclass(frozen=True)
class BundleStatus:
    """A bundle's state: Invalid (unknown or expired), Pending, Failed or Landed."""

    bundle_id: str
    status: str
    landed_slot: int | None = None


class RequestSpacing:
    """Spaces requests at least 1/rate apart, across every caller of one client."""

    def __init__(self, rate_per_second: float) -> None:
        self.interval = 1.0 / rate_per_second
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class JitoClient:
    """sendBundle, getBundleStatuses, getInflightBundleStatuses and getTipAccounts."""

    def __init__(
        self, base_url: str, requests_per_second: float = 5.0, timeout_seconds: float = 5.0
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/api/v1/bundles"
        self.spacing = RequestSpacing(requests_per_second)
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._tips: list[Pubkey] = []
        self._tips_at = 0.0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def _call(self, method: str, params: list[Any]) -> Any:
        await self.spacing.wait()
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            async with self._client().post(self.url, json=body) as resp:
                if resp.status == 429 or resp.status >= 500:
                    outcome = "unavailable"
                    raise ChainUnavailable(f"jito {method}: HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            outcome = "unavailable"
            raise ChainUnavailable(f"jito {method}: {exc}") from exc
        finally:
            CHAIN_REQUESTS.labels(service="jito", method=method, outcome=outcome).inc()
            CHAIN_REQUEST_SECONDS.labels(service="jito", method=method).observe(
                time.perf_counter() - t0
            )
        if not isinstance(data, dict):
            raise ChainUnavailable(f"jito {method}: answer is not a JSON-RPC object")
        if data.get("error") is not None:
            err = data["error"]
            CHAIN_REQUESTS.labels(service="jito", method=method, outcome="error").inc()
            raise ChainRejected(
                f"jito {method}: {err.get('message', err)}",
                code=err.get("code"),
                data=err.get("data"),
            )
        return data.get("result")

    async def tip_accounts(self) -> list[Pubkey]:
        if self._tips and time.monotonic() - self._tips_at < TIP_ACCOUNTS_TTL_SECONDS:
            return self._tips
        result = await with_retries(lambda: self._call("getTipAccounts", []))
        self._tips = [Pubkey.from_string(a) for a in result]
        self._tips_at = time.monotonic()
        if not self._tips:
            raise ChainRejected("jito getTipAccounts: no tip accounts")
        return self._tips

    async def random_tip_account(self, rng: random.Random | None = None) -> Pubkey:
        return (rng or random).choice(await self.tip_accounts())

    async def send_bundle(self, transactions: Sequence[VersionedTransaction]) -> str:
        """Send signed transactions as one all-or-nothing bundle; returns the bundle id.

        Sending the same bytes again is safe: the cluster runs a signature at most once.
        """
        if not 1 <= len(transactions) <= MAX_BUNDLE_TRANSACTIONS:
            raise ValueError(f"a bundle holds 1 to {MAX_BUNDLE_TRANSACTIONS} transactions")
        encoded = [base64.b64encode(bytes(tx)).decode() for tx in transactions]
        result = await with_retries(
            lambda: self._call("sendBundle", [encoded, {"encoding": "base64"}])
        )
        return str(result)

    async def inflight_statuses(self, bundle_ids: Sequence[str]) -> list[BundleStatus]:
        result = await with_retries(
            lambda: self._call("getInflightBundleStatuses", [list(bundle_ids)])
        )
        return [
            BundleStatus(v["bundle_id"], v["status"], v.get("landed_slot"))
            for v in (result or {}).get("value", [])
            if v is not None
        ]

    async def bundle_statuses(self, bundle_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Landed bundles' details (slot, transactions, confirmation), None for the others."""
        result = await with_retries(lambda: self._call("getBundleStatuses", [list(bundle_ids)]))
        value: list[dict[str, Any] | None] = (result or {}).get("value", [])
        return value
