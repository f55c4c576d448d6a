"""Retention of finished tasks: a TTL index where the server has one, bounded deletes otherwise.

MongoDB expires documents through a TTL index on `finished_at` (unfinished
tasks hold null there, which a TTL index never expires). FerretDB has no TTL
indexes: it refuses the option with NotImplemented, and says what it is in
`buildInfo`; there, each run deletes up to `max_deletes` expired tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo.errors import OperationFailure

from relayq.core.jobs import TaskState
from relayq.core.store import TaskStore, now, with_transient_retry
from relayq.recovery.settings import RecoverySettings

TTL_INDEX = "finished_ttl"
DELETE_BATCH = 500
NOT_IMPLEMENTED = 238
COMMAND_NOT_SUPPORTED = 115
INDEX_OPTIONS_CONFLICT = 85
FINISHED = [TaskState.COMPLETED.value, TaskState.FAILED.value]


@dataclass(frozen=True)
class Retention:
    """How retention was applied: `ttl-index`, `bounded-delete` or `off`; what was deleted."""

    mode: str
    deleted: int = 0

    def to_public(self) -> dict[str, Any]:
        return {"mode": self.mode, "deleted": self.deleted}


async def supports_ttl(store: TaskStore) -> bool:
    info = await store.client.admin.command("buildInfo")
    return "ferretdbVersion" not in info


async def apply_retention(store: TaskStore, settings: RecoverySettings) -> Retention:
    if settings.retention_seconds <= 0:
        return Retention("off")
    if await supports_ttl(store) and await _ensure_ttl_index(store, settings):
        return Retention("ttl-index")
    return Retention("bounded-delete", await _delete_expired(store, settings))


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


async def _delete_expired(store: TaskStore, settings: RecoverySettings) -> int:
    cutoff = now() - timedelta(seconds=settings.retention_seconds)
    query = {"state": {"$in": FINISHED}, "finished_at": {"$lt": cutoff}}
    deleted = 0
    while deleted < settings.max_deletes:
        limit = min(DELETE_BATCH, settings.max_deletes - deleted)
        docs = await with_transient_retry(
            lambda n=limit: store.tasks.find(query, {"_id": 1}).limit(n).to_list()  # type: ignore[misc]
        )
        if not docs:
            break
        ids = [d["_id"] for d in docs]
        # The state guard again: a dead letter retried meanwhile is not finished any more.
        result = await with_transient_retry(
            lambda i=ids: store.tasks.delete_many({"_id": {"$in": i}, **query})  # type: ignore[misc]
        )
        deleted += int(result.deleted_count)
        if len(docs) < limit:
            break
    return deleted
