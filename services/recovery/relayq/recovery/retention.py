"""Retention of finished tasks: a TTL index where the server has one, bounded deletes otherwise.

A finished task without an idempotency key is deleted once it is past
retention. One with a key is stripped to a tombstone then (its payload and
result go; its id, owner, key, request hash and final state stay under the
unique index), and deleted when the idempotency window ends: a client that
replays a request within the window gets its original task back, never a second
one (a second purchase). The TTL index therefore expires at the window; the run
deletes the tasks without a key itself, bounded by `max_deletes`.

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

import pymongo
from pymongo.errors import OperationFailure

from relayq.core.store import INDEX_BUILD_SECONDS, TaskStore, now
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
        mode: `ttl-index` (the server expires tombstones; the run backs it up),
            `bounded-delete` (no TTL index: the run deletes) or `off`.
        deleted: tasks this run deleted: those without a key past retention, and
            tombstones past the window (under `ttl-index`, only those the
            server's TTL monitor left `ttl_lag_seconds` past it).
        stripped: tasks with a key this run stripped to tombstones.
    """

    mode: str
    deleted: int = 0
    stripped: int = 0

    def to_public(self) -> dict[str, Any]:
        return {"mode": self.mode, "deleted": self.deleted, "stripped": self.stripped}


async def apply_retention(store: TaskStore, settings: RecoverySettings) -> Retention:
    if settings.retention_seconds <= 0:
        return Retention("off")
    window = max(settings.idempotency_window_seconds, settings.retention_seconds)
    past_retention = now() - timedelta(seconds=settings.retention_seconds)
    stripped = await store.strip_finished(past_retention, settings.max_deletes)
    deleted = await store.delete_finished(past_retention, settings.max_deletes, keyed=False)
    if settings.ttl_index and await _ensure_ttl_index(store, window):
        cutoff = now() - timedelta(seconds=window + settings.ttl_lag_seconds)
        behind = await store.delete_finished(cutoff, settings.max_deletes)
        if behind:
            log.warning(
                "the server keeps a TTL index on finished_at but left %d tasks more than %ds"
                " past the idempotency window: its TTL monitor is not expiring them; deleted"
                " them here",
                behind,
                int(settings.ttl_lag_seconds),
            )
        return Retention("ttl-index", deleted + behind, stripped)
    past_window = now() - timedelta(seconds=window)
    deleted += await store.delete_finished(past_window, settings.max_deletes)
    return Retention("bounded-delete", deleted, stripped)


async def _ensure_ttl_index(store: TaskStore, window_seconds: float) -> bool:
    """Create or retune the TTL index (at the idempotency window); False if the server
    cannot have one."""
    seconds = int(window_seconds)
    try:
        with pymongo.timeout(INDEX_BUILD_SECONDS):  # the run has reached the server already
            await store.tasks.create_index(
                [("finished_at", 1)], name=TTL_INDEX, expireAfterSeconds=seconds
            )
    except OperationFailure as exc:
        if exc.code in (NOT_IMPLEMENTED, COMMAND_NOT_SUPPORTED):
            return False
        if exc.code != INDEX_OPTIONS_CONFLICT:
            raise
        # The window or retention setting changed since the index was made.
        await store.tasks.database.command(
            {
                "collMod": store.tasks.name,
                "index": {"name": TTL_INDEX, "expireAfterSeconds": seconds},
            }
        )
    return True
