"""What a worker does with one delivery: the task's state machine in MongoDB.

At-least-once execution: a handler may run twice (a crash between its effect
and the ack). Every state change is guarded by state and version, so a stale
run can never overwrite a newer one, and a duplicate delivery is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

from relayq.core.jobs import (
    Defer,
    JobContext,
    JobType,
    NeedsReview,
    PermanentError,
    Registry,
    Task,
    TaskState,
    UnknownJobType,
)
from relayq.core.lifecycle import UNFINISHED, Lifecycle
from relayq.core.modules import ProcessContext
from relayq.core.priorities import Priority
from relayq.core.queue import Delivery, Queue
from relayq.core.redaction import redact_text
from relayq.core.settings import Settings
from relayq.core.telemetry import (
    JOBS,
    QUEUE_WAIT_SECONDS,
    RUN_SECONDS,
    SLA_SECONDS,
    SLA_STARTS,
    UNKNOWN_TYPE_LABEL,
    init_job_metrics,
    log_event,
)
from relayq.core.tracing import job_span

log = logging.getLogger("relayq.worker")

MAX_ERROR_LENGTH = 2000
# A job held back by its rate limit waits in its slot up to this long, then
# goes back to the delayed set so it does not hold a slot for longer.
RATE_WAIT_IN_SLOT_SECONDS = 2.0


@dataclass(frozen=True)
class Ack:
    """Done with the delivery: acknowledge and delete it."""


@dataclass(frozen=True)
class RetryIn:
    """Put the delivery back, due after `seconds`."""

    seconds: float


Outcome = Ack | RetryIn


@dataclass(frozen=True)
class _JobMetrics:
    """The series every run of one job type at one priority touches.

    Bound once rather than per run: a `labels()` lookup costs about a
    microsecond, four of them per job on the worker's hot path.
    """

    queue_wait: Histogram
    run: Histogram
    completed: Counter
    dropped: Counter
    sla_met: Counter
    sla_missed: Counter

    @classmethod
    def of(cls, priority: str, job_type: str) -> _JobMetrics:
        return cls(
            QUEUE_WAIT_SECONDS.labels(priority, job_type),
            RUN_SECONDS.labels(priority, job_type),
            JOBS.labels(priority, job_type, "completed"),
            JOBS.labels(priority, job_type, "dropped"),
            SLA_STARTS.labels(priority, "true"),
            SLA_STARTS.labels(priority, "false"),
        )


# Told once the handler has returned or raised, before its outcome is written:
# the runner frees the handler's slot then, so that the next claim (and its
# start write) overlaps this one's finishing write instead of waiting for it.
HandlerDone = Callable[[], None]


def _nothing() -> None:
    return None


class Executor(Protocol):
    async def execute(
        self, delivery: Delivery, consumer: str, handler_done: HandlerDone = _nothing
    ) -> Outcome: ...

    async def give_back(self, delivery: Delivery) -> bool:
        """Release a run abandoned at shutdown; True if it may be put back on the queue."""
        ...


class TaskExecutor:
    """Runs deliveries against task records: claim, run, complete, retry or dead-letter.

    Every state change goes through `lifecycle` and comes back out as an
    Outcome (Ack, RetryIn) for the runner to act on in Redis.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        lifecycle: Lifecycle,
        queue: Queue,
        process: ProcessContext | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.lifecycle = lifecycle
        self.queue = queue
        self.process = process
        self._rng = random.Random()
        self._running: dict[str, Task] = {}
        self._job_metrics: dict[tuple[Priority, str], _JobMetrics] = {}
        for priority, cls in settings.classes.items():
            if cls.sla_seconds is not None:  # dashboards draw the target next to the waits
                SLA_SECONDS.labels(priority=priority.value).set(cls.sla_seconds)
        init_job_metrics(registry.names())

    async def execute(
        self, delivery: Delivery, consumer: str, handler_done: HandlerDone = _nothing
    ) -> Outcome:
        msg = delivery.message
        p = delivery.priority.value
        try:
            job_type = self.registry.get(msg.type)
        except UnknownJobType as exc:
            await self._fail_unclaimed(delivery, str(exc), "unknown-type")
            return Ack()

        if job_type.rate_limit is not None:
            wait = await self._take_rate_slot(job_type)
            if wait > 0:
                JOBS.labels(priority=p, type=msg.type, outcome="deferred").inc()
                # Spread the deferred jobs so they do not all return at once.
                return RetryIn(wait * (1 + self._rng.random()))

        task = await self.lifecycle.start(
            msg.task_id, consumer, redelivered=delivery.deliveries > 1
        )
        if task is None:
            JOBS.labels(priority=p, type=msg.type, outcome="dropped").inc()
            log_event(log, logging.DEBUG, "duplicate delivery dropped", task_id=msg.task_id)
            return Ack()

        # From the record's own start time, so the metric and the record agree
        # exactly however long the batched write took to come back.
        started = task.started_at.timestamp() if task.started_at is not None else time.time()
        wait = max(0.0, started - delivery.ready_ms / 1000)
        metrics = self._metrics(delivery.priority, msg.type)
        metrics.queue_wait.observe(wait)
        sla = self.settings.priority_class(delivery.priority).sla_seconds
        (metrics.sla_met if sla is None or wait <= sla else metrics.sla_missed).inc()
        self._running[delivery.entry_id] = task
        try:
            outcome = await self._run(delivery, job_type, task, wait, handler_done)
        except asyncio.CancelledError:
            raise  # abandoned at shutdown: give_back needs the running task
        except BaseException:
            self._running.pop(delivery.entry_id, None)
            raise
        self._running.pop(delivery.entry_id, None)
        return outcome

    def _metrics(self, priority: Priority, job_type: str) -> _JobMetrics:
        """The labelled series of a run of `job_type`, looked up once per pair."""
        key = (priority, job_type)
        found = self._job_metrics.get(key)
        if found is None:
            found = self._job_metrics[key] = _JobMetrics.of(priority.value, job_type)
        return found

    async def _take_rate_slot(self, job_type: JobType) -> float:
        """Wait in the slot for a short limit; return the wait when it is too long for that."""
        assert job_type.rate_limit is not None
        limit = job_type.rate_limit
        deadline = time.monotonic() + RATE_WAIT_IN_SLOT_SECONDS
        while True:
            wait = await self.queue.rate_limit(
                job_type.name, limit.limit, limit.period_seconds, limit.burst
            )
            if wait <= 0 or time.monotonic() + wait > deadline:
                return wait
            await asyncio.sleep(wait + self._rng.uniform(0, wait / 4))

    async def _run(
        self,
        delivery: Delivery,
        job_type: JobType,
        task: Task,
        wait: float,
        handler_done: HandlerDone,
    ) -> Outcome:
        p = delivery.priority.value
        adapter = logging.LoggerAdapter(
            log, {"task_id": task.id, "type": task.type, "priority": p, **task.trace}
        )
        ctx = JobContext(
            task.id, task.attempts, delivery.priority, adapter, task.trace, self.process
        )
        log_event(
            log,
            logging.INFO,
            "job started",
            task_id=task.id,
            type=task.type,
            priority=p,
            attempt=task.attempts,
            queue_wait_s=round(wait, 4),
            **task.trace,
        )
        t0 = time.perf_counter()
        try:
            with job_span(
                task.id, task.type, p, task.attempts, task.trace.get("traceparent"),
                not_failures=(Defer,),
            ):  # fmt: skip
                try:
                    async with asyncio.timeout(job_type.timeout_seconds):
                        result = await job_type.handler(task.payload, ctx)
                finally:
                    handler_done()
            result = _json_value(result)
        except asyncio.CancelledError:
            raise
        except PermanentError as exc:
            RUN_SECONDS.labels(priority=p, type=task.type).observe(time.perf_counter() - t0)
            await self._dead_letter(task, _error_text(exc, task), "permanent")
            return Ack()
        except Defer as exc:
            return await self._defer(task, exc)
        except NeedsReview as exc:
            RUN_SECONDS.labels(priority=p, type=task.type).observe(time.perf_counter() - t0)
            await self._park(task, exc.reason, exc.details)
            return Ack()
        except Exception as exc:
            RUN_SECONDS.labels(priority=p, type=task.type).observe(time.perf_counter() - t0)
            if isinstance(exc, TimeoutError):
                error = f"timed out after {job_type.timeout_seconds:g}s"
            else:
                error = _error_text(exc, task)
            if task.attempts >= task.max_attempts:
                if job_type.crash_safe:
                    await self._park(task, "attempts", {"error": error})
                else:
                    await self._dead_letter(task, error, "attempts")
                return Ack()
            cls = self.settings.priority_class(delivery.priority)
            delay = job_type.backoff_seconds(cls, task.attempts, self._rng)
            retrying = await self.lifecycle.retry_later(task, error, delay)
            if retrying is None:  # superseded by a newer holder
                JOBS.labels(priority=p, type=task.type, outcome="dropped").inc()
                return Ack()
            JOBS.labels(priority=p, type=task.type, outcome="retried").inc()
            log_event(
                log,
                logging.WARNING,
                "job failed, will retry",
                task_id=task.id,
                type=task.type,
                priority=p,
                attempt=task.attempts,
                retry_in_s=round(delay, 3),
                error=error,
            )
            return RetryIn(delay)

        # One measurement for the metric and the log, taken before the (batched) write.
        run = time.perf_counter() - t0
        metrics = self._metrics(delivery.priority, task.type)
        metrics.run.observe(run)
        done = await self.lifecycle.complete(task, result)
        (metrics.completed if done is not None else metrics.dropped).inc()
        log_event(
            log,
            logging.INFO if done is not None else logging.WARNING,
            "job completed" if done is not None else "job finished but was superseded",
            task_id=task.id,
            type=task.type,
            priority=p,
            run_s=round(run, 4),
        )
        return Ack()

    async def _defer(self, task: Task, exc: Defer) -> Outcome:
        """Back to `retrying` after `exc.seconds`, this run not counted as an attempt."""
        p = task.priority.value
        reason = redact_text(str(exc), task.payload, task.redact)
        deferred = await self.lifecycle.defer(task, reason, exc.seconds)
        outcome = "deferred" if deferred is not None else "dropped"
        JOBS.labels(priority=p, type=task.type, outcome=outcome).inc()
        log_event(
            log, logging.INFO, "job deferred", task_id=task.id, type=task.type, priority=p,
            wait_s=round(exc.seconds, 3), reason=reason,
        )  # fmt: skip
        return RetryIn(exc.seconds) if deferred is not None else Ack()

    async def _park(self, task: Task, reason: str, details: dict[str, Any]) -> None:
        """Park the task this worker holds (needs_review), counted."""
        parked = await self.lifecycle.park(task, reason, details)
        outcome = "parked" if parked is not None else "dropped"
        JOBS.labels(priority=task.priority.value, type=task.type, outcome=outcome).inc()

    async def _dead_letter(self, task: Task, error: str, reason: str) -> None:
        """Dead-letter the task this worker holds (attempts used up, permanent error)."""
        await self._fail(
            task.id, task.type, task.priority, error, reason,
            expected=[TaskState.ACTIVE], version=task.version, attempts=task.attempts,
        )  # fmt: skip

    async def _fail_unclaimed(self, delivery: Delivery, error: str, reason: str) -> None:
        """Dead-letter a task no worker can run (unknown type, poison)."""
        msg = delivery.message
        await self._fail(
            msg.task_id, msg.type, delivery.priority, error, reason,
            expected=list(UNFINISHED), deliveries=delivery.deliveries,
        )  # fmt: skip

    async def _fail(
        self,
        task_id: str,
        job_type: str,
        priority: Priority,
        error: str,
        reason: str,
        *,
        expected: list[TaskState],
        version: int | None = None,
        **context: int,
    ) -> None:
        failed = await self.lifecycle.dead_letter(
            task_id, type_=job_type, priority=priority, error=error, reason=reason,
            expected=expected, version=version, **context,
        )  # fmt: skip
        # Any string may arrive as an unknown type: keep the label values bounded.
        label = UNKNOWN_TYPE_LABEL if reason == "unknown-type" else job_type
        if failed is not None:
            JOBS.labels(priority=priority.value, type=label, outcome="failed").inc()
        elif version is not None:  # a newer holder superseded this run
            JOBS.labels(priority=priority.value, type=label, outcome="dropped").inc()

    async def poison(self, delivery: Delivery) -> None:
        """A delivery handed out more than max_deliveries times: dead-letter its task.

        A crash-safe type's task is parked instead: its handler finishes or
        stops safely whatever crashed it, so the count proves nothing about the
        job, and a task that may have moved money must not end `failed`.
        """
        msg = delivery.message
        error = f"poison: delivered {delivery.deliveries} times without finishing"
        if msg.type in self.registry and self.registry.get(msg.type).crash_safe:
            parked = await self.lifecycle.park_unclaimed(
                msg.task_id, type_=msg.type, priority=delivery.priority, reason="deliveries",
                details={"deliveries": delivery.deliveries, "error": error},
            )  # fmt: skip
            if parked is not None:
                JOBS.labels(priority=delivery.priority.value, type=msg.type, outcome="parked").inc()
            return
        await self._fail_unclaimed(delivery, error, "poison")

    async def give_back(self, delivery: Delivery) -> bool:
        """Return an abandoned run's task to `retrying`, its attempt not counted."""
        task = self._running.pop(delivery.entry_id, None)
        if task is None:
            return False
        returned = await self.lifecycle.hand_back(task, "worker stopped before the job finished")
        return returned is not None


def _error_text(exc: BaseException, task: Task) -> str:
    """The failure as stored and logged, without the task's declared personal data."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact_text(text, task.payload, task.redact)[:MAX_ERROR_LENGTH]


def _json_value(value: Any) -> Any:
    """The handler's result if it is JSON, else a PermanentError: results are stored as JSON."""
    if value is None or type(value) in (str, int, bool):
        return value  # the common results, JSON as they are
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"handler returned a value that is not JSON: {exc}") from None
    return value
