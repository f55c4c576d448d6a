"""Request and response models of the gateway's own routes (relayq.api.contract).

Requests are checked against these before a handler runs; responses are
described by them in the OpenAPI document, and the schema tests hold the
handlers' answers to them. Job modules declare the models of their routes
beside those routes (relayq.relayer.routes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

from relayq.core.ids import TASK_ID_PATTERN
from relayq.core.jobs import JOB_TYPE_MAX_LENGTH, TaskState
from relayq.core.owners import CLIENT_ID
from relayq.core.priorities import Priority
from relayq.core.service import MAX_DELAY_SECONDS
from relayq.core.store import MAX_PAGE

MAX_ATTEMPTS = 100
TASK_ID = f"^{TASK_ID_PATTERN.pattern}$"


class Request(BaseModel):
    """A request model: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """A response model: every field is in every answer (nullable where it says so)."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


# -- field types ----------------------------------------------------------------


def _priority(value: Any) -> Any:
    # A string names a priority (ValueError, naming the choices, if it names
    # none: invalid-priority); any other type is left to fail as the wrong type.
    return Priority.parse(value) if isinstance(value, str) else value


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "must be an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value.upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        raise PydanticCustomError(
            "datetime_parsing", "must be an RFC 3339 date-time string"
        ) from None
    if parsed.tzinfo is None:
        raise PydanticCustomError("datetime_parsing", "needs a time zone offset (e.g. Z)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None


def _integral(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; booleans stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


PriorityName = Annotated[Priority, BeforeValidator(_priority)]
Timestamp = Annotated[datetime, BeforeValidator(_rfc3339)]
TaskId = Annotated[str, Field(pattern=TASK_ID)]
Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Strict(), Field(ge=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False)]
Attempts = Annotated[int, BeforeValidator(_integral), Strict(), Field(ge=1, le=MAX_ATTEMPTS)]


# -- requests -------------------------------------------------------------------


class JobRequest(Request):
    """A job to run. `runAt` and `delaySeconds` exclude each other."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"not": {"required": ["runAt", "delaySeconds"]}}
    )

    type: Annotated[
        str,
        Strict(),
        Field(min_length=1, max_length=JOB_TYPE_MAX_LENGTH, description="A registered job type."),
    ]
    payload: Annotated[
        dict[str, Any],
        Strict(),
        Field(description="The handler's input; the job type may refuse it."),
    ] = {}
    priority: Annotated[PriorityName | None, Field(description="Default: the type's.")] = None
    runAt: Annotated[
        Timestamp | None, Field(description="Earliest start, RFC 3339 with an offset.")
    ] = None
    delaySeconds: Annotated[
        Seconds | None, Field(description="Earliest start from now; not together with runAt.")
    ] = None
    maxAttempts: Annotated[
        Attempts | None, Field(description="Default: the type's or the class's.")
    ] = None


class PageQuery(BaseModel):
    """A listing of tasks: a type filter and a page."""

    type: Annotated[
        str | None,
        Field(min_length=1, max_length=JOB_TYPE_MAX_LENGTH, description="Only this job type."),
    ] = None
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE, description=f"Page size, 1..{MAX_PAGE}.")] = 50
    cursor: Annotated[
        str | None, Field(pattern=TASK_ID, description="The previous page's `nextCursor`.")
    ] = None


class TaskListQuery(PageQuery):
    """GET /v1/tasks: a page, of one state too."""

    state: Annotated[TaskState | None, Field(description="Only tasks in this state.")] = None


class AdminTaskQuery(TaskListQuery):
    """GET /v1/admin/tasks: every client's tasks, or one client's."""

    client: Annotated[
        str | None,
        Field(pattern=f"^{CLIENT_ID.pattern}$", description="Only this client's tasks."),
    ] = None


class TypeQuery(BaseModel):
    type: Annotated[
        str | None,
        Field(min_length=1, max_length=JOB_TYPE_MAX_LENGTH, description="Only this job type."),
    ] = None


class Reason(Request):
    """Why an operator acts on a task; recorded on it and logged."""

    reason: Annotated[str, Strict(), Field(min_length=1, max_length=500)]


# -- answers --------------------------------------------------------------------


class TaskAccepted(Answer):
    taskId: TaskId
    status: Annotated[
        Literal["queued", "pending"],
        Field(description="`pending`: recorded, dispatched once Redis is back."),
    ]
    priority: Priority


class Review(Answer):
    reason: Annotated[str, Field(description="The job module's label for what it found.")]
    details: Annotated[dict[str, Any], Field(description="What the operator needs to decide.")]
    parkedAt: str


class Task(Answer):
    """A task's status. Job modules may add their own view of it (a purchase's `purchase`)."""

    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=True)

    taskId: TaskId
    type: Annotated[str, Field(description="The job type.")]
    priority: Priority
    state: Annotated[
        TaskState,
        Field(
            description=(
                "`failed`: a dead letter; `needs_review`: parked for an operator; "
                "`cancelled`: withdrawn by an operator."
            )
        ),
    ]
    attempts: Annotated[Count, Field(description="Runs started so far.")]
    maxAttempts: Annotated[
        int, Field(ge=1, description="Runs allowed; grows when a dead letter is retried.")
    ]
    lastError: Annotated[str | None, Field(description="The most recent failure.")]
    result: Annotated[Any, Field(description="What the handler returned (any JSON value).")]
    payload: Annotated[dict[str, Any], Field(description="The handler's input.")]
    createdAt: datetime
    queuedAt: datetime | None
    startedAt: Annotated[datetime | None, Field(description="Latest run's start.")]
    finishedAt: datetime | None
    runAt: Annotated[datetime | None, Field(description="Earliest start, if delayed.")]
    review: Annotated[Review | None, Field(description="Why it was parked, if it was.")]
    client: Annotated[
        str | None,
        Field(description="The client it belongs to; null for relayq's own and operators' tasks."),
    ]


class TaskPage(Answer):
    tasks: Annotated[list[Task], Field(max_length=MAX_PAGE)]
    nextCursor: Annotated[
        str | None,
        Field(pattern=TASK_ID, description="Pass as `cursor` for the next page; null on the last."),
    ]


class Promoted(Answer):
    taskId: TaskId
    state: TaskState
    moved: Annotated[
        bool,
        Field(description="The job left the delayed set now; false: it was already due."),
    ]


class Queue(Answer):
    priority: Priority
    waiting: Count
    active: Count
    delayed: Count
    dead: Count
    paused: bool
    backlog: Count
    oldestWaitingAgeSeconds: Annotated[float, Field(ge=0)]


class Queues(Answer):
    queues: Annotated[
        list[Queue],
        Field(
            min_length=len(Priority),
            max_length=len(Priority),
            description="All five, in priority order.",
        ),
    ]


class QueueState(Answer):
    priority: Priority
    paused: bool


class Retried(Answer):
    retried: Annotated[int, Field(ge=0, le=1000)]


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    status: Literal["ready", "unready"]
    redis: Literal["ok", "unreachable"]
    mongo: Literal["ok", "unreachable"]
    indexes: Annotated[
        Literal["ok", "pending"],
        Field(description="The task indexes, the unique idempotency index among them."),
    ]
