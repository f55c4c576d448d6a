"""The Lua scripts in lua/, loaded once per Redis client and kept."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

SCRIPT_NAMES = ("claim", "ack", "retry", "schedule", "reclaim", "extend", "backlog", "rate_limit")


def script_source(name: str) -> str:
    return resources.files("relayq.core").joinpath("lua", f"{name}.lua").read_text()


class Scripts:
    """Registered scripts; redis-py sends EVALSHA and falls back to loading on NOSCRIPT."""

    def __init__(self, redis: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    def __getitem__(self, name: str) -> AsyncScript:
        return self._scripts[name]
