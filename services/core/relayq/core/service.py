"""Producer and administration operations over the store and the queue.

The CLI and the API gateway both call these; handlers stay thin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError

from relayq.core.jobs import (
    InvalidPayload,
    InvalidTaskState,
    Registry,
    Task,
    TaskNotFound,
    TaskState,
)
from relayq.core.lifecycle import CANCELLABLE, Lifecycle
from relayq.core.owners import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    is_client_id,
    is_idempotency_key,
    legacy_key,
    scoped_key,
)
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue, QueueStats
from relayq.core.settings import Settings
from relayq.core.store import IdempotencyConflict, NewTask, Page, TaskStore, now, payload_hash
from relayq.core.telemetry import ENQUEUED, log_event

log = logging.getLogger("relayq.service")

MAX_DELAY_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class JobRequest:
    """A producer's request for one job.

    Attributes:
        type: a registered job type.
        payload: its input, a JSON object.
        priority: None for the type's default.
        delay_seconds: run no sooner than this from now (exclusive with run_at).
        run_at: run no sooner than this time (UTC).
        max_attempts: None for the type's or the class's default.
        idempotency_key: a replay with the same key returns the same task.
        client: the API client that owns the task: only it (and administrators)
            can read it, and its idempotency keys never collide with another's.
            None for tasks relayq or an operator creates.
        trace: request id and trace context to carry into the job.
    """

    type: str
    payload: Mapping[str, Any]
    priority: Priority | None = None
    delay_seconds: float | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    client: str | None = None
    trace: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submission: the task, and whether this call created it."""

    task: Task
    created: bool


@dataclass(frozen=True)
class QueueOverview:
    """A priority's queue numbers with its dead-letter count from the store."""

    stats: QueueStats
    dead: int

    def to_public(self) -> dict[str, Any]:
        s = self.stats
        return {
            "priority": s.priority.value,
            "waiting": s.waiting,
            "active": s.active,
            "delayed": s.delayed,
            "dead": self.dead,
            "paused": s.paused,
            "backlog": s.backlog,
            "oldestWaitingAgeSeconds": round(s.oldest_waiting_age_seconds, 3),
        }


