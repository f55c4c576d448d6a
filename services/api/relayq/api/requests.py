"""What a handler reads from a request beyond its checked body and query:
path parameters, the Idempotency-Key header, the trace to carry into a job."""

from __future__ import annotations

from aiohttp import web

from relayq.api.keys import REQUEST_ID
from relayq.api.problems import Problem
from relayq.core.api_keys import is_key_id
from relayq.core.ids import is_task_id
from relayq.core.owners import IDEMPOTENCY_KEY_MAX_LENGTH, is_idempotency_key
from relayq.core.priorities import Priority
from relayq.core.tracing import current_traceparent

TRACEPARENT_LENGTH = 55


def parse_priority(value: str, *, field: str) -> Priority:
    try:
        return Priority.parse(value)
    except ValueError as exc:
        raise Problem(422, "invalid-priority", str(exc), field=field) from None


def priority(request: web.Request) -> Priority:
    return parse_priority(request.match_info["priority"], field="priority")


def task_id(request: web.Request) -> str:
    value = request.match_info["taskId"]
    if not is_task_id(value):
        raise Problem(400, "invalid-task-id", "a task id is 32 lowercase hex characters")
    return value


def key_id(request: web.Request) -> str:
    value = request.match_info["keyId"]
    if not is_key_id(value):
        raise Problem(400, "invalid-key-id", "a key id is `key_` and 28 lowercase hex characters")
    return value


def idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header, or None; 422 unless it is 1 to 255 printable ASCII."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not is_idempotency_key(key):
        raise Problem(
            422,
            "invalid-payload",
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters",
            field="Idempotency-Key",
        )
    return key


def trace_of(request: web.Request) -> dict[str, str]:
    """What travels into the job: the request id and a W3C traceparent, if valid."""
    trace = {"requestId": request[REQUEST_ID]}
    # With tracing on, the job's parent is this request's span (itself a child
    # of the caller's traceparent); off, the caller's traceparent as sent.
    parent = current_traceparent() or request.headers.get("traceparent", "").strip().lower()
    if len(parent) == TRACEPARENT_LENGTH and parent.count("-") == 3:
        trace["traceparent"] = parent
    return trace
