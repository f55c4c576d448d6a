"""Job types the tests load into worker processes (RELAYQ_JOB_MODULES=tests.jobtypes).

Each records its runs in the `effects` collection of the task's database, so a
test can count side effects across processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pymongo.errors import DuplicateKeyError

from relayq.core.clients import mongo_for
from relayq.core.jobs import JobContext, JobType, NeedsReview, PermanentError, RateLimit
from relayq.core.priorities import Priority
from relayq.core.settings import Settings

_effects: Any = None


def configure(settings: Settings) -> None:
    """Record effects in `settings`' database (tests running workers in-process)."""
    global _effects
    _effects = mongo_for(settings)[settings.mongo_database]["effects"]


def _collection() -> Any:
    if _effects is None:
        configure(Settings.from_env())
    return _effects


async def record(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Sleeps payload.seconds, then records one run; payload.failTimes attempts fail first."""
    await _collection().insert_one(
        {"task_id": ctx.task_id, "attempt": ctx.attempt, "pid": os.getpid(), "at": time.time(),
         "phase": "start"}
    )  # fmt: skip
    await asyncio.sleep(float(payload.get("seconds", 0)))
    if ctx.attempt <= int(payload.get("failTimes", 0)):
        raise RuntimeError(f"planned failure {ctx.attempt}")
    await _collection().insert_one(
        {"task_id": ctx.task_id, "attempt": ctx.attempt, "pid": os.getpid(), "at": time.time(),
         "phase": "done"}
    )  # fmt: skip
    return {"attempt": ctx.attempt}


async def effect(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Applies one effect per task however often it runs: the chaos suite's probe.

    Every run first inserts an `executions` document (raw runs, across
    processes); payload.failTimes attempts then fail on purpose. The effect is
    inserting `applied` with `_id` = the task id: the unique `_id` lets it
    succeed once per task ("set if absent"), so a rerun after a crash finds it
    applied and changes nothing. The records live in MongoDB, not Redis, so a
    Redis failover cannot lose them.
    """
    db = _collection().database
    await db["executions"].insert_one(
        {"task_id": ctx.task_id, "attempt": ctx.attempt, "pid": os.getpid(), "at": time.time()}
    )
    if ctx.attempt <= int(payload.get("failTimes", 0)):
        raise RuntimeError(f"planned failure {ctx.attempt}")
    try:
        await db["applied"].insert_one(
            {"_id": ctx.task_id, "attempt": ctx.attempt, "pid": os.getpid(), "at": time.time()}
        )
    except DuplicateKeyError:
        return {"applied": False}
    return {"applied": True}


async def crash(payload: dict[str, Any], ctx: JobContext) -> None:
    """Kills its worker process outright: a poison job."""
    os._exit(17)


async def mail(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Stands in for a password-reset mail: records the payload it got (personal data
    and all), then fails for good (payload.outcome "permanent"), parks ("review"), or
    answers with the address it sent to."""
    await _collection().insert_one({"task_id": ctx.task_id, "phase": "mail", "payload": payload})
    to = payload["to"]
    if payload.get("outcome") == "permanent":
        raise PermanentError(f"mailbox {to} does not exist")
    if payload.get("outcome") == "review":
        raise NeedsReview("bounced", {"attempt": ctx.attempt, "bounce": f"550 {to} unknown"})
    return {"sentTo": to, "messageId": f"<{ctx.task_id}@relayq.test>"}


# The fields of `mail` that hold personal data; `payload.cc` is usually absent.
MAIL_REDACT = ("payload.to", "payload.user.email", "payload.link", "payload.cc", "result.sentTo")

JOB_TYPES = [
    JobType("record", record, Priority.HIGH, timeout_seconds=120),
    JobType(
        "limited",
        record,
        Priority.MEDIUM,
        timeout_seconds=30,
        rate_limit=RateLimit(limit=5, period_seconds=1.0),
    ),
    JobType("crash", crash, Priority.LOW, timeout_seconds=30),
    # Enough attempts and a short backoff to outlast the chaos suite's outages.
    JobType(
        "effect",
        effect,
        Priority.HIGH,
        timeout_seconds=30,
        max_attempts=20,
        backoff_base_seconds=0.2,
    ),
    JobType("mail", mail, Priority.HIGH, timeout_seconds=30, redact=MAIL_REDACT),
]
