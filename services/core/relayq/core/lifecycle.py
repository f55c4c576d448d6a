"""The task lifecycle: every state change of a task record, by name.

Callers say what happened (`start`, `complete`, `dead_letter`, ...); this
module decides which fields that means and emits the metric and the log line
of that change, in one place, so no path can dead-letter a task without
counting it. Each change is a guarded update (`TaskStore.transition`) on the
expected state, and on the version where the caller holds one. Every method
returns the updated task, or None when the guard did not match: another writer
got there first, and the caller must not act on the task.

A worker's `start` and `complete` calls that arrive together (the jobs of one
claim, the runs that finish in one turn of the event loop) are written as one
batch (`TaskStore.transition_many`), stamped with one time: each caller still
gets its own guarded answer, and each metric and log line stays its own.

Nothing outside relayq.core writes task fields: a test walks the source of the
other members for calls of `transition` and for raw collection writes.

A task finished for good (completed, or cancelled) loses the fields its job
type declares redacted (JobType.redact) from its stored payload and result:
nothing runs it again, and no view may show them. A dead letter or a parked
task keeps them, since an operator may run it again; retention deletes it.
The request hash stays, so an idempotent replay still tells a replay from a
conflict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from relayq.core.batching import Batcher
from relayq.core.jobs import CLAIMABLE_STATES, Task, TaskState
from relayq.core.priorities import Priority
from relayq.core.redaction import redact, redact_texts
from relayq.core.store import Change, TaskStore, now
from relayq.core.telemetry import (
    CANCELLED,
    DEAD_LETTERED,
    PARKED,
    PROMOTED,
    RESOLVED,
    log_event,
)

log = logging.getLogger("relayq.lifecycle")

# A dead letter of a task that may be anywhere short of finished (poison, unknown type).
UNFINISHED = (*CLAIMABLE_STATES, TaskState.ACTIVE)
# What an operator may cancel: anything no worker holds and nothing has finished.
CANCELLABLE = (*CLAIMABLE_STATES, TaskState.NEEDS_REVIEW)
# What an operator may run again with a fresh attempt budget.
REVIVABLE = (TaskState.FAILED, TaskState.NEEDS_REVIEW)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# Batched run changes in flight at once; more wait and leave together when one lands.
RUN_WRITES_IN_FLIGHT = 2

# A change made at the instant its batch is written.
ChangeAt = Callable[[datetime], Change]


def _after(seconds: float) -> datetime:
    return now() + timedelta(seconds=seconds)


def _stripped(task: Task, result: Any = None) -> dict[str, Any]:
    """The payload and result fields of a task finished for good, its declared
    personal data gone (JobType.redact); nothing for a type that declares none."""
    if not task.redact:
        return {}
    return {
        "payload": redact(task.payload, task.redact, "payload"),
        "result": redact(result, task.redact, "result"),
        # The values go with the payload: the review's text would be all that is left.
        "review": redact_texts(task.review, task.payload, task.redact),
    }


class Lifecycle:
    """Named, guarded state changes of the tasks in one TaskStore."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._runs: Batcher[ChangeAt, Task | None] = Batcher(
            self._write_runs, max_batch=store.batch_max, max_in_flight=RUN_WRITES_IN_FLIGHT
        )

    # -- a worker's run ----------------------------------------------------------

    async def start(self, task_id: str, worker: str, *, redelivered: bool) -> Task | None:
        """queued, retrying or pending -> active, one more attempt counted.

        A redelivery may also take over an `active` task: its previous holder's
        lease expired.
        """
        expected = (*CLAIMABLE_STATES, *([TaskState.ACTIVE] if redelivered else []))
        return await self._run_change(
            lambda at: Change(
                task_id,
                expected,
                TaskState.ACTIVE,
                set_fields={"started_at": at, "worker": worker, "run_at": None},
                inc_fields={"attempts": 1},
            )
        )

    async def complete(self, task: Task, result: Any) -> Task | None:
        """active -> completed with the handler's result."""
        return await self._run_change(
            lambda at: Change(
                task.id,
                (TaskState.ACTIVE,),
                TaskState.COMPLETED,
                version=task.version,
                set_fields={
                    "result": result,
                    "finished_at": at,
                    "last_error": None,
                    **_stripped(task, result),
                },
                task=task,
            )
        )

    async def _run_change(self, change_at: ChangeAt) -> Task | None:
        if not self.store.batching:
            c = change_at(now())
            return await self.store.transition(
                c.task_id, c.expected, c.new_state, version=c.version,
                set_fields=c.set_fields, inc_fields=c.inc_fields,
            )  # fmt: skip
        return await self._runs.submit(change_at)

    async def _write_runs(self, changes_at: list[ChangeAt]) -> list[Task | BaseException | None]:
        """One batch of run changes, all made at one instant.

        The seam for what each change will carry next (a task event, a record
        of the attempt): built here from the same changes, written beside them.
        """
        at = now()
        return await self.store.transition_many([change_at(at) for change_at in changes_at])

    async def retry_later(self, task: Task, error: str, delay_seconds: float) -> Task | None:
        """active -> retrying: the attempt failed and counts; run again after the delay."""
        return await self.store.transition(
            task.id,
            [TaskState.ACTIVE],
            TaskState.RETRYING,
            version=task.version,
            set_fields={"last_error": error, "run_at": _after(delay_seconds)},
        )

    async def defer(self, task: Task, reason: str, seconds: float) -> Task | None:
        """active -> retrying after `seconds`; the run was a wait, not an attempt."""
        return await self.store.transition(
            task.id,
            [TaskState.ACTIVE],
            TaskState.RETRYING,
            version=task.version,
            set_fields={"last_error": f"waiting: {reason}", "run_at": _after(seconds)},
            inc_fields={"attempts": -1},
        )

    async def hand_back(self, task: Task, reason: str) -> Task | None:
        """active -> retrying, due now; the run was cut short and does not count."""
        return await self.store.transition(
            task.id,
            [TaskState.ACTIVE],
            TaskState.RETRYING,
            version=task.version,
            set_fields={"last_error": reason, "run_at": now()},
            inc_fields={"attempts": -1},
        )

    async def dead_letter(
        self,
        task_id: str,
        *,
        type_: str,
        priority: Priority,
        error: str,
        reason: str,
        expected: Sequence[TaskState] = (TaskState.ACTIVE,),
        version: int | None = None,
        **context: Any,
    ) -> Task | None:
        """-> failed (a dead letter an operator may retry), counted and logged.

        `reason` is the dead-letter metric's label: attempts, permanent, poison,
        unknown-type, or refused (a job module's own verdict, e.g. a swap the
        chain refused); `context` joins the log line.
        """
        failed = await self.store.transition(
            task_id,
            expected,
            TaskState.FAILED,
            version=version,
            set_fields={"last_error": error, "finished_at": now()},
        )
        if failed is not None:
            DEAD_LETTERED.labels(priority=priority.value, reason=reason).inc()
            log_event(
                log,
                logging.ERROR,
                "job dead-lettered",
                task_id=task_id,
                type=type_,
                priority=priority.value,
                reason=reason,
                error=error,
                **context,
            )
        return failed

    async def park(
        self,
        task: Task,
        reason: str,
        details: dict[str, Any] | None = None,
        *,
        expected: Sequence[TaskState] = (TaskState.ACTIVE,),
    ) -> Task | None:
        """active (or `expected`) -> needs_review: the job found what no rule may decide alone.

        `reason` is a short machine-readable label (the metric's label: keep it
        to a fixed set per job module); `details` is what the operator needs to
        decide (what landed, what did not). Nothing runs the task until an
        operator revives or cancels it; retention never deletes it. A job
        module may park a task it does not hold (a held purchase whose swap
        partly landed) by naming the state it read in `expected`.
        """
        return await self._park(
            task.id, task.type, task.priority, reason, details, expected, task.version
        )

    async def park_unclaimed(
        self,
        task_id: str,
        *,
        type_: str,
        priority: Priority,
        reason: str,
        details: dict[str, Any] | None = None,
        expected: Sequence[TaskState] = UNFINISHED,
    ) -> Task | None:
        """-> needs_review for a task no worker holds now (a crash-safe job past its
        delivery limit), in whatever state short of finished it was left."""
        return await self._park(task_id, type_, priority, reason, details, expected, None)

    async def _park(
        self,
        task_id: str,
        type_: str,
        priority: Priority,
        reason: str,
        details: dict[str, Any] | None,
        expected: Sequence[TaskState],
        version: int | None,
    ) -> Task | None:
        review = {"reason": reason, "details": details or {}, "parkedAt": _iso(now())}
        parked = await self.store.transition(
            task_id,
            expected,
            TaskState.NEEDS_REVIEW,
            version=version,
            set_fields={"last_error": f"needs review: {reason}", "review": review},
        )
        if parked is not None:
            PARKED.labels(priority=priority.value, reason=reason).inc()
            log_event(
                log,
                logging.WARNING,
                "job parked for review",
                task_id=task_id,
                type=type_,
                priority=priority.value,
                reason=reason,
            )
        return parked

    # -- an operator's hand ----------------------------------------------------------

    async def cancel(self, task: Task, reason: str) -> Task | None:
        """pending, queued, retrying or needs_review -> cancelled (finished, never run again).

        An active task is not cancelled: its handler may be mid-way through
        something that must finish (a transfer being sent).
        """
        cancelled = await self.store.transition(
            task.id,
            CANCELLABLE,
            TaskState.CANCELLED,
            version=task.version,
            set_fields={
                "last_error": f"cancelled: {reason}",
                "finished_at": now(),
                "run_at": None,
                **_stripped(task, task.result),
            },
        )
        if cancelled is not None:
            CANCELLED.labels(priority=task.priority.value).inc()
            log_event(
                log,
                logging.INFO,
                "job cancelled",
                task_id=task.id,
                type=task.type,
                priority=task.priority.value,
                reason=reason,
            )
        return cancelled

    async def resolve(
        self, task: Task, result: Any, *, resolution: str, reason: str
    ) -> Task | None:
        """needs_review -> completed with `result`: an operator decided, on evidence the
        job module checked, that the parked work is done (a transfer found landed).

        `resolution` is the metric's label (a fixed set per job module); `reason`
        is the operator's words, kept as the task's last error and logged.
        """
        resolved = await self.store.transition(
            task.id,
            [TaskState.NEEDS_REVIEW],
            TaskState.COMPLETED,
            version=task.version,
            set_fields={
                "result": result,
                "finished_at": now(),
                "last_error": f"resolved ({resolution}): {reason}",
                **_stripped(task, result),
            },
        )
        if resolved is not None:
            RESOLVED.labels(priority=task.priority.value, resolution=resolution).inc()
            log_event(
                log,
                logging.WARNING,
                "parked job resolved",
                task_id=task.id,
                type=task.type,
                priority=task.priority.value,
                resolution=resolution,
                reason=reason,
            )
        return resolved

    async def promote(self, task: Task) -> Task | None:
        """queued or retrying with a due time -> the same state, due now.

        The caller then moves the job from Redis's delayed set to the stream
        (Queue.promote); if it crashes in between, the job runs at its old time.
        """
        promoted = await self.store.transition(
            task.id,
            [TaskState.QUEUED, TaskState.RETRYING],
            task.state,
            version=task.version,
            set_fields={"run_at": None},
        )
        if promoted is not None:
            PROMOTED.labels(priority=task.priority.value).inc()
            log_event(log, logging.INFO, "job promoted", task_id=task.id, type=task.type)
        return promoted

    # -- dispatch ------------------------------------------------------------------

    async def hold(self, task: Task) -> Task | None:
        """queued -> pending: Redis refused the job; recovery (or a later call) dispatches it."""
        return await self.store.transition(
            task.id,
            [TaskState.QUEUED],
            TaskState.PENDING,
            version=task.version,
            set_fields={"queued_at": None},
        )

    async def release(self, task: Task) -> Task | None:
        """pending -> queued: a held task goes out to be dispatched."""
        return await self.store.transition(
            task.id,
            [TaskState.PENDING],
            TaskState.QUEUED,
            version=task.version,
            set_fields={"queued_at": now()},
        )

    async def requeue(self, task_id: str, state: TaskState, version: int) -> Task | None:
        """pending or active (its worker and claim gone) -> queued, for recovery to dispatch."""
        return await self.store.transition(
            task_id,
            [state],
            TaskState.QUEUED,
            version=version,
            set_fields={
                "queued_at": now(),
                **({"worker": None} if state is TaskState.ACTIVE else {}),
            },
        )

    async def revive(self, task: Task) -> Task | None:
        """failed or needs_review -> queued with a fresh attempt budget: an operator
        retries a dead letter, or releases a parked task after review.

        `attempts` keeps counting every run; the budget grows by the task's
        original number of attempts.
        """
        return await self.store.transition(
            task.id,
            REVIVABLE,
            TaskState.QUEUED,
            version=task.version,
            set_fields={
                "max_attempts": task.attempts + task.attempt_budget,
                "finished_at": None,
                "run_at": None,
                "queued_at": now(),
            },
        )
