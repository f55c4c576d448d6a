"""Reading and checking request bodies, path and query parameters."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from relayq.api.keys import REQUEST_ID
from relayq.api.problems import Problem
from relayq.core.ids import is_task_id
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.store import MAX_PAGE
from relayq.core.tracing import current_traceparent

JOB_FIELDS = {"type", "payload", "priority", "runAt", "delaySeconds", "maxAttempts"}
TRACEPARENT_LENGTH = 55


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or 413/415/400/422."""
    if request.content_type != "application/json":
        raise Problem(415, "unsupported-media-type", "send the body as application/json")
    raw = await request.read()  # bounded by the app's client_max_size: 413 above it
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, "invalid-json", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Problem(422, "invalid-body", "the body must be a JSON object")
    return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _invalid(field: str, message: str) -> Problem:
    return Problem(422, "invalid-body", f"{field}: {message}", field=field)


def job_request(
    body: dict[str, Any], idempotency_key: str | None, client: str, trace: dict[str, str]
) -> JobRequest:
    """A JobRequest from a POST /v1/jobs body; 422 naming the field otherwise."""
    unknown = sorted(set(body) - JOB_FIELDS)
    if unknown:
        raise _invalid(unknown[0], "unknown field")
    job_type = body.get("type")
    if not isinstance(job_type, str) or not job_type:
        raise _invalid("type", "required, a non-empty string")
    payload = body.get("payload", {})
    if not isinstance(payload, dict):
        raise _invalid("payload", "must be a JSON object")
    priority = None
    if body.get("priority") is not None:
        if not isinstance(body["priority"], str):
            raise _invalid("priority", "must be a string")
        priority = parse_priority(body["priority"], field="priority")
    run_at = None
    if body.get("runAt") is not None:
        run_at = _datetime(body["runAt"])
    delay = None
    if body.get("delaySeconds") is not None:
        delay = body["delaySeconds"]
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not math.isfinite(delay)
        ):
            raise _invalid("delaySeconds", "must be a number")
    max_attempts = None
    if body.get("maxAttempts") is not None:
        max_attempts = body["maxAttempts"]
        if isinstance(max_attempts, float) and max_attempts.is_integer():
            max_attempts = int(max_attempts)  # JSON Schema counts 3.0 as an integer
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise _invalid("maxAttempts", "must be an integer")
    return JobRequest(
        type=job_type,
        payload=payload,
        priority=priority,
        delay_seconds=float(delay) if delay is not None else None,
        run_at=run_at,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
        idempotency_scope=client,
        trace=trace,
    )


def _datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _invalid("runAt", "must be an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value.upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        raise _invalid("runAt", "must be an RFC 3339 date-time string") from None
    if parsed.tzinfo is None:
        raise _invalid("runAt", "needs a time zone offset (e.g. Z)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise Problem(422, "invalid-payload", "runAt is out of range", field="runAt") from None


def parse_priority(value: str, *, field: str) -> Priority:
    try:
        return Priority.parse(value)
    except ValueError as exc:
        raise Problem(422, "invalid-priority", str(exc), field=field) from None


def task_id(request: web.Request) -> str:
    value = request.match_info["task_id"]
    if not is_task_id(value):
        raise Problem(400, "invalid-task-id", "a task id is 32 lowercase hex characters")
    return value


def page_query(request: web.Request) -> dict[str, Any]:
    """limit, cursor and type from the query string, checked."""
    q = request.query
    out: dict[str, Any] = {"limit": 50, "cursor": None, "type_": None}
    if "limit" in q:
        try:
            out["limit"] = int(q["limit"])
        except ValueError:
            raise Problem(400, "invalid-query", "limit must be an integer", field="limit") from None
        if not 1 <= out["limit"] <= MAX_PAGE:
            raise Problem(400, "invalid-query", f"limit must be 1..{MAX_PAGE}", field="limit")
    if "cursor" in q:
        if not is_task_id(q["cursor"]):
            raise Problem(400, "invalid-query", "cursor is not one this API gave", field="cursor")
        out["cursor"] = q["cursor"]
    if "type" in q:
        out["type_"] = q["type"]
    return out


def task_state(request: web.Request) -> TaskState | None:
    if "state" not in request.query:
        return None
    try:
        return TaskState(request.query["state"])
    except ValueError:
        states = ", ".join(s.value for s in TaskState)
        raise Problem(
            400, "invalid-query", f"state must be one of {states}", field="state"
        ) from None


def trace_of(request: web.Request) -> dict[str, str]:
    """What travels into the job: the request id and a W3C traceparent, if valid."""
    trace = {"requestId": request[REQUEST_ID]}
    # With tracing on, the job's parent is this request's span (itself a child
    # of the caller's traceparent); off, the caller's traceparent as sent.
    parent = current_traceparent() or request.headers.get("traceparent", "").strip().lower()
    if len(parent) == TRACEPARENT_LENGTH and parent.count("-") == 3:
        trace["traceparent"] = parent
    return trace
