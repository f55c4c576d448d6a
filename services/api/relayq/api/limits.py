"""Token buckets kept in the gateway's process: limits that hold without Redis.

The per-client limit is shared by every replica through Redis
(`Queue.rate_limit`) and fails open when Redis is down, so that an outage of
Redis does not become an outage of submissions (they are recorded `pending`).
The limits here are per replica and always hold: a ceiling per source address
before authentication, a budget of failed authentications per source (so a
flood of random keys never becomes a flood of MongoDB lookups), and a limit on
admin routes.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from aiohttp import web

from relayq.api.settings import ApiSettings

# Sources tracked at once; the least recently seen is forgotten first (a full
# bucket is what it would start with anyway, so forgetting never lowers a limit
# below what a fresh source gets).
MAX_SOURCES = 65_536


class Buckets:
    """One token bucket per key, at most `max_keys` of them (least recently used go)."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = MAX_SOURCES) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._max = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str, at: float) -> float:
        tokens, stamp = self._buckets.get(key, (self.burst, at))
        return min(self.burst, tokens + (at - stamp) * self.rate)

    def available(self, key: str) -> bool:
        """Whether `key` has a token now (nothing is taken)."""
        return self._level(key, time.monotonic()) >= 1

    def take(self, key: str) -> float:
        """Take a token: 0 when there was one, else the seconds until there is."""
        at = time.monotonic()
        tokens = self._level(key, at)
        if tokens >= 1:
            self._store(key, tokens - 1, at)
            return 0.0
        self._store(key, tokens, at)
        return (1 - tokens) / self.rate

    def _store(self, key: str, tokens: float, at: float) -> None:
        self._buckets[key] = (tokens, at)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)


class Limits:
    """The gateway's in-process limits, from its settings."""

    def __init__(self, api: ApiSettings) -> None:
        self.sources = Buckets(api.source_rate_limit_per_s, api.source_rate_limit_per_s)
        self.failures = Buckets(api.auth_failures_per_s, api.auth_failure_burst)
        self.admin = Buckets(api.admin_rate_limit_per_s, api.admin_rate_limit_per_s, 1)


def source_of(request: web.Request, header: str | None) -> str:
    """The caller's address: the right-most entry of `header` when a trusted proxy
    sets one (the address that proxy saw), else the connection's peer."""
    if header:
        forwarded = request.headers.get(header, "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return request.remote or "unknown"


def retry_after(wait_seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, int(wait_seconds + 0.999)))}
