"""Recovery puts back jobs MongoDB holds and Redis lost, once each."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.queue import Message, RecoveryQueue
from relayq.core.service import JobRequest
from relayq.core.store import NewTask, now
from tests.conftest import InProcessWorker, wait_until
from tests.recovery.helpers import backdate, delayed, held, insert, move, run


async def test_a_queued_task_redis_never_got_is_dispatched_and_completes(clients: Clients) -> None:
    task = await insert(clients)  # crashed between the insert and the XADD
    await backdate(clients, task.id, 60)

    summary = await run(clients)

    assert summary.outcome == "success"
    assert summary.redispatched == {"pending": 0, "queued": 1, "retrying": 0, "active": 0}
    assert await held(clients, Priority.HIGH) == [task.id]
    async with InProcessWorker(clients, "high"):
        done = await wait_until(
            lambda: _state_is(clients, task.id, TaskState.COMPLETED), timeout=20
        )
    assert done


async def test_a_pending_task_is_queued_then_dispatched(clients: Clients) -> None:
    task = await move(clients, await insert(clients), TaskState.PENDING)  # Redis refused it
    await backdate(clients, task.id, 60)

    summary = await run(clients)

    assert summary.redispatched["pending"] == 1
    record = await clients.store.get(task.id)
    assert record is not None and record.state is TaskState.QUEUED
    assert record.version == task.version + 1
    assert await held(clients, Priority.HIGH) == [task.id]


async def test_records_younger_than_the_grace_period_are_left_alone(clients: Clients) -> None:
    fresh = await insert(clients)  # a submission may still be between its two writes
    await move(clients, await insert(clients), TaskState.PENDING)

    summary = await run(clients)

    assert summary.candidates == 0 and summary.redispatched_total == 0
    assert await held(clients, Priority.HIGH) == []
    record = await clients.store.get(fresh.id)
    assert record is not None and record.state is TaskState.QUEUED


async def test_a_due_retry_lost_from_the_delayed_set_is_made_ready(clients: Clients) -> None:
    task = await move(
        clients, await insert(clients), TaskState.ACTIVE, TaskState.RETRYING,
        run_at=now() - timedelta(seconds=5),
    )  # fmt: skip
    await backdate(clients, task.id, 60)

    summary = await run(clients)

    assert summary.redispatched["retrying"] == 1
    assert await held(clients, Priority.HIGH) == [task.id]
    assert await delayed(clients, Priority.HIGH) == {}


async def test_a_retry_not_yet_due_goes_back_to_the_delayed_set_at_its_time(
    clients: Clients,
) -> None:
    due = now() + timedelta(seconds=600)
    task = await move(
        clients, await insert(clients), TaskState.ACTIVE, TaskState.RETRYING, run_at=due
    )
    scheduled = await insert(clients, priority=Priority.LOW, run_at=due)  # a delayed job
    for t in (task, scheduled):
        await backdate(clients, t.id, 60)

    summary = await run(clients)

    assert summary.redispatched == {"pending": 0, "queued": 1, "retrying": 1, "active": 0}
    assert await held(clients, Priority.HIGH) == []
    for priority, t in ((Priority.HIGH, task), (Priority.LOW, scheduled)):
        score = (await delayed(clients, priority))[t.id]
        assert abs(score / 1000 - due.timestamp()) < 5


async def test_a_task_redis_holds_is_not_dispatched_again(clients: Clients) -> None:
    submitted = await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    claimed = await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    later = await clients.service.submit(
        JobRequest("noop", {}, priority=Priority.HIGH, delay_seconds=600)
    )
    await clients.queue.claim(Priority.HIGH, "busy-worker", 1)  # in flight: the pending list
    for s in (submitted, claimed, later):
        await backdate(clients, s.task.id, 60)

    summary = await run(clients)

    assert summary.candidates == 0 and summary.redispatched_total == 0
    assert sorted(await held(clients, Priority.HIGH)) == sorted(
        [submitted.task.id, claimed.task.id]
    )
    assert list(await delayed(clients, Priority.HIGH)) == [later.task.id]
    assert (await run(clients)).redispatched_total == 0


async def test_the_atomic_check_skips_a_job_added_after_the_scan(clients: Clients) -> None:
    """The race with a concurrent submit: absent at the scan, present at the add."""
    recovery_queue = RecoveryQueue(clients.queue)
    await clients.queue.ensure_group(Priority.HIGH)
    found = await recovery_queue.presence(Priority.HIGH)
    late = await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    parked = await clients.service.submit(
        JobRequest("noop", {}, priority=Priority.HIGH, delay_seconds=600)
    )
    lost = await insert(clients)
    assert late.task.id not in found.task_ids

    added = await recovery_queue.redispatch(
        Priority.HIGH,
        found.since_id,
        [(Message(t, "noop"), -1) for t in (late.task.id, parked.task.id, lost.id, lost.id)],
    )

    assert added == {lost.id}
    assert sorted(await held(clients, Priority.HIGH)) == sorted([late.task.id, lost.id])


async def test_two_runs_racing_without_the_lock_dispatch_each_task_once(clients: Clients) -> None:
    tasks = [await insert(clients) for _ in range(40)]
    for t in tasks:
        await backdate(clients, t.id, 60)
    a = await run(clients)
    # A second run that found the same tasks missing (its scan came before the
    # first run's adds) must still add none: its view starts before them.
    b = await RecoveryQueue(clients.queue).redispatch(
        Priority.HIGH, "0-0", [(Message(t.id, t.type), -1) for t in tasks]
    )
    assert a.redispatched["queued"] == 40
    assert b == set()
    ids = await held(clients, Priority.HIGH)
    assert sorted(ids) == sorted(t.id for t in tasks)


async def test_many_lost_tasks_are_dispatched_in_batches_exactly_once(clients: Clients) -> None:
    news = [NewTask("noop", Priority.BATCH, {}, max_attempts=1) for _ in range(1200)]
    tasks = [t for t, _ in await clients.store.insert_many(news)]
    # Grace 0: the fresh records count as lost at once, with no need to backdate them.
    first, second = await asyncio.gather(
        run(clients, grace_seconds=0), run(clients, grace_seconds=0)
    )

    outcomes = sorted([first.outcome, second.outcome])
    assert outcomes in (["skipped", "success"], ["success", "success"])
    assert first.redispatched_total + second.redispatched_total == 1200
    ids = await held(clients, Priority.BATCH)
    assert len(ids) == 1200 and set(ids) == {t.id for t in tasks}


async def _state_is(clients: Clients, task_id: str, state: TaskState) -> bool:
    task = await clients.store.get(task_id)
    return task is not None and task.state is state


async def test_a_run_dispatches_at_most_max_tasks_and_the_next_run_goes_on(
    clients: Clients,
) -> None:
    present = await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    lost = [await insert(clients) for _ in range(5)]
    for t in (present.task, *lost):
        await backdate(clients, t.id, 60)

    counts = [(await run(clients, max_tasks=2)).redispatched_total for _ in range(4)]

    assert counts == [2, 2, 1, 0]
    assert sorted(await held(clients, Priority.HIGH)) == sorted(
        [present.task.id, *(t.id for t in lost)]
    )
