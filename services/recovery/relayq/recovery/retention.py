"""Retention of finished tasks: a TTL index where the server has one, bounded deletes otherwise.

MongoDB expires documents through a TTL index on `finished_at` (unfinished
tasks hold null there, which a TTL index never expires). A server may refuse
the index (NotImplemented), and one may accept it and never expire anything
(mongo-java-server does): a server's word is not proof, so retention judges by
behaviour. Each run also deletes, up to `max_deletes`, the finished tasks a
TTL index should have expired `ttl_lag_seconds` ago (MongoDB's TTL monitor runs
every 60 s); on a healthy server that finds nothing, and when it does find
some, the run says so in a warning. Without a TTL index the run deletes every
task past retention itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo.errors import OperationFailure

from relayq.core.store import TaskStore, now
from relayq.recovery.settings import RecoverySettings

TTL_INDEX = "finished_ttl"
NOT_IMPLEMENTED = 238
COMMAND_NOT_SUPPORTED = 115
INDEX_OPTIONS_CONFLICT = 85

log = logging.getLogger("relayq.recovery.retention")


@dataclass(frozen=True)
class Retention:
    """How retention was applied and what this run deleted itself.

    Attributes:
        mode: `ttl-index` (the server expires tasks; the run only backs it up),
            `bounded-delete` (no TTL index: the run deletes) or `off`.
        deleted: tasks this run deleted; under `ttl-index`, the ones the server's
            TTL monitor had left `ttl_lag_seconds` past retention.
    """

    mode: str
    deleted: int = 0

    def to_public(self) -> dict[str, Any]:
        return {"mode": self.mode, "deleted": self.deleted}


async def apply_retention(store: TaskStore, settings: RecoverySettings) -> Retention:
    if settings.retention_seconds <= 0:
        return Retention("off")
    if settings.ttl_index and await _ensure_ttl_index(store, settings):
        cutoff = now() - timedelta(seconds=settings.retention_seconds + settings.ttl_lag_seconds)
        behind = await store.delete_finished(cutoff, settings.max_deletes)
        if behind:
            log.warning(
                "the server keeps a TTL index on finished_at but left %d tasks more than %ds"
                " past retention: its TTL monitor is not expiring them; deleted them here",
                behind,
                int(settings.ttl_lag_seconds),
            )
        return Retention("ttl-index", behind)
    cutoff = now() - timedelta(seconds=settings.retention_seconds)
    return Retention("bounded-delete", await store.delete_finished(cutoff, settings.max_deletes))


async def _ensure_ttl_index(store: TaskStore, settings: RecoverySettings) -> bool:
    """Create or retune the TTL index; False if the server cannot have one."""
    seconds = int(settings.retention_seconds)
    try:
        await store.tasks.create_index(
            [("finished_at", 1)], name=TTL_INDEX, expireAfterSeconds=seconds
        )
    except OperationFailure as exc:
        if exc.code in (NOT_IMPLEMENTED, COMMAND_NOT_SUPPORTED):
            return False
        if exc.code != INDEX_OPTIONS_CONFLICT:
            raise
        # The retention setting changed since the index was made.
        await store.tasks.database.command(
            {
                "collMod": store.tasks.name,
                "index": {"name": TTL_INDEX, "expireAfterSeconds": seconds},
            }
        )
    return True
