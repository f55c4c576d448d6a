"""The run lock: two recovery runs never overlap (saq's sweep takes one too).

`SET NX PX` with a random owner, a fencing token from a counter beside the
lock, renewal and release by compare-and-set in Lua. The lock saves repeated
work; it is not what keeps a job from being dispatched twice (a run whose lock
expired mid-way could still write): `redispatch.lua` re-checks each job
atomically, and the report keeps the last_* fields of the newest token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from relayq.core.keys import Keys

LOCK_NAME = "recovery"


def script(redis: Redis, name: str) -> AsyncScript:
    """One of recovery's Lua scripts, registered on `redis`."""
    source = resources.files("relayq.recovery").joinpath("lua", f"{name}.lua").read_text()
    return redis.register_script(source)


class LockLost(Exception):
    """The lock expired or was taken over during the run."""

    def __init__(self) -> None:
        super().__init__("the recovery lock expired or was taken over during the run")


@dataclass(frozen=True)
class Held:
    """A lock this run holds: the fencing token and the value stored in the lock."""

    fence: int
    value: str


class RunLock:
    """The recovery run lock in Redis."""

    def __init__(self, redis: Redis, keys: Keys, ttl_seconds: float) -> None:
        self.key = keys.lock(LOCK_NAME)
        self.fence_key = keys.fence(LOCK_NAME)
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self._acquire = script(redis, "lock_acquire")
        self._extend = script(redis, "lock_extend")
        self._release = script(redis, "lock_release")

    async def acquire(self) -> Held | None:
        """Take the lock; None if another run holds it."""
        fence, value = await self._acquire(
            keys=[self.key, self.fence_key], args=[secrets.token_hex(8), self.ttl_ms]
        )
        return Held(int(fence), str(value)) if int(fence) else None

    async def extend(self, held: Held) -> None:
        """Renew the time to live; LockLost if the lock is no longer this run's."""
        if not int(await self._extend(keys=[self.key], args=[held.value, self.ttl_ms])):
            raise LockLost()

    async def release(self, held: Held) -> bool:
        return bool(int(await self._release(keys=[self.key], args=[held.value])))
