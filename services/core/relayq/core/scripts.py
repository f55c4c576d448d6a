"""The Lua scripts in lua/, one attribute each, loaded once per Redis client and kept.

Every script relayq runs lives here, so only relayq.core touches the Redis
layout. A line `--!include NAME` in a script is replaced by
lua/includes/NAME.lua: fragments several scripts share (the consumer-group
check, the server clock) are written once, as BullMQ's commands/includes are.
redis-py sends EVALSHA and falls back to loading the script on NOSCRIPT (a new
master after a failover).
"""

from __future__ import annotations

import re
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_INCLUDE = re.compile(r"^--!include (\w+)$", re.MULTILINE)


def script_source(name: str) -> str:
    """A script's source with its includes expanded."""
    lua = resources.files("relayq.core").joinpath("lua")

    def include(match: re.Match[str]) -> str:
        return lua.joinpath("includes", f"{match.group(1)}.lua").read_text().rstrip("\n")

    return _INCLUDE.sub(include, lua.joinpath(f"{name}.lua").read_text())


class Scripts:
    """The scripts registered on one Redis client; see each .lua file's header."""

    def __init__(self, redis: Redis) -> None:
        def load(name: str) -> AsyncScript:
            return redis.register_script(script_source(name))

        # Dispatch (relayq.core.queue).
        self.enqueue = load("enqueue")
        self.claim = load("claim")
        self.ack = load("ack")
        self.retry = load("retry")
        self.schedule = load("schedule")
        self.reclaim = load("reclaim")
        self.extend = load("extend")
        self.backlog = load("backlog")
        self.rate_limit = load("rate_limit")
        self.promote = load("promote")
        # Recovery: lost jobs dispatched again, stalled claims handed back.
        self.redispatch = load("redispatch")
        self.requeue_stalled = load("requeue_stalled")
        # Run locks (relayq.core.run_lock) and the recovery report.
        self.lock_acquire = load("lock_acquire")
        self.lock_extend = load("lock_extend")
        self.lock_release = load("lock_release")
        self.report = load("report")
