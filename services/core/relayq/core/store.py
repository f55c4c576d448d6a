"""Task records in MongoDB, the source of truth (PyMongo's async API).

Every transition is a guarded `find_one_and_update` on the expected state and
version, so a stale worker can never overwrite a newer state.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, WriteError

from relayq.core.ids import new_task_id
from relayq.core.jobs import FINISHED_STATES, InvalidPayload, Task, TaskState
from relayq.core.priorities import Priority

MAX_PAGE = 500
DELETE_BATCH = 500
FINISHED = [s.value for s in FINISHED_STATES]
# Codes of a server refusing a document's contents: BadValue, Overflow (nested
# too deep), BSONObjectTooLarge, and a document that grew too large in an update.
REFUSED_CODES = frozenset({2, 15, 10334, 17419})
TRANSIENT_RETRIES = 10
# WriteConflict: a write met another on the same document and nothing was applied.
WRITE_CONFLICT = 112
# Every write relayq treats as durable: acknowledged by a majority of the replica
# set, each from its journal. With MongoDB's default writeConcernMajorityJournalDefault
# a majority write is journaled anyway; `j` says so explicitly, so a standalone
# server or a replica set configured otherwise cannot acknowledge a write that a
# crash would lose (tests/store_conformance kills the server right after an ack).
WRITE_CONCERN = WriteConcern(w="majority", j=True)


class IdempotencyConflict(Exception):
    """An idempotency key was reused with a different request."""

    code = "idempotency-conflict"

    def __init__(self, existing: Task) -> None:
        super().__init__(f"idempotency key already used for task {existing.id} with another body")
        self.existing = existing


@dataclass(frozen=True)
class NewTask:
    """What a producer submits; the store fills in the rest."""

    type: str
    priority: Priority
    payload: dict[str, Any]
    max_attempts: int
    idempotency_key: str | None = None
    run_at: datetime | None = None
    trace: Mapping[str, str] | None = None
    # A held task is written `pending` and dispatched later by its producer
    # (or by recovery); its id may be chosen by the producer to key other records.
    held: bool = False
    task_id: str | None = None
    # The job type is crash-safe (JobType.crash_safe): kept on the record so that
    # recovery, which loads no job modules, parks rather than dead-letters it.
    crash_safe: bool = False


@dataclass(frozen=True)
class Page:
    """One page of a listing; pass `next_cursor` back for the next one."""

    tasks: list[Task]
    next_cursor: str | None


T = TypeVar("T")


async def with_transient_retry(op: Callable[[], Awaitable[T]]) -> T:
    """Run `op`, retrying with jittered backoff while it fails transiently."""
    for attempt in range(TRANSIENT_RETRIES):
        try:
            return await op()
        except OperationFailure as exc:
            transient = exc.code == WRITE_CONFLICT or exc.has_error_label(
                "TransientTransactionError"
            )
            if not transient or attempt == TRANSIENT_RETRIES - 1:
                raise
            await asyncio.sleep(0.005 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


def now() -> datetime:
    return datetime.now(UTC)


def payload_hash(type_: str, priority: Priority, payload: Mapping[str, Any]) -> str:
    body = json.dumps([type_, priority.value, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def connect_mongo(url: str, timeout_seconds: float = 5.0) -> AsyncMongoClient[dict[str, Any]]:
    """An async client with durable writes (WRITE_CONCERN) and a short server-selection bound."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        w="majority",
        journal=True,
        serverSelectionTimeoutMS=int(timeout_seconds * 1000),
        connectTimeoutMS=int(timeout_seconds * 1000),
        appname="relayq",
    )


