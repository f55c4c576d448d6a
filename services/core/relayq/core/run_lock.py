"""Run locks: two runs of a periodic job (recovery) never overlap (saq's sweep takes one too).

`SET NX PX` with a random owner, a fencing token from a counter beside the
lock, renewal and release by compare-and-set in Lua. The lock saves repeated
work; it is not what keeps a job from being dispatched twice (a run whose lock
expired mid-way could still write): `redispatch.lua` re-checks each job
atomically, and the report keeps the last_* fields of the newest token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from relayq.core.queue import Queue


class LockLost(Exception):
    """The lock expired or was taken over during the run."""

    def __init__(self, name: str = "recovery") -> None:
        super().__init__(f"the {name} lock expired or was taken over during the run")


@dataclass(frozen=True)
class Held:
    """A lock this run holds: the fencing token and the value stored in the lock."""

    fence: int
    value: str


class RunLock:
    """A named run lock in Redis (`relayq:lock:<name>` and its fencing counter)."""

    def __init__(self, queue: Queue, name: str, ttl_seconds: float) -> None:
        self.name = name
        self.key = queue.keys.lock(name)
        self.fence_key = queue.keys.fence(name)
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self._acquire = queue.scripts.lock_acquire
        self._extend = queue.scripts.lock_extend
        self._release = queue.scripts.lock_release

    async def acquire(self) -> Held | None:
        """Take the lock; None if another run holds it."""
        fence, value = await self._acquire(
            keys=[self.key, self.fence_key], args=[secrets.token_hex(8), self.ttl_ms]
        )
        return Held(int(fence), str(value)) if int(fence) else None

    async def extend(self, held: Held) -> None:
        """Renew the time to live; LockLost if the lock is no longer this run's."""
        if not int(await self._extend(keys=[self.key], args=[held.value, self.ttl_ms])):
            raise LockLost(self.name)

    async def release(self, held: Held) -> bool:
        return bool(int(await self._release(keys=[self.key], args=[held.value])))
