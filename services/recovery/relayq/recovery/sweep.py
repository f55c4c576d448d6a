"""One recovery run: rebuild dispatch from MongoDB, hand back stalled claims, apply retention.

MongoDB is the truth and Redis only dispatches (ARCHITECTURE.md): a job Redis
lost (a failover, a crash between the insert and the XADD, a Redis refusal)
still has its record, and this run puts it back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from relayq.core.jobs import TaskState
from relayq.core.lifecycle import UNFINISHED, Lifecycle
from relayq.core.presence import Presence
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue, RecoveryQueue
from relayq.core.run_lock import Held, RunLock
from relayq.core.settings import Settings
from relayq.core.store import TaskStore, by_state, now, with_transient_retry
from relayq.core.telemetry import log_event
from relayq.recovery.retention import Retention, apply_retention
from relayq.recovery.settings import RecoverySettings

log = logging.getLogger("relayq.recovery")

RECOVERY_CONSUMER = "relayq-recovery"
LOCK_NAME = "recovery"
REDISPATCH_BATCH = 500
PAGE = 1000
STALLED_BATCH = 1000
LOST_STATES = (TaskState.PENDING, TaskState.QUEUED, TaskState.RETRYING)
# Summary keys: the state each redispatched task was found in.
_KINDS = ("pending", "queued", "retrying", "active")


@dataclass
class Summary:
    """What one run did; `to_public` is the JSON printed on stdout."""

    outcome: str = "success"
    fence: int = 0
    started_at: datetime = field(default_factory=now)
    duration_seconds: float = 0.0
    redispatched: dict[str, int] = field(default_factory=lambda: {s: 0 for s in _KINDS})
    already_dispatched: int = 0
    settled: int = 0
    reclaimed: int = 0
    poison: int = 0
    dead_lettered: int = 0
    stream_entries: int = 0
    delayed_entries: int = 0
    candidates: int = 0
    retention: Retention | None = None
    error: str | None = None

    @property
    def redispatched_total(self) -> int:
        return sum(self.redispatched.values())

    def to_public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "outcome": self.outcome,
            "fence": self.fence,
            "startedAt": self.started_at.isoformat().replace("+00:00", "Z"),
            "durationSeconds": round(self.duration_seconds, 4),
            "redispatched": dict(self.redispatched),
            "redispatchedTotal": self.redispatched_total,
            "alreadyDispatched": self.already_dispatched,
            "settled": self.settled,
            "reclaimed": self.reclaimed,
            "poison": self.poison,
            "deadLettered": self.dead_lettered,
            "scanned": {
                "streamEntries": self.stream_entries,
                "delayedEntries": self.delayed_entries,
                "candidates": self.candidates,
            },
            "retention": None if self.retention is None else self.retention.to_public(),
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Candidate:
    """A task record MongoDB says should be in Redis."""

    id: str
    type: str
    priority: Priority
    state: TaskState
    version: int
    run_at: datetime | None


class Recovery:
    """Runs recovery passes over one Redis and one task store."""

    def __init__(
        self, settings: Settings, recovery: RecoverySettings, queue: Queue, store: TaskStore
    ) -> None:
        self.settings = settings
        self.recovery = recovery
        self.queue = RecoveryQueue(queue)
        self.store = store
        self.lifecycle = Lifecycle(store)
        self.lock = RunLock(queue, LOCK_NAME, recovery.lock_seconds)

    async def run_once(self) -> Summary:
        """One run under the lock; returns a summary whose outcome is success or skipped.

        Raises on Redis or MongoDB errors (after recording the failure where Redis allows).
        """
        summary = Summary()
        t0 = time.perf_counter()
        held = await self.lock.acquire()
        if held is None:
            summary.outcome = "skipped"
            summary.duration_seconds = time.perf_counter() - t0
            await self._write_report(summary)
            log_event(log, logging.INFO, "recovery skipped: another run holds the lock")
            return summary
        summary.fence = held.fence
        try:
            await self._pass(held, summary)
        except BaseException as exc:
            summary.outcome = "failure"
            summary.error = (
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            )
            summary.duration_seconds = time.perf_counter() - t0
            try:
                await self._write_report(summary)
                await self.lock.release(held)
            except Exception as report_exc:  # Redis is likely the reason the run failed
                log_event(log, logging.WARNING, "failure not recorded", error=str(report_exc))
            raise
        summary.duration_seconds = time.perf_counter() - t0
        await self._write_report(summary)
        await self.lock.release(held)
        log_event(log, logging.INFO, "recovery run finished", **summary.to_public())
        return summary

    async def _pass(self, held: Held, summary: Summary) -> None:
        for priority in Priority:
            await self._requeue_stalled(priority, summary)
        await self.lock.extend(held)
        # Redis first, then MongoDB: a job finished and acked between the two
        # reads is then finished in MongoDB too, and never looks lost.
        presence: dict[Priority, Presence] = {}
        for priority in Priority:
            presence[priority] = found = await self.queue.presence(priority)
            summary.stream_entries += found.stream_entries
            summary.delayed_entries += found.delayed_entries
        await self.lock.extend(held)
        lost = await self._lost(presence)
        summary.candidates = sum(len(c) for c in lost.values())
        for priority, candidates in lost.items():
            await self._redispatch_lost(priority, candidates, presence[priority], summary)
            await self.lock.extend(held)
        summary.retention = await apply_retention(self.store, self.recovery)

    # -- stalled claims ------------------------------------------------------

    async def _requeue_stalled(self, priority: Priority, summary: Summary) -> None:
        """Claims idle past the lease (and the grace) go back to the ready stream."""
        idle_ms = int((self.settings.lease_seconds + self.recovery.grace_seconds) * 1000)
        requeued, poison = await self.queue.hand_back_stalled(
            priority, RECOVERY_CONSUMER, idle_ms, STALLED_BATCH, self.settings.max_deliveries
        )
        if requeued:
            summary.reclaimed += len(requeued)
            log_event(
                log,
                logging.WARNING,
                "stalled claims handed back",
                priority=priority.value,
                count=len(requeued),
                task_ids=[r.task_id for r in requeued],
            )
        for stalled in poison:
            summary.poison += 1
            task = await self.store.get(stalled.task_id)
            if task is not None and task.crash_safe:
                # Crash-safe by protocol (it may have moved money): parked, never failed.
                await self.lifecycle.park_unclaimed(
                    stalled.task_id, type_=stalled.type, priority=priority, reason="deliveries",
                    details={"deliveries": stalled.deliveries},
                )  # fmt: skip
                continue
            failed = await self.lifecycle.dead_letter(
                stalled.task_id,
                type_=stalled.type,
                priority=priority,
                error=f"poison: delivered {stalled.deliveries} times without finishing",
                reason="poison",
                expected=UNFINISHED,
                deliveries=stalled.deliveries,
            )
            if failed is not None:
                summary.dead_lettered += 1

    # -- lost dispatch -------------------------------------------------------

    async def _lost(self, presence: dict[Priority, Presence]) -> dict[Priority, list[Candidate]]:
        """Records that should be in Redis, are old enough, and were not seen there."""
        at = now()
        grace = timedelta(seconds=self.recovery.grace_seconds)
        lease = timedelta(seconds=self.settings.lease_seconds)
        queries: list[dict[str, Any]] = [
            {**by_state(LOST_STATES), "updated_at": {"$lt": at - grace}},
            # A running job's record is not touched while it runs (its lease
            # lives in Redis), so only the missing claim says its worker is gone.
            {**by_state([TaskState.ACTIVE]), "updated_at": {"$lt": at - lease - grace}},
        ]
        lost: dict[Priority, list[Candidate]] = {p: [] for p in Priority}
        fields = {"type": 1, "priority": 1, "state": 1, "version": 1, "run_at": 1}
        found = 0
        for query in queries:
            # Paged by id: most records are still in Redis, so the bound is on
            # what is found lost, not on what is read.
            after: str | None = None
            while found < self.recovery.max_tasks:
                page_query = query if after is None else {**query, "_id": {"$gt": after}}
                docs = await with_transient_retry(
                    lambda q=page_query: (
                        self.store.tasks.find(q, fields)  # type: ignore[misc]
                        .sort("_id", 1)
                        .limit(PAGE)
                        .to_list()
                    )
                )
                for doc in docs:
                    c = _candidate(doc)
                    if c is not None and c.id not in presence[c.priority].task_ids:
                        lost[c.priority].append(c)
                        found += 1
                        if found >= self.recovery.max_tasks:
                            break
                if len(docs) < PAGE:
                    break
                after = str(docs[-1]["_id"])
        return lost

    async def _redispatch_lost(
        self, priority: Priority, candidates: Sequence[Candidate], found: Presence, s: Summary
    ) -> None:
        ready: list[tuple[Candidate, int]] = []
        for c in candidates:
            moved = await self._make_dispatchable(c)
            if moved is None:
                continue  # another writer moved it on: not lost
            delay = -1
            if c.run_at is not None and c.state is not TaskState.ACTIVE:
                ahead_ms = int((c.run_at - now()).total_seconds() * 1000)
                delay = ahead_ms if ahead_ms > 0 else -1
            ready.append((moved, delay))
            if c.state is TaskState.ACTIVE:
                s.settled += 1
        for i in range(0, len(ready), REDISPATCH_BATCH):
            batch = ready[i : i + REDISPATCH_BATCH]
            added = await self.queue.redispatch(
                priority, found.since_id, [(Message(c.id, c.type), delay) for c, delay in batch]
            )
            for c, _ in batch:
                if c.id in added:
                    s.redispatched[c.state.value] += 1
                else:
                    s.already_dispatched += 1
            if added:
                log_event(
                    log,
                    logging.WARNING,
                    "lost jobs dispatched again",
                    priority=priority.value,
                    count=len(added),
                    task_ids=sorted(added),
                )

    async def _make_dispatchable(self, c: Candidate) -> Candidate | None:
        """pending and active (its worker gone) move to queued, guarded; others stay as they are."""
        if c.state not in (TaskState.PENDING, TaskState.ACTIVE):
            return c
        moved = await self.lifecycle.requeue(c.id, c.state, c.version)
        if moved is None:
            return None
        if c.state is TaskState.ACTIVE:
            log_event(
                log,
                logging.WARNING,
                "active task of a lost worker settled",
                task_id=c.id,
                type=c.type,
                priority=c.priority.value,
            )
        return c

    # -- report ----------------------------------------------------------------

    async def _write_report(self, s: Summary) -> None:
        deleted = s.retention.deleted if s.retention is not None else 0
        await self.queue.record_run(
            s.fence,
            s.outcome,
            s.duration_seconds,
            {
                "redispatched": s.redispatched_total,
                "reclaimed": s.reclaimed,
                "settled": s.settled,
                "deleted": deleted,
                "dead_lettered": s.dead_lettered,
            },
        )


def _candidate(doc: dict[str, Any]) -> Candidate | None:
    try:
        return Candidate(
            id=str(doc["_id"]),
            type=str(doc["type"]),
            priority=Priority(doc["priority"]),
            state=TaskState(doc["state"]),
            version=int(doc["version"]),
            run_at=doc.get("run_at"),
        )
    except (KeyError, ValueError):
        return None
