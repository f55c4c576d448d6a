"""Recovery hands back stalled claims and settles tasks whose worker is gone."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from prometheus_client import REGISTRY

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.keys import CONSUMER_GROUP
from relayq.core.priorities import Priority
from relayq.core.queue import Queue
from relayq.core.service import JobRequest
from tests.conftest import InProcessWorker, wait_until
from tests.recovery.helpers import backdate, held, insert, move, recovery, run


async def _claimed_by_a_dead_worker(clients: Clients) -> str:
    """A job claimed and started by a worker that then died (its claim stays pending)."""
    sub = await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    claim = await clients.queue.claim(Priority.HIGH, "dead-worker", 1)
    assert [d.message.task_id for d in claim.deliveries] == [sub.task.id]
    await move(clients, sub.task, TaskState.ACTIVE, worker="dead-worker")
    return sub.task.id


async def test_a_stalled_claim_is_handed_back_and_a_worker_completes_it(clients: Clients) -> None:
    task_id = await _claimed_by_a_dead_worker(clients)
    await asyncio.sleep(clients.settings.lease_seconds + 0.3)  # idle past the lease

    summary = await run(clients, grace_seconds=0)

    assert summary.reclaimed == 1 and summary.redispatched_total == 0
    keys = clients.queue.keys.of(Priority.HIGH)
    [(_, fields)] = await clients.redis.xrange(keys.stream)
    assert fields == {"t": task_id, "y": "noop", "d": "1"}  # deliveries so far travel along
    assert await clients.redis.xpending(keys.stream, CONSUMER_GROUP) == {
        "pending": 0, "min": None, "max": None, "consumers": []
    }  # fmt: skip
    # Delivered as its second delivery, the executor takes over the active task.
    async with InProcessWorker(clients, "high"):
        await wait_until(lambda: _state(clients, task_id, TaskState.COMPLETED), timeout=20)


async def test_a_claim_within_its_lease_is_left_to_its_worker(clients: Clients) -> None:
    task_id = await _claimed_by_a_dead_worker(clients)
    await backdate(clients, task_id, 3600)  # an old record, but its claim is fresh

    summary = await run(clients, grace_seconds=0)

    assert summary.reclaimed == 0 and summary.settled == 0
    record = await clients.store.get(task_id)
    assert record is not None and record.state is TaskState.ACTIVE


POISONED = "relayq_jobs_dead_lettered_total"


async def test_a_stalled_claim_delivered_too_often_is_dead_lettered(clients: Clients) -> None:
    clients.settings = replace(clients.settings, max_deliveries=1)
    task_id = await _claimed_by_a_dead_worker(clients)
    # A second delivery (another worker took it over, then died too).
    await Queue(clients.redis, clients.queue.keys).reclaim(Priority.HIGH, "dead-2", 0, 10, 5)
    await asyncio.sleep(clients.settings.lease_seconds + 0.3)

    labels = {"priority": "high", "reason": "poison"}
    before = REGISTRY.get_sample_value(POISONED, labels) or 0.0

    summary = await recovery(clients, grace_seconds=0).run_once()

    assert summary.poison == 1 and summary.dead_lettered == 1 and summary.reclaimed == 0
    # Counted like any dead letter, and reported for the API to export.
    assert (
        REGISTRY.get_sample_value(POISONED, {"priority": "high", "reason": "poison"}) == before + 1
    )
    report = await clients.redis.hgetall(clients.queue.keys.recovery_report)
    assert int(report["dead_lettered_total"]) == 1
    assert await held(clients, Priority.HIGH) == []
    record = await clients.store.get(task_id)
    assert record is not None and record.state is TaskState.FAILED
    assert record.last_error == "poison: delivered 2 times without finishing"


async def test_a_reclaim_counts_deliveries_of_earlier_entries_toward_poison(
    clients: Clients,
) -> None:
    keys = clients.queue.keys.of(Priority.HIGH)
    await clients.queue.ensure_group(Priority.HIGH)
    task = await insert(clients)
    # Re-added by recovery after 3 deliveries, then claimed and taken over:
    # 3 earlier + 2 of this entry = 5, the default limit; one more is poison.
    await clients.redis.xadd(keys.stream, {"t": task.id, "y": "noop", "d": "3"})
    claim = await clients.queue.claim(Priority.HIGH, "dead-worker", 1)
    assert [d.deliveries for d in claim.deliveries] == [4]
    result = await clients.queue.reclaim(Priority.HIGH, "w", 0, 10, 5)
    assert [d.deliveries for d in result.deliveries] == [5]
    assert result.poison == []
    result = await clients.queue.reclaim(Priority.HIGH, "w2", 0, 10, 5)
    assert [d.message.task_id for d in result.poison] == [task.id]


async def test_an_active_task_whose_worker_and_claim_are_gone_is_settled_and_runs(
    clients: Clients,
) -> None:
    # Its claim was lost with Redis (a failover): only MongoDB knows the task.
    task = await move(clients, await insert(clients), TaskState.ACTIVE, worker="gone")
    await backdate(clients, task.id, clients.settings.lease_seconds + 31)

    summary = await run(clients)

    assert summary.settled == 1 and summary.redispatched == {
        "pending": 0, "queued": 0, "retrying": 0, "active": 1
    }  # fmt: skip
    record = await clients.store.get(task.id)
    assert record is not None and record.state is TaskState.QUEUED and record.worker is None
    assert await held(clients, Priority.HIGH) == [task.id]
    async with InProcessWorker(clients, "high"):
        await wait_until(lambda: _state(clients, task.id, TaskState.COMPLETED), timeout=20)


async def test_an_active_task_within_lease_and_grace_is_not_settled(clients: Clients) -> None:
    task = await move(clients, await insert(clients), TaskState.ACTIVE, worker="slow")
    await backdate(clients, task.id, clients.settings.lease_seconds + 10)  # < lease + 30 s

    summary = await run(clients)

    assert summary.settled == 0 and summary.candidates == 0
    record = await clients.store.get(task.id)
    assert record is not None and record.state is TaskState.ACTIVE


async def _state(clients: Clients, task_id: str, state: TaskState) -> bool:
    task = await clients.store.get(task_id)
    return task is not None and task.state is state


async def test_a_crash_safe_claim_delivered_too_often_is_parked_not_dead_lettered(
    clients: Clients,
) -> None:
    # A money-moving job (JobType.crash_safe) whose workers kept dying: the count proves
    # nothing about the job, and it may have moved money, so it is parked for review.
    clients.settings = replace(clients.settings, max_deliveries=1)
    keys = clients.queue.keys.of(Priority.HIGH)
    await clients.queue.ensure_group(Priority.HIGH)
    task = await insert(clients, type_="token_transfer", crash_safe=True)
    await clients.redis.xadd(keys.stream, {"t": task.id, "y": "token_transfer"})
    await clients.queue.claim(Priority.HIGH, "dead-worker", 1)
    await move(clients, task, TaskState.ACTIVE, worker="dead-worker")
    await Queue(clients.redis, clients.queue.keys).reclaim(Priority.HIGH, "dead-2", 0, 10, 5)
    await asyncio.sleep(clients.settings.lease_seconds + 0.3)

    summary = await recovery(clients, grace_seconds=0).run_once()

    assert summary.poison == 1 and summary.dead_lettered == 0
    record = await clients.store.get(task.id)
    assert record is not None and record.state is TaskState.NEEDS_REVIEW, record
    assert record.review is not None and record.review["reason"] == "deliveries"
