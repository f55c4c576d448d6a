"""Retries of idempotent chain calls with exponential backoff and full jitter."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from relayq.relayer.chain.errors import ChainUnavailable

T = TypeVar("T")


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 4,
    base_seconds: float = 0.1,
    cap_seconds: float = 2.0,
    rng: random.Random | None = None,
) -> T:
    """Run `call`, retrying ChainUnavailable up to `attempts` runs in all; other errors pass."""
    rand = rng or random
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except ChainUnavailable:
            if attempt == attempts:
                raise
            await asyncio.sleep(
                rand.uniform(0, min(cap_seconds, base_seconds * 2 ** (attempt - 1)))
            )
    raise AssertionError("unreachable")
