"""An operator's hand on single tasks: park (needs_review), release, cancel, promote.

Each runs on the real store and Redis: the guards decide, and what Redis holds
follows the record (a cancelled job leaves the delayed set; a promoted one moves
to the stream).
"""

from __future__ import annotations

import pytest

from relayq.core.clients import Clients
from relayq.core.jobs import InvalidTaskState, Task, TaskNotFound, TaskState
from relayq.core.priorities import Priority
from relayq.core.queue import Message
from relayq.core.service import JobRequest
from relayq.core.telemetry import CANCELLED, PARKED, PROMOTED
from tests.gateway import make_dead


async def delayed_members(clients: Clients, priority: Priority) -> list[str]:
    return [
        str(m) for m in await clients.redis.zrange(clients.queue.keys.of(priority).delayed, 0, -1)
    ]


async def stream_task_ids(clients: Clients, priority: Priority) -> list[str]:
    stream = clients.queue.keys.of(priority).stream
    return [fields["t"] for _, fields in await clients.redis.xrange(stream)]


async def active(clients: Clients, type_: str = "noop") -> Task:
    sub = await clients.service.submit(JobRequest(type_, {}))
    task = await clients.service.lifecycle.start(sub.task.id, "w-1", redelivered=False)
    assert task is not None
    return task


async def parked(clients: Clients) -> Task:
    task = await clients.service.lifecycle.park(
        active_task := await active(clients), "odd", {"x": 1}
    )
    assert task is not None and active_task.id == task.id
    return task


# -- park ----------------------------------------------------------------------


async def test_park_moves_an_active_task_to_review_with_its_details(clients: Clients) -> None:
    task = await active(clients)
    before = PARKED.labels(priority=task.priority.value, reason="partly-landed")._value.get()
    parked_task = await clients.service.lifecycle.park(task, "partly-landed", {"landed": ["a"]})
    assert parked_task is not None and parked_task.state is TaskState.NEEDS_REVIEW
    assert parked_task.review is not None
    assert parked_task.review["reason"] == "partly-landed"
    assert parked_task.review["details"] == {"landed": ["a"]}
    assert parked_task.finished_at is None  # retention never deletes it
    assert not parked_task.state.finished
    after = PARKED.labels(priority=task.priority.value, reason="partly-landed")._value.get()
    assert after == before + 1
    public = parked_task.to_public()
    assert public["state"] == "needs_review" and public["review"]["reason"] == "partly-landed"


async def test_park_with_a_stale_version_changes_nothing(clients: Clients) -> None:
    task = await active(clients)
    assert await clients.service.lifecycle.complete(task, None) is not None
    assert await clients.service.lifecycle.park(task, "odd") is None
    current = await clients.store.get(task.id)
    assert current is not None and current.state is TaskState.COMPLETED


async def test_a_parked_task_is_not_claimable_by_a_worker(clients: Clients) -> None:
    task = await parked(clients)
    assert await clients.service.lifecycle.start(task.id, "w-2", redelivered=True) is None


async def test_release_review_requeues_with_a_fresh_budget_and_dispatches(
    clients: Clients,
) -> None:
    task = await parked(clients)
    released = await clients.service.release_review(task.id, "checked")
    assert released.state is TaskState.QUEUED
    assert released.max_attempts == task.attempts + task.attempt_budget
    assert task.id in await stream_task_ids(clients, task.priority)


async def test_release_review_refuses_a_task_not_in_review(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))
    with pytest.raises(InvalidTaskState) as info:
        await clients.service.release_review(sub.task.id, "x")
    assert info.value.code == "invalid-task-state"
    with pytest.raises(TaskNotFound):
        await clients.service.release_review("f" * 32, "x")


# -- cancel ----------------------------------------------------------------------


async def test_cancel_a_delayed_task_withdraws_its_job(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}, delay_seconds=600))
    priority = sub.task.priority
    assert await delayed_members(clients, priority) == [Message(sub.task.id, "noop").member]
    before = CANCELLED.labels(priority=priority.value)._value.get()
    task = await clients.service.cancel(sub.task.id, "not wanted")
    assert task.state is TaskState.CANCELLED and task.state.finished
    assert task.finished_at is not None and task.last_error == "cancelled: not wanted"
    assert await delayed_members(clients, priority) == []
    assert CANCELLED.labels(priority=priority.value)._value.get() == before + 1


async def test_a_cancelled_queued_job_is_dropped_by_the_worker_guard(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))
    await clients.service.cancel(sub.task.id, "operator")
    # The stream entry stays; the start guard refuses it, so no worker runs it.
    assert sub.task.id in await stream_task_ids(clients, sub.task.priority)
    assert await clients.service.lifecycle.start(sub.task.id, "w-1", redelivered=False) is None


async def test_cancel_a_parked_task(clients: Clients) -> None:
    task = await parked(clients)
    assert (await clients.service.cancel(task.id, "refunded by hand")).state is TaskState.CANCELLED


@pytest.mark.parametrize("state", ["active", "completed", "failed", "cancelled"])
async def test_cancel_refuses_active_and_finished_tasks(clients: Clients, state: str) -> None:
    task = await active(clients)
    if state == "completed":
        assert await clients.service.lifecycle.complete(task, None) is not None
    elif state == "failed":
        task = await make_dead(clients)
    elif state == "cancelled":
        sub = await clients.service.submit(JobRequest("noop", {}))
        task = await clients.service.cancel(sub.task.id, "first")
    with pytest.raises(InvalidTaskState) as info:
        await clients.service.cancel(task.id, "again")
    assert info.value.task.state.value == state


async def test_cancel_an_unknown_task_is_not_found(clients: Clients) -> None:
    with pytest.raises(TaskNotFound):
        await clients.service.cancel("e" * 32, "x")


# -- promote ----------------------------------------------------------------------


async def test_promote_runs_a_scheduled_task_now(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}, delay_seconds=600))
    priority = sub.task.priority
    before = PROMOTED.labels(priority=priority.value)._value.get()
    task, moved = await clients.service.promote(sub.task.id)
    assert moved is True and task.run_at is None and task.state is TaskState.QUEUED
    assert await delayed_members(clients, priority) == []
    assert await stream_task_ids(clients, priority) == [sub.task.id]
    assert PROMOTED.labels(priority=priority.value)._value.get() == before + 1
    # A worker now claims and starts it.
    claim = await clients.queue.claim(priority, "w-1", 10)
    assert [d.message.task_id for d in claim.deliveries] == [sub.task.id]
    assert await clients.service.lifecycle.start(sub.task.id, "w-1", redelivered=False) is not None


async def test_promote_a_retrying_task(clients: Clients) -> None:
    task = await active(clients)
    retrying = await clients.service.lifecycle.retry_later(task, "boom", 600)
    assert retrying is not None
    await clients.queue.schedule(task.priority, [(Message(task.id, task.type), 600)])
    promoted, moved = await clients.service.promote(task.id)
    assert moved and promoted.state is TaskState.RETRYING and promoted.run_at is None


async def test_promote_a_job_redis_no_longer_delays_reports_it(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}, delay_seconds=600))
    await clients.queue.withdraw(sub.task.priority, Message(sub.task.id, "noop"))
    task, moved = await clients.service.promote(sub.task.id)
    assert moved is False and task.run_at is None  # recovery dispatches what Redis lost


async def test_promote_refuses_a_task_that_is_not_waiting(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))  # due now, no run_at
    with pytest.raises(InvalidTaskState):
        await clients.service.promote(sub.task.id)
    with pytest.raises(TaskNotFound):
        await clients.service.promote("d" * 32)
