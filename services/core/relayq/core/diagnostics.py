"""Job types an operator can use to smoke-test a deployment: noop, sleep, fail."""

from __future__ import annotations

import asyncio
from typing import Any

from relayq.core.jobs import InvalidPayload, JobContext, JobType, PermanentError
from relayq.core.priorities import Priority

MAX_SLEEP_SECONDS = 3600.0


async def noop(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"ok": True}


def _check_sleep(payload: dict[str, Any]) -> dict[str, Any]:
    seconds = payload.get("seconds", 1.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidPayload("seconds must be a number", field="payload.seconds")
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise InvalidPayload(
            f"seconds must be between 0 and {MAX_SLEEP_SECONDS:g}", field="payload.seconds"
        )
    return {**payload, "seconds": float(seconds)}


async def sleep(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    await asyncio.sleep(float(payload["seconds"]))
    return {"slept": payload["seconds"]}


def _check_fail(payload: dict[str, Any]) -> dict[str, Any]:
    times = payload.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        raise InvalidPayload("times must be a non-negative integer", field="payload.times")
    if not isinstance(payload.get("permanent", False), bool):
        raise InvalidPayload("permanent must be a boolean", field="payload.permanent")
    if not isinstance(payload.get("message", ""), str):
        raise InvalidPayload("message must be a string", field="payload.message")
    return payload


async def fail(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Fails its first `times` attempts (every attempt when absent), then succeeds."""
    times = payload.get("times")
    if times is not None and ctx.attempt > times:
        return {"succeededOnAttempt": ctx.attempt}
    message = payload.get("message") or f"diagnostic failure on attempt {ctx.attempt}"
    if payload.get("permanent", False):
        raise PermanentError(message)
    raise RuntimeError(message)


DIAGNOSTIC_TYPES = [
    JobType("noop", noop, Priority.MEDIUM, timeout_seconds=10, description="Does nothing."),
    JobType(
        "sleep",
        sleep,
        Priority.MEDIUM,
        timeout_seconds=MAX_SLEEP_SECONDS + 60,
        validate=_check_sleep,
        description="Sleeps payload.seconds (default 1).",
    ),
    JobType(
        "fail",
        fail,
        Priority.MEDIUM,
        timeout_seconds=10,
        validate=_check_fail,
        description="Fails its first payload.times attempts (all when absent).",
    ),
]
