"""Readiness of the gateway's dependencies, probed at most once a second.

`/readyz` is public (it shares the API's port, which the ingress exposes) and
every kubelet polls it: if each request pinged Redis and MongoDB, anyone could
multiply the load on both. So requests share probes: those arriving while a
probe is in flight wait for it (single flight), and its answer serves every
request for CACHE_SECONDS after it came back. The metrics scrape reads the
same answers (relayq.api.metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from relayq.api.keys import CLIENTS
from relayq.core.telemetry import probe_dependency

CACHE_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Health:
    """Whether each dependency answered the last probe."""

    redis: bool
    mongo: bool


class Readiness:
    """The dependencies' health, probed at most once per `ttl` seconds, one probe at a time."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[Health]],
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._ttl = ttl
        self._clock = clock
        self._last: Health | None = None
        self._at = 0.0
        self._in_flight: asyncio.Task[Health] | None = None

    async def check(self) -> Health:
        """The last answer if younger than `ttl`, else the probe in flight, or a new one."""
        if self._last is not None and self._clock() - self._at < self._ttl:
            return self._last
        if self._in_flight is None:
            self._in_flight = asyncio.create_task(self._run())
        # Shielded: a caller that gives up (its client went away) does not cancel
        # the probe the others wait for.
        return await asyncio.shield(self._in_flight)

    async def _run(self) -> Health:
        try:
            health = await self._probe()
            self._last, self._at = health, self._clock()
            return health
        finally:
            self._in_flight = None


def probe_of(app: web.Application) -> Callable[[], Awaitable[Health]]:
    """Ping the app's Redis and MongoDB at once; sets relayq_dependency_up for each."""

    async def probe() -> Health:
        clients = app[CLIENTS]
        redis_ok, mongo_ok = await asyncio.gather(
            probe_dependency("redis", clients.redis.ping(), PROBE_TIMEOUT_SECONDS),
            probe_dependency("mongodb", clients.store.ping(), PROBE_TIMEOUT_SECONDS),
        )
        return Health(redis_ok, mongo_ok)

    return probe


READINESS = web.AppKey("readiness", Readiness)