class TaskStore:
    """Task records in one collection, `tasks`."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.client = client
        self.tasks: AsyncCollection[dict[str, Any]] = client[database].get_collection(
            "tasks", write_concern=WRITE_CONCERN
        )

    async def ensure_indexes(self) -> None:
        # Every task has an `idem` (the client's key, or its own id), so a plain
        # unique index works where partial indexes are not supported.
        await self.tasks.create_index([("idem", ASCENDING)], unique=True, name="idem_unique")
        await self.tasks.create_index([("state", ASCENDING), ("_id", DESCENDING)], name="state_id")
        await self.tasks.create_index([("type", ASCENDING), ("_id", DESCENDING)], name="type_id")
        await self.tasks.create_index(
            [("priority", ASCENDING), ("state", ASCENDING)], name="priority_state"
        )

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    # -- writes -------------------------------------------------------------

    async def insert(self, new: NewTask) -> tuple[Task, bool]:
        """Insert a task as `queued`; returns (task, created). A replay returns the original.

        The record is written as `queued` before the job is put on Redis, and
        set back to `pending` if that fails; a crash in between leaves a queued
        task that Redis does not hold, which recovery dispatches again.
        (One write per job instead of two also avoids racing a fast worker.)
        """
        doc = _new_doc(new)
        try:
            await with_transient_retry(lambda: self.tasks.insert_one(doc))
        except DuplicateKeyError:  # before WriteError, its base class
            existing = await self.tasks.find_one({"idem": doc["idem"]})
            if existing is None:  # the original was deleted meanwhile
                raise
            task = _task(existing)
            if task.payload_hash != doc["payload_hash"]:
                raise IdempotencyConflict(task) from None
            return task, False
        except WriteError as exc:
            if exc.code not in REFUSED_CODES:
                raise
            raise _refused(exc.details) from None
        except InvalidDocument as exc:  # refused before it was sent (too large, say)
            raise _refused({"errmsg": str(exc)}) from None
        return _task(doc), True

    async def insert_many(self, news: Sequence[NewTask]) -> list[tuple[Task, bool]]:
        """Insert many; tasks with idempotency keys go one by one to resolve replays."""
        plain = [_new_doc(n) for n in news if n.idempotency_key is None]
        if plain:
            try:
                await with_transient_retry(lambda: self.tasks.insert_many(plain, ordered=True))
            except BulkWriteError as exc:
                errors = (exc.details or {}).get("writeErrors", [])
                if not errors or errors[0].get("code") not in REFUSED_CODES:
                    raise
                # Ordered: nothing after the refused document was written; undo
                # what was, so a batch is accepted whole or not at all.
                await self.tasks.delete_many({"_id": {"$in": [d["_id"] for d in plain]}})
                raise _refused(errors[0]) from None
            except InvalidDocument as exc:
                await self.tasks.delete_many({"_id": {"$in": [d["_id"] for d in plain]}})
                raise _refused({"errmsg": str(exc)}) from None
        plain_iter = iter(plain)
        out: list[tuple[Task, bool]] = []
        for n in news:
            if n.idempotency_key is None:
                out.append((_task(next(plain_iter)), True))
            else:
                out.append(await self.insert(n))
        return out

    async def transition(
        self,
        task_id: str,
        expected: Sequence[TaskState],
        new_state: TaskState,
        *,
        version: int | None = None,
        set_fields: Mapping[str, Any] | None = None,
        inc_fields: Mapping[str, int] | None = None,
    ) -> Task | None:
        """Move a task from one of `expected` (and `version`, if given) to `new_state`.

        Returns the updated task, or None when the guard did not match: another
        writer got there first, and the caller must not act on the task.
        """
        query: dict[str, Any] = {"_id": task_id, "state": {"$in": [s.value for s in expected]}}
        if version is not None:
            query["version"] = version
        update: dict[str, Any] = {
            "$set": {"state": new_state.value, "updated_at": now(), **(set_fields or {})},
            "$inc": {"version": 1, **(inc_fields or {})},
        }
        doc = await with_transient_retry(
            lambda: self.tasks.find_one_and_update(
                query, update, return_document=ReturnDocument.AFTER
            )
        )
        return _task(doc) if doc is not None else None

    async def delete_finished(self, before: datetime, max_deletes: int) -> int:
        """Delete up to `max_deletes` finished tasks (FINISHED_STATES) finished before `before`."""
        query = {"state": {"$in": FINISHED}, "finished_at": {"$lt": before}}
        deleted = 0
        while deleted < max_deletes:
            limit = min(DELETE_BATCH, max_deletes - deleted)
            docs = await with_transient_retry(
                lambda n=limit: self.tasks.find(query, {"_id": 1}).limit(n).to_list()  # type: ignore[misc]
            )
            if not docs:
                break
            ids = [d["_id"] for d in docs]
            # The state guard again: a dead letter retried meanwhile is not finished any more.
            result = await with_transient_retry(
                lambda i=ids: self.tasks.delete_many({"_id": {"$in": i}, **query})  # type: ignore[misc]
            )
            deleted += int(result.deleted_count)
            if len(docs) < limit:
                break
        return deleted

    async def delete(self, task_id: str, states: Sequence[TaskState]) -> bool:
        result = await self.tasks.delete_one(
            {"_id": task_id, "state": {"$in": [s.value for s in states]}}
        )
        return bool(result.deleted_count)

    # -- reads --------------------------------------------------------------

    async def get_by_idempotency_key(self, key: str) -> Task | None:
        doc = await with_transient_retry(lambda: self.tasks.find_one({"idem": key}))
        return _task(doc) if doc is not None else None

    async def get(self, task_id: str) -> Task | None:
        doc = await with_transient_retry(lambda: self.tasks.find_one({"_id": task_id}))
        return _task(doc) if doc is not None else None

    async def list(
        self,
        *,
        state: TaskState | None = None,
        type_: str | None = None,
        priority: Priority | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Tasks newest first; `cursor` is the last id of the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        query: dict[str, Any] = {}
        if state is not None:
            query["state"] = state.value
        if type_ is not None:
            query["type"] = type_
        if priority is not None:
            query["priority"] = priority.value
        if cursor is not None:
            query["_id"] = {"$lt": cursor}
        docs = await self.tasks.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list()
        tasks = [_task(d) for d in docs[:limit]]
        next_cursor = tasks[-1].id if len(docs) > limit else None
        return Page(tasks, next_cursor)

    async def dead_letters(
        self, *, type_: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page:
        return await self.list(state=TaskState.FAILED, type_=type_, limit=limit, cursor=cursor)

    async def count(self, *, state: TaskState, priority: Priority | None = None) -> int:
        query: dict[str, Any] = {"state": state.value}
        if priority is not None:
            query["priority"] = priority.value
        return int(await self.tasks.count_documents(query))


def _refused(details: Mapping[str, Any] | None) -> InvalidPayload:
    message = str((details or {}).get("errmsg", "refused by the task store"))[:300]
    return InvalidPayload(f"the task store refused the payload: {message}", field="payload")


def _new_doc(new: NewTask) -> dict[str, Any]:
    task_id = new.task_id or new_task_id()
    created = now()
    return {
        "_id": task_id,
        "type": new.type,
        "priority": new.priority.value,
        "payload": new.payload,
        "state": (TaskState.PENDING if new.held else TaskState.QUEUED).value,
        "version": 0,
        "attempts": 0,
        "max_attempts": new.max_attempts,
        "attempt_budget": new.max_attempts,
        "idem": new.idempotency_key if new.idempotency_key is not None else f"task:{task_id}",
        "idempotency_key": new.idempotency_key,
        "payload_hash": payload_hash(new.type, new.priority, new.payload),
        "created_at": created,
        "updated_at": created,
        "queued_at": None if new.held else created,
        "started_at": None,
        "finished_at": None,
        "run_at": new.run_at,
        "last_error": None,
        "result": None,
        "worker": None,
        "trace": dict(new.trace or {}),
        **({"crash_safe": True} if new.crash_safe else {}),
    }


def _task(doc: Mapping[str, Any]) -> Task:
    return Task(
        id=doc["_id"],
        type=doc["type"],
        priority=Priority(doc["priority"]),
        payload=doc["payload"],
        state=TaskState(doc["state"]),
        version=int(doc["version"]),
        attempts=int(doc["attempts"]),
        max_attempts=int(doc["max_attempts"]),
        attempt_budget=int(doc.get("attempt_budget", doc["max_attempts"])),
        idempotency_key=doc.get("idempotency_key"),
        payload_hash=doc["payload_hash"],
        created_at=_utc(doc["created_at"]),
        queued_at=_utc(doc.get("queued_at")),
        started_at=_utc(doc.get("started_at")),
        finished_at=_utc(doc.get("finished_at")),
        run_at=_utc(doc.get("run_at")),
        last_error=doc.get("last_error"),
        result=doc.get("result"),
        worker=doc.get("worker"),
        trace=dict(doc.get("trace") or {}),
        review=doc.get("review"),
        crash_safe=bool(doc.get("crash_safe", False)),
    )


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
