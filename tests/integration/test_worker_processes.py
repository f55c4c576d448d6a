"""Worker processes under crashes, signals, shared rate limits and floods."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.settings import Settings
from tests.conftest import WorkerProcess, wait_until

StartWorker = Callable[..., WorkerProcess]


def _effects(clients: Clients) -> Any:
    return clients.store.client[clients.settings.mongo_database]["effects"]


async def _all_in(clients: Clients, ids: list[str], state: TaskState) -> bool:
    n = await clients.store.tasks.count_documents({"_id": {"$in": ids}, "state": state.value})
    return n == len(ids)


async def test_sigkill_mid_job_is_reclaimed_after_the_lease_and_completes_once(
    clients: Clients, start_worker: StartWorker
) -> None:
    first = start_worker("high")
    sub = await clients.service.submit(JobRequest("record", {"seconds": 3}, priority=Priority.HIGH))

    async def started() -> bool:
        return await _effects(clients).count_documents({"task_id": sub.task.id}) > 0

    await wait_until(started, 15)
    first.kill()
    killed_at = time.monotonic()
    second = start_worker("high")
    await wait_until(lambda: _all_in(clients, [sub.task.id], TaskState.COMPLETED), 30)
    # Not before the lease ran out: the dead worker's claim was taken over.
    assert time.monotonic() - killed_at >= clients.settings.lease_seconds
    task = await clients.store.get(sub.task.id)
    assert task is not None and task.attempts == 2
    done = await _effects(clients).find({"task_id": sub.task.id, "phase": "done"}).to_list()
    assert len(done) == 1 and done[0]["pid"] == second.process.pid
    assert "reclaimed claims of a dead worker" in second.log()
    assert (await clients.queue.stats(Priority.HIGH)).backlog == 0


async def test_a_poison_job_is_dead_lettered_after_max_deliveries(
    clients: Clients, start_worker: StartWorker
) -> None:
    deliveries = clients.settings.max_deliveries
    sub = await clients.service.submit(JobRequest("crash", {}, priority=Priority.LOW))
    crashes = 0
    # Like a Deployment restarting its pod: each worker dies on the job until
    # the job has been delivered too often and is put aside.
    for _ in range(deliveries + 2):
        worker = start_worker("low", wait=False)
        try:
            worker.process.wait(timeout=20)
            crashes += 1
        except Exception:
            break  # survived: the poison job is gone
    task = await wait_until(
        lambda: _if_state(clients, sub.task.id, TaskState.FAILED),
        clients.settings.lease_seconds * 3,
    )
    assert crashes == deliveries
    assert task.last_error.startswith(f"poison: delivered {deliveries + 1} times")
    # The last worker survived and goes on with other work.
    healthy = await clients.service.submit(JobRequest("noop", {}, priority=Priority.LOW))
    await wait_until(lambda: _all_in(clients, [healthy.task.id], TaskState.COMPLETED), 30)


async def _if_state(clients: Clients, task_id: str, state: TaskState) -> Any:
    task = await clients.store.get(task_id)
    return task if task is not None and task.state is state else None


async def test_a_rate_limit_holds_across_two_worker_processes(
    clients: Clients, start_worker: StartWorker
) -> None:
    start_worker("medium")
    start_worker("medium")
    subs = await clients.service.submit_many(
        [JobRequest("limited", {}, priority=Priority.MEDIUM) for _ in range(20)]
    )
    ids = [s.task.id for s in subs]
    await wait_until(lambda: _all_in(clients, ids, TaskState.COMPLETED), 60)
    starts = sorted(e["at"] for e in await _effects(clients).find({"phase": "start"}).to_list())
    assert len(starts) == 20
    pids = {e["pid"] for e in await _effects(clients).find({"phase": "start"}).to_list()}
    assert len(pids) == 2, "both processes took jobs"
    # 5 per second with a burst of 5: 20 starts need at least 3 seconds.
    assert starts[-1] - starts[0] >= 2.8
    for i, t in enumerate(starts):
        in_window = sum(1 for u in starts[i:] if u - t < 1.0)
        assert in_window <= 6, f"{in_window} starts within one second"
    tasks = [await clients.store.get(i) for i in ids]
    assert all(t is not None and t.attempts == 1 for t in tasks), "limited jobs wait, not fail"


async def test_sigterm_drains_in_flight_jobs_without_loss(
    clients: Clients, start_worker: StartWorker
) -> None:
    worker = start_worker("high")
    subs = await clients.service.submit_many(
        [JobRequest("record", {"seconds": 1.5}, priority=Priority.HIGH) for _ in range(4)]
    )
    ids = [s.task.id for s in subs]

    async def all_started() -> bool:
        return await _effects(clients).count_documents({"phase": "start"}) == 4

    await wait_until(all_started, 15)
    assert worker.terminate(timeout=20) == 0
    assert await _all_in(clients, ids, TaskState.COMPLETED)
    assert (await clients.queue.stats(Priority.HIGH)).backlog == 0


async def test_sigterm_gives_back_jobs_longer_than_the_drain_bound(
    clients: Clients, start_worker: StartWorker
) -> None:
    worker = start_worker("high", RELAYQ_DRAIN_SECONDS="0.5")
    subs = await clients.service.submit_many(
        [JobRequest("record", {"seconds": 4}, priority=Priority.HIGH) for _ in range(3)]
    )
    ids = [s.task.id for s in subs]

    async def all_started() -> bool:
        return await _effects(clients).count_documents({"phase": "start"}) == 3

    await wait_until(all_started, 15)
    t0 = time.monotonic()
    assert worker.terminate(timeout=20) == 0
    assert time.monotonic() - t0 < 3, "the drain bound was respected"
    for task_id in ids:
        task = await clients.store.get(task_id)
        assert task is not None and task.state is TaskState.RETRYING and task.attempts == 0
    start_worker("high")
    await wait_until(lambda: _all_in(clients, ids, TaskState.COMPLETED), 30)
    assert await _effects(clients).count_documents({"phase": "done"}) == 3


@pytest.mark.slow
async def test_a_batch_flood_does_not_push_critical_past_its_sla(
    clients: Clients, settings: Settings, start_worker: StartWorker
) -> None:
    start_worker("batch")
    start_worker("critical")
    flood = 20_000
    for chunk in range(0, flood, 2000):
        await clients.service.submit_many(
            [JobRequest("noop", {"i": chunk + i}, priority=Priority.BATCH) for i in range(2000)]
        )
    assert (await clients.queue.stats(Priority.BATCH)).backlog > flood / 2, "flood queued"
    critical = []
    for _ in range(20):
        sub = await clients.service.submit(JobRequest("noop", {}, priority=Priority.CRITICAL))
        critical.append(sub.task.id)
        await asyncio.sleep(0.1)
    await wait_until(lambda: _all_in(clients, critical, TaskState.COMPLETED), 30)
    sla = clients.settings.priority_class(Priority.CRITICAL).sla_seconds
    assert sla is not None
    for task_id in critical:
        task = await clients.store.get(task_id)
        assert task is not None and task.started_at is not None
        wait = (task.started_at - task.created_at).total_seconds()
        assert wait < sla, f"critical waited {wait:.3f}s behind the batch flood"
    stats = await clients.queue.stats(Priority.BATCH)
    assert stats.backlog > flood / 2, "the flood was still being worked through"
    # Concurrency 1: one job running, and at most one more whose outcome is being written.
    assert 1 <= stats.active <= 2, "the batch worker was busy all along"


async def test_a_worker_exports_prometheus_metrics_on_its_port(
    clients: Clients, start_worker: StartWorker
) -> None:
    import urllib.request

    from relayq.dev.servers import free_port

    port = free_port()
    start_worker("medium", RELAYQ_METRICS_PORT=str(port))
    sub = await clients.service.submit(JobRequest("noop", {}, priority=Priority.MEDIUM))
    await wait_until(lambda: _all_in(clients, [sub.task.id], TaskState.COMPLETED), 20)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    text = await asyncio.to_thread(scrape)
    assert 'relayq_jobs_total{outcome="completed",priority="medium",type="noop"} 1.0' in text
    assert 'relayq_queue_wait_seconds_count{priority="medium",type="noop"} 1.0' in text
    assert 'relayq_sla_starts_total{met="true",priority="medium"} 1.0' in text
    assert 'relayq_jobs_in_flight{priority="medium"} 0.0' in text
    assert "relayq_job_run_seconds_bucket" in text
