"""The task model, its states, and the registry of job types."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from relayq.core import redaction
from relayq.core.priorities import Priority, PriorityClass

if TYPE_CHECKING:
    from relayq.core.modules import ProcessContext

MAX_PAYLOAD_BYTES = 256 * 1024
JOB_TYPE_MAX_LENGTH = 64


class TaskState(StrEnum):
    """Where a task is in its life; see ARCHITECTURE.md, "Task states"."""

    PENDING = "pending"  # record written, not yet dispatched
    QUEUED = "queued"  # in the Redis stream or due there at run_at
    ACTIVE = "active"  # a worker holds it
    RETRYING = "retrying"  # failed an attempt, waiting out its backoff
    COMPLETED = "completed"
    FAILED = "failed"  # attempts exhausted or poison: dead-lettered
    CANCELLED = "cancelled"  # an operator withdrew it before it ran
    # Parked: a job found something no rule may decide alone (a swap that partly
    # landed, say); nothing runs it until an operator retries or cancels it.
    NEEDS_REVIEW = "needs_review"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


# States from which a worker may take a task. ACTIVE is allowed only for a
# redelivery: the previous holder's lease expired, so it is presumed dead.
CLAIMABLE_STATES = (TaskState.PENDING, TaskState.QUEUED, TaskState.RETRYING)
# Final states: retention deletes these once they are old enough.
FINISHED_STATES = (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)


class JobError(Exception):
    """Base of the errors relayq raises about jobs; `code` is machine-readable."""

    code = "job-error"


class UnknownJobType(JobError):
    code = "unknown-job-type"


class TaskNotFound(JobError):
    code = "task-not-found"


class InvalidTaskState(JobError):
    """The task is in a state the operation does not apply to (cancel a completed task)."""

    code = "invalid-task-state"

    def __init__(self, task: Task, operation: str) -> None:
        super().__init__(f"cannot {operation} a task that is {task.state.value}")
        self.task = task


class InvalidPayload(JobError):
    code = "invalid-payload"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Defer(Exception):
    """Raised by a handler waiting on something outside relayq (a transaction to confirm).

    The task goes back to `retrying`, due after `seconds`, and the run does not
    count as an attempt. The handler must know the wait ends (a blockhash expires).
    """

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds


class PermanentError(Exception):
    """Raised by a handler for a failure that retrying cannot fix: dead-letter now."""


class NeedsReview(Exception):
    """Raised by a handler that found what no rule may decide alone: park the task.

    The task goes to `needs_review` (Lifecycle.park) and nothing runs it until an
    operator releases or cancels it. `reason` is a short label from a fixed set
    (it labels a metric); `details` is what the operator needs to decide.
    """

    def __init__(self, reason: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = dict(details or {})


@dataclass
class Task:
    """The record of one job, as MongoDB holds it.

    Attributes:
        id: 32 hex characters, time-ordered (relayq.core.ids).
        type: the job type's registered name.
        priority: the class whose queue dispatches it.
        payload: the handler's input, a JSON object.
        state: see TaskState.
        version: bumped by every transition; guards against stale writers.
        attempts: runs started so far.
        max_attempts: runs allowed before dead-lettering; grows when a dead letter is retried.
        attempt_budget: runs allowed per round (the original max_attempts).
        idempotency_key: the client's key; a replay returns this task.
        payload_hash: digest of type, priority and payload, to tell a replay from a conflict.
        created_at, queued_at, started_at, finished_at: timestamps (UTC).
        run_at: earliest start for a delayed job or a retry.
        last_error: message of the most recent failure.
        result: what the handler returned, a JSON value.
        worker: consumer name of the worker that last held it.
        trace: request id and trace context carried from the producer.
        review: why the task was parked (needs_review): {"reason", "details", "parkedAt"}.
        owner: the API client it belongs to; None for relayq's own and operators' tasks.
        crash_safe: its job type is crash-safe (JobType.crash_safe): parked, never
            dead-lettered, past a limit.
        redact: its job type's redacted fields (JobType.redact), shown redacted in
            every view (relayq.core.redaction).
    """

    id: str
    type: str
    priority: Priority
    payload: dict[str, Any]
    state: TaskState
    version: int
    attempts: int
    max_attempts: int
    attempt_budget: int
    idempotency_key: str | None
    payload_hash: str
    created_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    run_at: datetime | None = None
    last_error: str | None = None
    result: Any = None
    worker: str | None = None
    trace: dict[str, str] = field(default_factory=dict)
    review: dict[str, Any] | None = None
    owner: str | None = None
    crash_safe: bool = False
    redact: tuple[str, ...] = ()

    def to_public(self) -> dict[str, Any]:
        """A JSON-ready view for the CLI, the API and anything built on them.

        The one way a task is shown: its job type's declared fields come out
        redacted (relayq.core.redaction).
        """

        def ts(value: datetime | None) -> str | None:
            return value.isoformat().replace("+00:00", "Z") if value else None

        return {
            "taskId": self.id,
            "type": self.type,
            "priority": self.priority.value,
            "state": self.state.value,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "lastError": self.last_error
            and redaction.redact_text(self.last_error, self.payload, self.redact),
            "result": redaction.redact(self.result, self.redact, "result"),
            "payload": redaction.redact(self.payload, self.redact, "payload"),
            "createdAt": ts(self.created_at),
            "queuedAt": ts(self.queued_at),
            "startedAt": ts(self.started_at),
            "finishedAt": ts(self.finished_at),
            "runAt": ts(self.run_at),
            "review": self.review
            and redaction.redact_texts(self.review, self.payload, self.redact),
            "client": self.owner,
        }


@dataclass
class JobContext:
    """What a handler receives besides its payload.

    Attributes:
        task_id: the task being run.
        attempt: 1 for the first run.
        priority: the class it runs under.
        log: a logger whose records carry the task id.
        trace: request id and trace context from the producer.
        process: what the job modules' startup hooks opened in this process
            (relayq.core.modules); None where no hooks ran.
    """

    task_id: str
    attempt: int
    priority: Priority
    log: logging.LoggerAdapter[logging.Logger]
    trace: dict[str, str] = field(default_factory=dict)
    process: ProcessContext | None = None


Handler = Callable[[dict[str, Any], JobContext], Awaitable[Any]]
PayloadValidator = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class RateLimit:
    """`limit` starts per `period_seconds` across every worker process.

    Starts are spaced `period_seconds / limit` apart; `burst` of them may go at
    once after a quiet spell (1, the default, never exceeds `limit` + 1 in any
    window of one period).
    """

    limit: int
    period_seconds: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period_seconds <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs limit >= 1, period_seconds > 0 and burst >= 1")


@dataclass(frozen=True)
class JobType:
    """A registered kind of job.

    Attributes:
        name: what clients put in `type`.
        handler: the coroutine that does the work.
        default_priority: used when the producer names none.
        timeout_seconds: a run longer than this fails the attempt.
        max_attempts: overrides the priority class's attempts when set.
        backoff_base_seconds: overrides the class's backoff base when set.
        rate_limit: shared start rate limit, or None.
        validate: checks and normalises a payload; raises InvalidPayload.
        description: one line for listings.
        internal: created by relayq itself (the relayer's steps); clients cannot submit it.
        crash_safe: the handler is safe to run again after any crash, by its own protocol
            (it moves money exactly once): delivery counts are no evidence of poison for
            it, so past the delivery or attempt limit its task is parked for review
            (`needs_review`) instead of dead-lettered. A PermanentError still dead-letters.
        redact: fields that may hold personal data (a mail address, a reset link), as
            dotted paths rooted at `payload` or `result` (`payload.to`,
            `payload.user.email`, `result.link`). Every view and listing shows them
            redacted, error messages lose their values, and the stored record loses
            them once the task is finished for good (relayq.core.redaction). The
            handler gets the payload as submitted.
    """

    name: str
    handler: Handler
    default_priority: Priority = Priority.MEDIUM
    timeout_seconds: float = 60.0
    max_attempts: int | None = None
    backoff_base_seconds: float | None = None
    rate_limit: RateLimit | None = None
    validate: PayloadValidator | None = None
    description: str = ""
    internal: bool = False
    crash_safe: bool = False
    redact: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        redaction.check_paths(self.redact)

    def attempts_under(self, cls: PriorityClass) -> int:
        return self.max_attempts if self.max_attempts is not None else cls.max_attempts

    def backoff_seconds(self, cls: PriorityClass, attempt: int, rng: random.Random) -> float:
        """Delay before retry number `attempt` (1-based): exponential, capped, equal jitter."""
        base = self.backoff_base_seconds or cls.backoff_base_seconds
        delay = min(cls.backoff_max_seconds, base * 2.0 ** max(0, attempt - 1))
        return delay / 2 + rng.uniform(0, delay / 2)


MAX_PAYLOAD_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _check_storable(value: object, path: str, depth: int) -> None:
    """Refuse what a MongoDB document cannot hold, before anything is written.

    Field names must not start with "$", contain "." or NUL; integers must fit
    in 64 bits; nesting is bounded.
    """
    if depth > MAX_PAYLOAD_DEPTH:
        raise InvalidPayload(f"nested deeper than {MAX_PAYLOAD_DEPTH} levels", field=path)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$") or "." in key or "\x00" in key:
                raise InvalidPayload(
                    f"field name {key!r} may not start with '$' or hold '.' or NUL", field=path
                )
            _check_storable(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_storable(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise InvalidPayload("strings may not hold NUL characters", field=path)
    elif (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not INT64_MIN <= value <= INT64_MAX
    ):
        raise InvalidPayload("integers must fit in 64 bits", field=path)


class Registry:
    """Job types by name. Producers validate against it; workers dispatch through it."""

    def __init__(self, types: Iterable[JobType] = ()) -> None:
        self._types: dict[str, JobType] = {}
        for job_type in types:
            self.add(job_type)

    def add(self, job_type: JobType) -> None:
        if not job_type.name or len(job_type.name) > JOB_TYPE_MAX_LENGTH:
            raise ValueError(f"bad job type name {job_type.name!r}")
        if job_type.name in self._types:
            raise ValueError(f"job type {job_type.name!r} is registered twice")
        self._types[job_type.name] = job_type

    def get(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobType(f"unknown job type {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def names(self) -> list[str]:
        return sorted(self._types)

    def all(self) -> list[JobType]:
        return [self._types[n] for n in self.names()]

    def check_payload(self, name: str, payload: object) -> dict[str, Any]:
        """The validated payload for a job of type `name`, or UnknownJobType/InvalidPayload."""
        job_type = self.get(name)
        if not isinstance(payload, Mapping):
            raise InvalidPayload("payload must be a JSON object", field="payload")
        try:
            size = len(json.dumps(payload, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidPayload(f"payload is not JSON: {exc}", field="payload") from None
        if size > MAX_PAYLOAD_BYTES:
            raise InvalidPayload(
                f"payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}", field="payload"
            )
        _check_storable(payload, "payload", 0)
        checked = dict(payload)
        if job_type.validate is not None:
            checked = job_type.validate(checked)
        return checked
