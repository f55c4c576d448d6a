"""Retries, backoff, dead letters and the handler outcomes a worker records."""

from __future__ import annotations

import itertools
from dataclasses import replace

from relayq.core.clients import Clients, open_clients
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.queue import Message
from relayq.core.service import JobRequest
from relayq.core.settings import Settings
from relayq.core.store import NewTask
from tests import jobtypes
from tests.conftest import InProcessWorker, wait_until


async def _state(clients: Clients, task_id: str, state: TaskState) -> bool:
    task = await clients.store.get(task_id)
    return task is not None and task.state is state


async def test_retries_follow_the_backoff_and_stop_at_the_attempt_limit(
    settings: Settings,
) -> None:
    high = replace(settings.classes[Priority.HIGH], backoff_base_seconds=0.4)
    settings = replace(settings, classes={**settings.classes, Priority.HIGH: high})
    jobtypes.configure(settings)
    async with open_clients(settings) as clients:
        sub = await clients.service.submit(
            JobRequest("record", {"failTimes": 99}, priority=Priority.HIGH)
        )
        async with InProcessWorker(clients, "high"):
            await wait_until(lambda: _state(clients, sub.task.id, TaskState.FAILED), 20)
        task = await clients.store.get(sub.task.id)
        assert task is not None
        assert task.attempts == 3 == task.max_attempts
        assert task.last_error == "RuntimeError: planned failure 3"
        starts = await (
            clients.store.client[settings.mongo_database]["effects"]
            .find({"task_id": task.id, "phase": "start"})
            .sort("attempt", 1)
            .to_list()
        )
        assert [s["attempt"] for s in starts] == [1, 2, 3]
        gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(starts)]
        # Equal jitter: retry n waits between half and all of base * 2^(n-1).
        assert 0.2 <= gaps[0] <= 0.4 + 0.5, gaps
        assert 0.4 <= gaps[1] <= 0.8 + 0.5, gaps
        page = await clients.store.dead_letters()
        assert [t.id for t in page.tasks] == [task.id]


async def test_a_dead_letter_retried_by_an_operator_runs_again_and_completes(
    clients: Clients,
) -> None:
    sub = await clients.service.submit(
        JobRequest("fail", {"times": 1}, priority=Priority.LOW)  # low: one attempt
    )
    async with InProcessWorker(clients, "low"):
        await wait_until(lambda: _state(clients, sub.task.id, TaskState.FAILED), 10)
        retried = await clients.service.retry_dead_letter(sub.task.id)
        assert retried is not None and retried.state is TaskState.QUEUED
        await wait_until(lambda: _state(clients, sub.task.id, TaskState.COMPLETED), 10)
    task = await clients.store.get(sub.task.id)
    assert task is not None and task.result == {"succeededOnAttempt": 2}
    assert await clients.service.retry_dead_letter(sub.task.id) is None  # not failed now


async def test_a_permanent_error_dead_letters_without_retrying(clients: Clients) -> None:
    sub = await clients.service.submit(
        JobRequest("fail", {"permanent": True, "message": "bad card"}, priority=Priority.CRITICAL)
    )
    async with InProcessWorker(clients, "critical"):
        await wait_until(lambda: _state(clients, sub.task.id, TaskState.FAILED), 10)
    task = await clients.store.get(sub.task.id)
    assert task is not None
    assert task.attempts == 1 and task.max_attempts == 5
    assert task.last_error == "PermanentError: bad card"


async def test_a_handler_over_its_timeout_fails_the_attempt(clients: Clients) -> None:
    from relayq.core.diagnostics import DIAGNOSTIC_TYPES
    from relayq.core.jobs import JobType, Registry

    sleep = next(t for t in DIAGNOSTIC_TYPES if t.name == "sleep")
    clients.service.registry = Registry([replace(sleep, timeout_seconds=0.2)])
    sub = await clients.service.submit(JobRequest("sleep", {"seconds": 5}, priority=Priority.LOW))
    async with InProcessWorker(clients, "low") as w:
        w.executor.registry = clients.service.registry
        await wait_until(lambda: _state(clients, sub.task.id, TaskState.FAILED), 10)
    task = await clients.store.get(sub.task.id)
    assert task is not None and task.last_error == "timed out after 0.2s"
    assert isinstance(sleep, JobType)


async def test_a_job_of_an_unknown_type_is_dead_lettered_not_retried(clients: Clients) -> None:
    # A task whose type this worker does not know (e.g. from a newer release).
    new, _ = await clients.store.insert(NewTask("vanished", Priority.MEDIUM, {}, max_attempts=3))
    await clients.queue.enqueue(Priority.MEDIUM, Message(new.id, "vanished"))
    async with InProcessWorker(clients, "medium"):
        await wait_until(lambda: _state(clients, new.id, TaskState.FAILED), 10)
    task = await clients.store.get(new.id)
    assert task is not None and task.last_error == "unknown job type 'vanished'"
    assert (await clients.queue.stats(Priority.MEDIUM)).backlog == 0


async def test_a_duplicate_delivery_of_a_finished_task_is_dropped(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("record", {}, priority=Priority.HIGH))
    async with InProcessWorker(clients, "high"):
        await wait_until(lambda: _state(clients, sub.task.id, TaskState.COMPLETED), 10)
        before = await clients.store.get(sub.task.id)
        await clients.queue.enqueue(Priority.HIGH, Message(sub.task.id, "record"))
        await wait_until(lambda: _backlog_empty(clients, Priority.HIGH), 10)
    after = await clients.store.get(sub.task.id)
    assert before is not None and after is not None
    assert after.version == before.version and after.attempts == 1
    effects = clients.store.client[clients.settings.mongo_database]["effects"]
    assert await effects.count_documents({"task_id": sub.task.id, "phase": "done"}) == 1


async def _backlog_empty(clients: Clients, priority: Priority) -> bool:
    return (await clients.queue.stats(priority)).backlog == 0


async def test_pause_stops_claiming_and_resume_restarts_it(clients: Clients) -> None:
    await clients.service.pause(Priority.MEDIUM)
    sub = await clients.service.submit(JobRequest("noop", {}, priority=Priority.MEDIUM))
    async with InProcessWorker(clients, "medium") as w:
        import asyncio

        await asyncio.sleep(1.5)
        task = await clients.store.get(sub.task.id)
        assert task is not None and task.state is TaskState.QUEUED
        stats = await clients.queue.stats(Priority.MEDIUM)
        assert stats.paused and stats.waiting == 1
        assert w.worker.counters.claimed == 0
        await clients.service.resume(Priority.MEDIUM)
        await wait_until(lambda: _state(clients, sub.task.id, TaskState.COMPLETED), 5)
