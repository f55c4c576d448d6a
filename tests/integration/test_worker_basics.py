from __future__ import annotations

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.service import JobRequest
from tests.conftest import InProcessWorker, wait_until


async def test_noop_job_runs_to_completion(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))
    assert sub.task.state is TaskState.QUEUED
    async with InProcessWorker(clients, "medium"):

        async def done() -> bool:
            t = await clients.store.get(sub.task.id)
            return t is not None and t.state is TaskState.COMPLETED

        await wait_until(done, 10)
    task = await clients.store.get(sub.task.id)
    assert task is not None
    assert task.result == {"ok": True}
    assert task.attempts == 1
    assert task.started_at is not None and task.finished_at is not None
    stats = await clients.queue.stats(task.priority)
    assert stats.backlog == 0 and stats.waiting == 0 and stats.active == 0
