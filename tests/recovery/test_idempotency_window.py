"""Replays after retention: a finished task with an idempotency key leaves a tombstone.

Retention strips a keyed task's payload and result once it is past retention,
but keeps its id, owner, key, request hash and final state under the same unique
index until the idempotency window ends: a replay in between returns the
original task, never a second one. Tasks without a key are deleted at retention.
"""

from __future__ import annotations

from datetime import timedelta

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.service import JobRequest
from relayq.core.store import now
from tests.recovery.helpers import move, run

DAY = 24 * 3600.0


async def finished(clients: Clients, key: str | None, days_ago: float) -> str:
    sub = await clients.service.submit(
        JobRequest("noop", {"order": key or "none"}, idempotency_key=key, client="client-a")
    )
    done = await move(clients, sub.task, TaskState.ACTIVE, TaskState.COMPLETED, result={"ok": 1})
    await clients.store.tasks.update_one(
        {"_id": done.id}, {"$set": {"finished_at": now() - timedelta(days=days_ago)}}
    )
    return done.id


async def test_a_replay_after_retention_returns_the_original_task(clients: Clients) -> None:
    original = await finished(clients, "order-1", days_ago=8)

    await run(clients, retention_seconds=7 * DAY, idempotency_window_seconds=30 * DAY)
    again = await clients.service.submit(
        JobRequest("noop", {"order": "order-1"}, idempotency_key="order-1", client="client-a")
    )

    assert (again.task.id, again.created) == (original, False)
    assert await clients.store.tasks.count_documents({}) == 1


async def test_the_tombstone_keeps_the_key_and_state_but_not_the_payload(
    clients: Clients,
) -> None:
    original = await finished(clients, "order-2", days_ago=8)

    summary = await run(clients, retention_seconds=7 * DAY, idempotency_window_seconds=30 * DAY)

    tomb = await clients.store.get(original)
    assert tomb is not None
    assert tomb.state is TaskState.COMPLETED and tomb.owner == "client-a"
    assert tomb.payload == {} and tomb.result is None
    assert tomb.idempotency_key == "client-a:order-2" and tomb.payload_hash
    assert summary.retention is not None and summary.retention.stripped == 1


async def test_tasks_without_a_key_go_at_retention_and_tombstones_at_the_window(
    clients: Clients,
) -> None:
    unkeyed = await finished(clients, None, days_ago=8)
    recent_tomb = await finished(clients, "order-3", days_ago=20)
    old_tomb = await finished(clients, "order-4", days_ago=31)

    summary = await run(
        clients, retention_seconds=7 * DAY, idempotency_window_seconds=30 * DAY, ttl_index=False
    )

    left = {d["_id"] for d in await clients.store.tasks.find({}, {"_id": 1}).to_list()}
    assert left == {recent_tomb}
    assert unkeyed not in left and old_tomb not in left
    assert summary.retention is not None and summary.retention.deleted == 2


async def test_a_window_shorter_than_retention_is_raised_to_it(clients: Clients) -> None:
    kept = await finished(clients, "order-5", days_ago=8)

    await run(clients, retention_seconds=10 * DAY, idempotency_window_seconds=1 * DAY)

    task = await clients.store.get(kept)
    assert task is not None and task.payload == {"order": "order-5"}  # within retention