class JobService:
    """Submits jobs (record first, then dispatch) and administers queues."""

    def __init__(
        self, settings: Settings, registry: Registry, store: TaskStore, queue: Queue
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.lifecycle = Lifecycle(store)
        self.queue = queue

    def _prepare(self, request: JobRequest) -> NewTask:
        job_type = self.registry.get(request.type)
        payload = self.registry.check_payload(request.type, request.payload)
        priority = request.priority or job_type.default_priority
        cls = self.settings.priority_class(priority)
        max_attempts = (
            request.max_attempts
            if request.max_attempts is not None
            else job_type.attempts_under(cls)
        )
        if not 1 <= max_attempts <= 100:
            raise InvalidPayload("maxAttempts must be between 1 and 100", field="maxAttempts")
        key = request.idempotency_key
        if key is not None and not is_idempotency_key(key):
            raise InvalidPayload(
                f"idempotency key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII "
                "characters",
                field="idempotencyKey",
            )
        if request.client is not None and not is_client_id(request.client):
            raise InvalidPayload(f"invalid client id {request.client!r}", field="client")
        if key is not None:
            key = scoped_key(request.client, key)
        if request.delay_seconds is not None and request.run_at is not None:
            raise InvalidPayload("give delaySeconds or runAt, not both", field="delaySeconds")
        run_at = request.run_at
        if request.delay_seconds is not None:
            if not 0 <= request.delay_seconds <= MAX_DELAY_SECONDS:
                raise InvalidPayload(
                    f"delaySeconds must be between 0 and {MAX_DELAY_SECONDS}", field="delaySeconds"
                )
            run_at = now() + timedelta(seconds=request.delay_seconds)
        if run_at is not None:
            if run_at.tzinfo is None:
                raise InvalidPayload("runAt needs a time zone", field="runAt")
            if run_at - now() > timedelta(seconds=MAX_DELAY_SECONDS):
                raise InvalidPayload("runAt is too far in the future", field="runAt")
        return NewTask(
            type=request.type,
            priority=priority,
            payload=payload,
            max_attempts=max_attempts,
            idempotency_key=key,
            run_at=run_at,
            trace=request.trace,
            owner=request.client,
            crash_safe=job_type.crash_safe,
            redact=job_type.redact,
        )

    async def replay_of(self, request: JobRequest) -> Task | None:
        """The task an idempotent request already created, or None; a different body conflicts."""
        new = self._prepare(request)
        if new.idempotency_key is None:
            return None
        task = await self.store.get_by_idempotency_key(new.idempotency_key)
        if task is not None and task.payload_hash != payload_hash(
            new.type, new.priority, new.payload
        ):
            raise IdempotencyConflict(task)
        return task

    async def submit_held(self, request: JobRequest, task_id: str | None = None) -> Submitted:
        """Validate and write the record as `pending`, without dispatching it.

        The producer releases it with `dispatch_pending` once its precondition
        holds (a purchase's swap has landed); recovery dispatches it if the
        producer never does, so its handler must check the precondition too.
        """
        new = replace(self._prepare(request), held=True, task_id=task_id)
        legacy = await self._legacy_replay(request, new)
        if legacy is not None:
            return Submitted(legacy, False)
        task, created = await self.store.insert(new)
        return Submitted(task, created)

    async def _legacy_replay(self, request: JobRequest, new: NewTask) -> Task | None:
        """A task a key without a client created before keys were scoped (stored bare)."""
        if request.idempotency_key is None:
            return None
        bare = legacy_key(request.client, request.idempotency_key)
        if bare is None:
            return None
        task = await self.store.get_by_idempotency_key(bare)
        if task is not None and task.payload_hash != payload_hash(
            new.type, new.priority, new.payload
        ):
            raise IdempotencyConflict(task)
        return task

    async def submit(self, request: JobRequest) -> Submitted:
        """Validate, write the record, then dispatch. Redis down leaves the task `pending`.

        Concurrent submissions share their store commit and their Redis round
        trip (TaskStore.insert, Queue.enqueue); each answer waits for its own
        record to be durable.
        """
        new = self._prepare(request)
        legacy = await self._legacy_replay(request, new)
        if legacy is not None:
            return Submitted(legacy, False)
        task, created = await self.store.insert(new)
        if created:
            task = (await self.dispatch([task])).get(task.id, task)
        return Submitted(task, created)

    async def submit_many(self, requests: Sequence[JobRequest]) -> list[Submitted]:
        news = [self._prepare(r) for r in requests]
        if any(r.client is None and r.idempotency_key is not None for r in requests):
            legacy = [await self._legacy_replay(r, n) for r, n in zip(requests, news, strict=True)]
            if any(legacy):
                return await self._submit_around(requests, news, legacy)
        inserted = await self.store.insert_many(news)
        fresh = [task for task, created in inserted if created]
        undispatched = await self.dispatch(fresh)
        return [
            Submitted(undispatched.get(task.id, task) if created else task, created)
            for task, created in inserted
        ]

    async def _submit_around(
        self, requests: Sequence[JobRequest], news: Sequence[NewTask], legacy: list[Task | None]
    ) -> list[Submitted]:
        """Submit the requests no bare legacy key already answered."""
        rest = [r for r, old in zip(requests, legacy, strict=True) if old is None]
        fresh = iter(await self.submit_many(rest) if rest else [])
        return [Submitted(old, False) if old is not None else next(fresh) for old in legacy]

    async def dispatch(self, tasks: Sequence[Task]) -> dict[str, Task]:
        """Put `queued` tasks on Redis; those it cannot go back to `pending`.

        Returns the tasks left pending, by id, for recovery to dispatch later.
        """
        left: dict[str, Task] = {}
        by_priority: dict[Priority, list[Task]] = {}
        for t in tasks:
            by_priority.setdefault(t.priority, []).append(t)
        for priority, group in by_priority.items():
            at = now()
            ready = [t for t in group if t.run_at is None or t.run_at <= at]
            later = [t for t in group if t.run_at is not None and t.run_at > at]
            try:
                # One bound for the whole step: redis-py's retries would otherwise
                # multiply the socket timeout on a server that accepts and never answers.
                async with asyncio.timeout(self.settings.redis_timeout_seconds):
                    await self._put(priority, ready, later, at)
            except (RedisError, OSError, TimeoutError) as exc:
                log_event(
                    log,
                    logging.WARNING,
                    "dispatch deferred: Redis unreachable",
                    priority=priority.value,
                    tasks=len(group),
                    error=str(exc) or type(exc).__name__,
                )
                # A job whose write reached Redis before the bound is claimable in
                # `pending` too; recovery's second copy meets the start guard.
                for t in group:
                    left[t.id] = await self.lifecycle.hold(t) or t
                continue
            for t in group:
                ENQUEUED.labels(priority=priority.value, type=t.type).inc()
        return left

    async def _put(
        self, priority: Priority, ready: Sequence[Task], later: Sequence[Task], at: datetime
    ) -> None:
        await self.queue.ensure_group(priority)
        if len(ready) == 1:  # auto-pipelined with concurrent submissions
            await self.queue.enqueue(priority, Message(ready[0].id, ready[0].type))
        elif ready:
            await self.queue.enqueue_many(priority, [Message(t.id, t.type) for t in ready])
        if later:
            await self.queue.schedule(
                priority,
                [
                    (Message(t.id, t.type), (t.run_at - at).total_seconds())
                    for t in later
                    if t.run_at is not None
                ],
            )

    async def dispatch_pending(self, tasks: Sequence[Task]) -> dict[str, Task]:
        """pending -> queued, then dispatch; returns the tasks still pending."""
        queued = []
        for t in tasks:
            moved = await self.lifecycle.release(t)
            if moved is not None:
                queued.append(moved)
        return await self.dispatch(queued)

    async def get(self, task_id: str) -> Task | None:
        return await self.store.get(task_id)

    async def list_tasks(self, **filters: Any) -> Page:
        return await self.store.list(**filters)

    async def retry_dead_letter(self, task_id: str) -> Task | None:
        """failed -> queued with a fresh attempt budget (Lifecycle.revive), then dispatch.

        None if the task is not a dead letter.
        """
        current = await self.store.get(task_id)
        if current is None or current.state is not TaskState.FAILED:
            return None
        task = await self.lifecycle.revive(current)
        if task is None:
            return None
        task = (await self.dispatch([task])).get(task.id, task)
        log_event(log, logging.INFO, "dead letter retried", task_id=task.id, type=task.type)
        return task

    async def retry_dead_letters(self, type_: str | None = None, limit: int = 1000) -> int:
        """Retry up to `limit` dead letters, optionally of one type; returns how many."""
        retried = 0
        cursor: str | None = None
        while retried < limit:
            page = await self.store.dead_letters(
                type_=type_, limit=min(100, limit - retried), cursor=cursor
            )
            for task in page.tasks:
                if await self.retry_dead_letter(task.id) is not None:
                    retried += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return retried

    async def release_review(self, task_id: str, reason: str) -> Task:
        """needs_review -> queued with a fresh attempt budget, then dispatch: the
        operator reviewed a parked task and lets it run again."""
        current = await self._current(task_id)
        if current.state is not TaskState.NEEDS_REVIEW:
            raise InvalidTaskState(current, "release from review")
        task = await self.lifecycle.revive(current)
        if task is None:
            raise InvalidTaskState(await self._current(task_id), "release from review")
        task = (await self.dispatch([task])).get(task.id, task)
        log_event(log, logging.INFO, "review released", task_id=task.id, type=task.type,
                  reason=reason)  # fmt: skip
        return task

    async def cancel(self, task_id: str, reason: str) -> Task:
        """Cancel a task no worker holds (Lifecycle.cancel) and drop its delayed job.

        Raises TaskNotFound, or InvalidTaskState for an active or finished task.
        """
        current = await self._current(task_id)
        if current.state not in CANCELLABLE:
            raise InvalidTaskState(current, "cancel")
        task = await self.lifecycle.cancel(current, reason)
        if task is None:  # it moved meanwhile (a worker took it)
            raise InvalidTaskState(await self._current(task_id), "cancel")
        try:
            await self.queue.withdraw(task.priority, Message(task.id, task.type))
        except RedisError as exc:  # the record decides: a worker drops the stale job
            log_event(log, logging.WARNING, "delayed job not withdrawn", task_id=task.id,
                      error=str(exc))  # fmt: skip
        return task

    async def promote(self, task_id: str) -> tuple[Task, bool]:
        """Run a delayed (scheduled or retrying) task now.

        Returns the task and whether its job moved out of the delayed set (False:
        it was already due). Raises TaskNotFound, or InvalidTaskState when the
        task is not waiting for a due time.
        """
        current = await self._current(task_id)
        if current.state not in (TaskState.QUEUED, TaskState.RETRYING) or current.run_at is None:
            raise InvalidTaskState(current, "promote")
        task = await self.lifecycle.promote(current)
        if task is None:
            raise InvalidTaskState(await self._current(task_id), "promote")
        moved = await self.queue.promote(task.priority, Message(task.id, task.type))
        return task, moved is not None

    async def _current(self, task_id: str) -> Task:
        task = await self.store.get(task_id)
        if task is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return task

    async def delete_dead_letter(self, task_id: str) -> bool:
        return await self.store.delete(task_id, [TaskState.FAILED])

    async def overview(self) -> list[QueueOverview]:
        out = []
        for priority in Priority:
            stats = await self.queue.stats(priority)
            dead = await self.store.count(state=TaskState.FAILED, priority=priority)
            out.append(QueueOverview(stats, dead))
        return out

    async def pause(self, priority: Priority) -> None:
        await self.queue.pause(priority)
        log_event(log, logging.INFO, "queue paused", priority=priority.value)

    async def resume(self, priority: Priority) -> None:
        await self.queue.resume(priority)
        log_event(log, logging.INFO, "queue resumed", priority=priority.value)
