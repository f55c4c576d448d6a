"""Quotas per window shared by every replica through Redis: uses and an amount per scope.

A quota caps, within fixed windows of `window_seconds`, how many times a scope
(a client, a wallet) may act and how much it may move in total. `take` takes
from several quotas at once or from none (one script), so a use refused by
one quota never counts against another. A limit of 0 means none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from relayq.core.keys import Keys
from relayq.core.scripts import script_source


@dataclass(frozen=True)
class Quota:
    """One scope's limits: `scope` names it in keys and answers (e.g. "wallet:<pubkey>")."""

    scope: str
    max_count: int
    max_amount: int

    @property
    def limited(self) -> bool:
        return self.max_count > 0 or self.max_amount > 0


@dataclass(frozen=True)
class QuotaSpent:
    """Why a use was refused: the quota, which of its limits (`count` or `amount`), and
    the seconds until its window ends."""

    quota: Quota
    limit: str
    retry_after_seconds: float


class Quotas:
    """Takes from quotas under one key prefix."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._take = redis.register_script(script_source("quota_take"))

    async def take(
        self, quotas: Sequence[Quota], amount: int, window_seconds: float
    ) -> QuotaSpent | None:
        """Count one use of `amount` against every limited quota; None when taken, else the
        quota that is spent (nothing was taken). Raises RedisError when Redis cannot answer."""
        limited = [q for q in quotas if q.limited]
        if not limited:
            return None
        window_ms = int(window_seconds * 1000)
        now_ms = int(time.time() * 1000)
        window = now_ms // window_ms
        end_ms = (window + 1) * window_ms
        args: list[int] = [amount, end_ms]
        for q in limited:
            args += [q.max_count, q.max_amount]
        index, limit = await self._take(
            keys=[self.keys.quota(q.scope, window) for q in limited], args=args
        )
        if int(index) == 0:
            return None
        text = limit.decode() if isinstance(limit, bytes) else str(limit)
        wait = math.ceil((end_ms - now_ms) / 1000)
        return QuotaSpent(limited[int(index) - 1], text, float(max(wait, 1)))
