"""Reading a CronJob's run report from Redis, for the API's /metrics.

Recovery and reconciliation are CronJobs: they exit after each run, so nothing
scrapes them. Each run writes its counts to one Redis hash; the API reads that
hash when Prometheus scrapes it and exports the numbers through a collector.
`ReportCollector` is the reading half, shared by every such report; each
report's module says which hash it reads and which metrics it yields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relayq.core.keys import Keys

READ_TIMEOUT_SECONDS = 1.0


class ReportCollector(Collector):
    """Exports the last snapshot of one report hash; `refresh` reads it again."""

    def __init__(self) -> None:
        self._report: dict[str, str] = {}

    def key(self, keys: Keys) -> str:
        """The Redis hash this report lives in."""
        raise NotImplementedError

    async def refresh(self, redis: Redis, keys: Keys) -> None:
        """Read the hash; on a Redis error keep the previous snapshot (a scrape must not fail)."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            report = await asyncio.wait_for(_hgetall(redis, self.key(keys)), READ_TIMEOUT_SECONDS)
            self._report = {_text(k): _text(v) for k, v in report.items()}

    @property
    def report(self) -> Mapping[str, str]:
        return self._report

    def number(self, field: str) -> float:
        """A numeric field of the snapshot, 0 when absent or not a number."""
        try:
            return float(self._report.get(field, 0))
        except ValueError:
            return 0.0


async def _hgetall(redis: Redis, key: str) -> dict[Any, Any]:
    return dict(await redis.hgetall(key))  # type: ignore[misc]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
