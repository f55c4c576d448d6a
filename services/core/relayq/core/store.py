"""Task records in MongoDB, the source of truth (PyMongo's async API).

Every transition is a guarded `find_one_and_update` on the expected state and
version, so a stale worker can never overwrite a newer state.

Writes that arrive together travel together (relayq.core.batching): single
inserts are group-committed as one unordered `insert_many`, and the batched
transitions of `transition_many` are one guarded `update_many` per kind of
change. Each caller still gets its own answer, after its own write is durable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import pymongo
from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, WriteError

from relayq.core.api_keys import ApiKeys
from relayq.core.batching import Batcher
from relayq.core.ids import new_task_id
from relayq.core.jobs import FINISHED_STATES, InvalidPayload, Task, TaskState
from relayq.core.owners import owner_of_scoped_key
from relayq.core.priorities import Priority

MAX_PAGE = 500
# Index builds may outlast the per-operation bound (relayq.core.settings).
INDEX_BUILD_SECONDS = 3600.0
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
DUPLICATE_KEY = 11000
INDEX_NOT_FOUND = 27
# Indexes earlier versions created, dropped once `state_priority_id` replaces them.
OBSOLETE_INDEXES = ("state_id", "priority_state")
# Group commit of inserts: at most this many writes in flight; more wait and join the next.
INSERTS_IN_FLIGHT = 2
TASK_FIELDS = frozenset(f.name for f in fields(Task))


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
    # The API client it belongs to (relayq.core.owners); None: relayq's or an operator's.
    owner: str | None = None
    # The job type's redacted fields (JobType.redact): on the record, so that every
    # process redacts the task's views alike, whichever job modules it loaded.
    redact: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    """One guarded state change, as `transition` takes it, for `transition_many`.

    `task` is the caller's copy at `version`, if it holds one: when every
    change of its kind applied, the updated task is computed from it rather
    than read back.
    """

    task_id: str
    expected: tuple[TaskState, ...]
    new_state: TaskState
    version: int | None = None
    set_fields: Mapping[str, Any] = field(default_factory=dict)
    inc_fields: Mapping[str, int] = field(default_factory=dict)
    task: Task | None = None

    def kind(self) -> tuple[object, ...]:
        """Changes of one kind share one guarded update_many.

        Equal kinds mean equal updates: the values are compared by their repr,
        which tells apart what JSON and BSON tell apart (1, 1.0, True, "1").
        Fields in another order make another kind, which costs only batching;
        the changes of one named transition list them alike.
        """
        return (
            self.expected,
            self.new_state,
            self.version,
            repr(self.set_fields),
            repr(self.inc_fields),
        )


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


def connect_mongo(
    url: str,
    timeout_seconds: float = 5.0,
    *,
    operation_seconds: float = 10.0,
    tls_ca_file: str | None = None,
    tls_certificate_key_file: str | None = None,
) -> AsyncMongoClient[dict[str, Any]]:
    """An async client with durable writes (WRITE_CONCERN), a short server-selection
    bound, and every operation bounded by `operation_seconds` (PyMongo's timeoutMS:
    a server that accepts and never answers raises a PyMongoError, never hangs).

    With `tls_ca_file` (or a client certificate) every connection uses TLS and
    the servers' certificates must chain to that CA and name the host dialled;
    without them the URL alone decides (`tls=true`, `mongodb+srv://`)."""
    tls: dict[str, Any] = {}
    if tls_ca_file or tls_certificate_key_file:
        tls["tls"] = True
    if tls_ca_file:
        tls["tlsCAFile"] = tls_ca_file
    if tls_certificate_key_file:
        tls["tlsCertificateKeyFile"] = tls_certificate_key_file
    return AsyncMongoClient(
        url,
        tz_aware=True,
        w="majority",
        journal=True,
        serverSelectionTimeoutMS=int(min(timeout_seconds, operation_seconds) * 1000),
        connectTimeoutMS=int(timeout_seconds * 1000),
        timeoutMS=int(operation_seconds * 1000),
        appname="relayq",
        **tls,
    )


class TaskStore:
    """Task records in one collection, `tasks`."""

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        database: str,
        *,
        batch_max: int = 256,
        batch_window_seconds: float = 0.001,
    ) -> None:
        """`batch_max` bounds every batched write (1: no batching); single inserts
        wait up to `batch_window_seconds` for others to share their commit."""
        self.client = client
        self.tasks: AsyncCollection[dict[str, Any]] = client[database].get_collection(
            "tasks", write_concern=WRITE_CONCERN
        )
        self.batch_max = batch_max
        self._inserts: Batcher[dict[str, Any], tuple[Task, bool]] = Batcher(
            self._insert_batch,
            max_batch=batch_max,
            window_seconds=batch_window_seconds,
            max_in_flight=INSERTS_IN_FLIGHT,
        )

    @property
    def batching(self) -> bool:
        return self.batch_max > 1

    async def ensure_indexes(self) -> None:
        # Within the normal bound first: under a longer timeout, selecting a server
        # that is not there would wait that long too.
        await self.ping()
        with pymongo.timeout(INDEX_BUILD_SECONDS):  # a build on a large collection takes long
            await self._ensure_indexes()

    async def _ensure_indexes(self) -> None:
        # Every task has an `idem` (the client's key, or its own id), so a plain
        # unique index works where partial indexes are not supported.
        await self.tasks.create_index([("idem", ASCENDING)], unique=True, name="idem_unique")
        # Listings, counts and recovery's scans by state and priority (by_state).
        # One index where there were two (state_id, priority_state): every state
        # change rewrites an entry in each index on `state`, so each one less
        # is a cheaper transition (about a fifth of a guarded update's cost).
        await self.tasks.create_index(
            [("state", ASCENDING), ("priority", ASCENDING), ("_id", DESCENDING)],
            name="state_priority_id",
        )
        for obsolete in OBSOLETE_INDEXES:
            await self._drop_index(obsolete)
        await self.tasks.create_index([("type", ASCENDING), ("_id", DESCENDING)], name="type_id")
        # A client's listings: all its tasks, or those in one state or of one type.
        await self.tasks.create_index([("owner", ASCENDING), ("_id", DESCENDING)], name="owner_id")
        await self.tasks.create_index(
            [("owner", ASCENDING), ("state", ASCENDING), ("_id", DESCENDING)],
            name="owner_state_id",
        )
        await self.tasks.create_index(
            [("owner", ASCENDING), ("type", ASCENDING), ("_id", DESCENDING)],
            name="owner_type_id",
        )
        # The collections of client keys and their audit trail live beside the tasks.
        await ApiKeys(self.tasks.database).ensure_indexes()

    async def _drop_index(self, name: str) -> None:
        try:
            await self.tasks.drop_index(name)
        except OperationFailure as exc:
            if exc.code != INDEX_NOT_FOUND:
                raise

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
        if self.batching:
            return await self._inserts.submit(doc)
        return await self._insert_one(doc)

    async def _insert_one(self, doc: dict[str, Any]) -> tuple[Task, bool]:
        try:
            await with_transient_retry(lambda: self.tasks.insert_one(doc))
        except DuplicateKeyError:  # before WriteError, its base class
            return await self._duplicate(doc)
        except WriteError as exc:
            if exc.code not in REFUSED_CODES:
                raise
            raise _refused(exc.details) from None
        except InvalidDocument as exc:  # refused before it was sent (too large, say)
            raise _refused({"errmsg": str(exc)}) from None
        return _task(doc), True

    async def _duplicate(self, doc: dict[str, Any]) -> tuple[Task, bool]:
        """The answer for a document the unique index refused: the idempotency replay."""
        existing = await with_transient_retry(lambda: self.tasks.find_one({"idem": doc["idem"]}))
        if existing is None:  # the original was deleted meanwhile
            raise DuplicateKeyError(f"duplicate idempotency key {doc['idem']!r}", DUPLICATE_KEY)
        task = _task(existing)
        if existing["_id"] == doc["_id"]:  # our own, written by an earlier try of this write
            return task, True
        if task.payload_hash != doc["payload_hash"]:
            raise IdempotencyConflict(task)
        return task, False

    async def _insert_batch(
        self, docs: list[dict[str, Any]]
    ) -> list[tuple[Task, bool] | BaseException]:
        """Group commit: one unordered insert_many; each document gets its own answer."""
        if len(docs) == 1:
            return [await _answer(self._insert_one(docs[0]))]
        errors: dict[int, dict[str, Any]] = {}
        try:
            await with_transient_retry(lambda: self.tasks.insert_many(docs, ordered=False))
        except BulkWriteError as exc:
            errors = {e["index"]: e for e in (exc.details or {}).get("writeErrors", [])}
            if not errors:
                raise
        except InvalidDocument:
            # One document cannot even be encoded, and part of the batch may have
            # gone: each alone now, where a duplicate of our own _id is ours.
            return [await _answer(self._insert_one(d)) for d in docs]
        out: list[tuple[Task, bool] | BaseException] = []
        for i, doc in enumerate(docs):
            error = errors.get(i)
            if error is None:
                out.append((_task(doc), True))
            elif error.get("code") == DUPLICATE_KEY:
                out.append(await _answer(self._duplicate(doc)))
            elif error.get("code") in REFUSED_CODES:
                out.append(_refused(error))
            else:
                out.append(
                    WriteError(error.get("errmsg", "write failed"), error.get("code"), error)
                )
        return out

    async def insert_many(self, news: Sequence[NewTask]) -> list[tuple[Task, bool]]:
        """Insert many; tasks with idempotency keys go through `insert` to resolve replays."""
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
        # Together, so they share one group commit.
        keyed = iter(
            await asyncio.gather(*(self.insert(n) for n in news if n.idempotency_key is not None))
        )
        plain_iter = iter(plain)
        return [
            (_task(next(plain_iter)), True) if n.idempotency_key is None else next(keyed)
            for n in news
        ]

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

    async def transition_many(self, changes: Sequence[Change]) -> list[Task | BaseException | None]:
        """Apply many guarded changes; each answer is what `transition` would have given.

        Changes of one kind (same guard and fields, as a batch's changes of one
        name made at one instant are) go as one `update_many` guarded by state
        and version, stamped with an id of this write: which records it moved
        is read back by that stamp, as a bulk write reports only counts. A task
        named twice is changed in order, the second change on the first's result.
        """
        answers: list[Task | BaseException | None] = [None] * len(changes)
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for i, change in enumerate(changes):
            n = seen.get(change.task_id, 0)
            seen[change.task_id] = n + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(i)
        for indexes in rounds:
            kinds: dict[tuple[object, ...], list[int]] = {}
            for i in indexes:
                kinds.setdefault(changes[i].kind(), []).append(i)
            groups = list(kinds.values())
            results = await asyncio.gather(
                *(self._apply_kind([changes[i] for i in g]) for g in groups),
                return_exceptions=True,
            )
            for group, result in zip(groups, results, strict=True):
                for j, i in enumerate(group):
                    answers[i] = result if isinstance(result, BaseException) else result[j]
        return answers

    async def _apply_kind(self, changes: list[Change]) -> list[Task | None]:
        first = changes[0]
        if len(changes) == 1:
            c = first
            return [
                await self.transition(
                    c.task_id, c.expected, c.new_state, version=c.version,
                    set_fields=c.set_fields, inc_fields=c.inc_fields,
                )
            ]  # fmt: skip
        stamp = new_task_id()
        ids = [c.task_id for c in changes]
        query: dict[str, Any] = {
            "_id": {"$in": ids},
            "state": {"$in": [s.value for s in first.expected]},
            # A retry after a write conflict must not apply twice where it already applied.
            "write_id": {"$ne": stamp},
        }
        if first.version is not None:
            query["version"] = first.version
        at = now()
        update: dict[str, Any] = {
            "$set": {
                "state": first.new_state.value,
                "updated_at": at,
                "write_id": stamp,
                **first.set_fields,
            },
            "$inc": {"version": 1, **first.inc_fields},
        }
        # By _id: a planner choosing the state index scans every task in that state.
        result = await with_transient_retry(
            lambda: self.tasks.update_many(query, update, hint=[("_id", ASCENDING)])
        )
        held = [c.task for c in changes]
        if result.matched_count == len(changes) and all(t is not None for t in held):
            return [_changed(t, first) for t in held if t is not None]
        docs = await with_transient_retry(lambda: self.tasks.find({"_id": {"$in": ids}}).to_list())
        ours = {d["_id"]: d for d in docs if d.get("write_id") == stamp}
        return [_task(ours[i]) if i in ours else None for i in ids]

    async def strip_finished(self, before: datetime, max_strips: int) -> int:
        """Strip up to `max_strips` finished tasks with an idempotency key, finished
        before `before`, to tombstones: payload, result, trace, error and review go;
        id, owner, key, request hash, type, priority and final state stay, so a
        replay still finds its original task (TaskStore.insert)."""
        query = {
            "state": {"$in": FINISHED},
            "finished_at": {"$lt": before},
            "idempotency_key": {"$ne": None},
            "stripped_at": None,
        }
        docs = await with_transient_retry(
            lambda: self.tasks.find(query, {"_id": 1}).limit(max_strips).to_list()
        )
        if not docs:
            return 0
        result = await with_transient_retry(
            lambda: self.tasks.update_many(
                {"_id": {"$in": [d["_id"] for d in docs]}, **query},
                {
                    "$set": {
                        "payload": {},
                        "result": None,
                        "trace": {},
                        "last_error": None,
                        "review": None,
                        "stripped_at": now(),
                    }
                },
            )
        )
        return int(result.modified_count)

    async def delete_finished(
        self, before: datetime, max_deletes: int, *, keyed: bool | None = None
    ) -> int:
        """Delete up to `max_deletes` finished tasks (FINISHED_STATES) finished before `before`.

        `keyed=False` deletes only tasks without an idempotency key (those with one
        are stripped to tombstones at retention and deleted after the window).
        """
        query: dict[str, Any] = {"state": {"$in": FINISHED}, "finished_at": {"$lt": before}}
        if keyed is False:
            query["idempotency_key"] = None
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

    async def backfill_owners(self, batch: int = DELETE_BATCH) -> tuple[int, int]:
        """Give tasks written before owners were recorded their owner, once.

        A task's owner is the client its idempotency key was scoped by (the
        `<client>:` prefix); a task without a client key gets `owner: null`
        (administrators only). Returns (owned, ownerless). A one-off migration
        (`relayq migrate-owners`): it reads the tasks that lack the field, which
        no index serves, and is safe to run again or to interrupt.
        """
        owned = ownerless = 0
        while True:
            docs = await with_transient_retry(
                lambda: (
                    self.tasks.find(
                        {"owner": {"$exists": False}}, {"idem": 1, "idempotency_key": 1}
                    )
                    .limit(batch)
                    .to_list()
                )
            )
            if not docs:
                return owned, ownerless
            for doc in docs:
                key = doc.get("idempotency_key")
                owner = owner_of_scoped_key(str(doc.get("idem", ""))) if key else None
                await self.tasks.update_one(
                    {"_id": doc["_id"], "owner": {"$exists": False}}, {"$set": {"owner": owner}}
                )
                if owner is None:
                    ownerless += 1
                else:
                    owned += 1

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
        owner: str | None = None,
    ) -> Page:
        """Tasks newest first; `cursor` is the last id of the previous page.

        `owner` keeps one client's tasks only (relayq.core.owners).
        """
        limit = max(1, min(limit, MAX_PAGE))
        query: dict[str, Any] = {}
        if owner is not None:
            query["owner"] = owner
        if type_ is not None:
            query["type"] = type_
        if owner is None and type_ is None and (state is not None or priority is not None):
            query.update(
                by_state(
                    [state] if state is not None else TaskState,
                    [priority] if priority is not None else Priority,
                )
            )
        else:
            if state is not None:
                query["state"] = state.value
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


def by_state(
    states: Iterable[TaskState], priorities: Iterable[Priority] = Priority
) -> dict[str, Any]:
    """The filter on state and priority that the `state_priority_id` index serves in _id order.

    Both fields are named, every priority where the caller wants them all, so
    that the server reads one index range per (state, priority) pair and merges
    them by id (MongoDB's SORT_MERGE) rather than sorting everything matched.
    """
    state_values = [s.value for s in states]
    priority_values = [p.value for p in priorities]
    return {
        "state": state_values[0] if len(state_values) == 1 else {"$in": state_values},
        "priority": priority_values[0] if len(priority_values) == 1 else {"$in": priority_values},
    }


async def _answer(op: Awaitable[T]) -> T | BaseException:
    """`op`'s value, or the exception it raised, as one item's answer in a batch."""
    try:
        return await op
    except Exception as exc:
        return exc


def _changed(task: Task, change: Change) -> Task:
    """`task` after `change` applied, as the store now holds it (times to the millisecond)."""
    # A copy of the fields: dataclasses.replace re-runs __init__, a hot-path cost here.
    values = dict(vars(task))
    for name, value in change.set_fields.items():
        if name in TASK_FIELDS:
            values[name] = _ms(value)
    for name, n in change.inc_fields.items():
        values[name] += n
    values["state"] = change.new_state
    values["version"] = task.version + 1
    changed = object.__new__(Task)
    changed.__dict__.update(values)
    return changed


def _ms(value: Any) -> Any:
    # BSON dates keep milliseconds: mirror what a read would return.
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    return value


def _refused(details: Mapping[str, Any] | None) -> InvalidPayload:
    message = str((details or {}).get("errmsg", "refused by the task store"))[:300]
    return InvalidPayload(f"the task store refused the payload: {message}", field="payload")


def _new_doc(new: NewTask) -> dict[str, Any]:
    task_id = new.task_id or new_task_id()
    created = _ms(now())  # as the store keeps it: the answer equals a later read
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
        "owner": new.owner,
        **({"crash_safe": True} if new.crash_safe else {}),
        **({"redact": list(new.redact)} if new.redact else {}),
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
        owner=doc.get("owner"),
        crash_safe=bool(doc.get("crash_safe", False)),
        redact=tuple(doc.get("redact") or ()),
    )


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
