"""What the recovery tests share: lost tasks made through the store only, and runs."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from relayq.core.clients import Clients
from relayq.core.jobs import Task, TaskState
from relayq.core.priorities import Priority
from relayq.core.settings import Settings
from relayq.core.store import NewTask, now
from relayq.dev.servers import REPO_ROOT
from relayq.recovery.settings import RecoverySettings
from relayq.recovery.sweep import Recovery, Summary
from tests.conftest import settings_env

RECOVERY = RecoverySettings(grace_seconds=30.0, mongo_timeout_seconds=1.0)


def recovery(clients: Clients, **overrides: Any) -> Recovery:
    settings: Settings = clients.settings
    return Recovery(settings, replace(RECOVERY, **overrides), clients.queue, clients.store)


async def run(clients: Clients, **overrides: Any) -> Summary:
    return await recovery(clients, **overrides).run_once()


async def insert(
    clients: Clients, type_: str = "noop", priority: Priority = Priority.HIGH, **fields: Any
) -> Task:
    """A task written by the store alone: a crash between the insert and the XADD."""
    task, created = await clients.store.insert(
        NewTask(type=type_, priority=priority, payload=fields.pop("payload", {}), max_attempts=3)
    )
    assert created
    if fields:
        await clients.store.tasks.update_one({"_id": task.id}, {"$set": fields})
    return task


async def backdate(clients: Clients, task_id: str, seconds: float) -> None:
    """Make the record look unchanged for `seconds`, past the grace period."""
    await clients.store.tasks.update_one(
        {"_id": task_id}, {"$set": {"updated_at": now() - timedelta(seconds=seconds)}}
    )


async def move(clients: Clients, task: Task, *states: TaskState, **fields: Any) -> Task:
    """Walk a task through guarded transitions, as a worker would."""
    current = task
    for state in states:
        moved = await clients.store.transition(
            current.id, [current.state], state, version=current.version, set_fields=fields
        )
        assert moved is not None
        current = moved
    return current


async def held(clients: Clients, priority: Priority) -> list[str]:
    """Task ids in a priority's stream, one per entry (duplicates show)."""
    keys = clients.queue.keys.of(priority)
    return [f["t"] for _, f in await clients.redis.xrange(keys.stream)]


async def delayed(clients: Clients, priority: Priority) -> dict[str, float]:
    keys = clients.queue.keys.of(priority)
    return {
        m.split("|")[0]: s
        for m, s in await clients.redis.zrange(keys.delayed, 0, -1, withscores=True)
    }


@dataclass
class Completed:
    """A finished `relayq recovery` process."""

    returncode: int
    stdout: str
    stderr: str

    def summary(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.stdout)
        return value


def run_process(settings: Settings, *args: str, **env: str) -> Completed:
    """`relayq recovery` as the CronJob runs it."""
    env.setdefault("RELAYQ_RECOVERY_MONGO_TIMEOUT_SECONDS", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "relayq.cli", "recovery", *args],
        env=settings_env(settings, **env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)
