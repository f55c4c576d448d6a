"""Named kill switches shared by every replica through Redis (`relayq:switch:<name>`).

A switch is off unless set; setting it records why and when. Readers keep the
last value they read for a second, and keep it while Redis cannot be read:
a switch set before an outage stays set through it, and one never read is
taken as off (documented per switch where it is used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relayq.core.keys import Keys

REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class Switch:
    """A switch's state: `on` with why and since when, or off."""

    name: str
    on: bool
    reason: str | None = None
    since: str | None = None

    def to_public(self) -> dict[str, object]:
        return {"name": self.name, "on": self.on, "reason": self.reason, "since": self.since}


class Switches:
    """Reads and sets the switches under one key prefix."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._known: dict[str, tuple[Switch, float]] = {}

    async def set(self, name: str, reason: str) -> Switch:
        since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        await self.redis.hset(  # type: ignore[misc]
            self.keys.switch(name), mapping={"reason": reason, "since": since}
        )
        switch = Switch(name, True, reason, since)
        self._known[name] = (switch, time.monotonic())
        return switch

    async def clear(self, name: str) -> Switch:
        await self.redis.delete(self.keys.switch(name))
        switch = Switch(name, False)
        self._known[name] = (switch, time.monotonic())
        return switch

    async def read(self, name: str) -> Switch:
        """The switch now (Redis), raising RedisError when it cannot be read."""
        fields = await self.redis.hgetall(self.keys.switch(name))  # type: ignore[misc]
        switch = Switch(name, bool(fields), fields.get("reason"), fields.get("since"))
        self._known[name] = (switch, time.monotonic())
        return switch

    async def current(self, name: str) -> Switch:
        """The switch, read at most once a second; the last value read while Redis is down."""
        known = self._known.get(name)
        if known is not None and time.monotonic() - known[1] < REFRESH_SECONDS:
            return known[0]
        try:
            return await self.read(name)
        except (RedisError, OSError):
            return known[0] if known is not None else Switch(name, False)
