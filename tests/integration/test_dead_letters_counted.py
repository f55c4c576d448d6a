"""Every way a task reaches the dead letters moves relayq_jobs_dead_lettered_total.

The dead-letter alert watches that counter: a path that dead-letters without
counting hides failures from it. Each path here goes through the real executor
(or recovery) on real Redis and MongoDB; the relayer's refusal is in
tests/relayer/test_purchase.py.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.queue import Delivery, Message
from relayq.core.service import JobRequest
from relayq.core.store import NewTask
from tests.conftest import InProcessWorker, wait_until


def dead_lettered(priority: Priority, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "relayq_jobs_dead_lettered_total", {"priority": priority.value, "reason": reason}
    )
    return value or 0.0


async def _failed(clients: Clients, task_id: str) -> bool:
    task = await clients.store.get(task_id)
    return task is not None and task.state is TaskState.FAILED


async def _run_until_failed(clients: Clients, payload: dict[str, Any], attempts: int) -> str:
    submitted = await clients.service.submit(
        JobRequest("fail", payload, priority=Priority.LOW, max_attempts=attempts)
    )
    async with InProcessWorker(clients, "low"):
        await wait_until(lambda: _failed(clients, submitted.task.id), timeout=20)
    return submitted.task.id


async def test_retries_exhausted_are_counted(clients: Clients) -> None:
    before = dead_lettered(Priority.LOW, "attempts")
    await _run_until_failed(clients, {}, attempts=1)
    assert dead_lettered(Priority.LOW, "attempts") == before + 1


async def test_a_permanent_error_is_counted(clients: Clients) -> None:
    before = dead_lettered(Priority.LOW, "permanent")
    await _run_until_failed(clients, {"permanent": True}, attempts=3)
    assert dead_lettered(Priority.LOW, "permanent") == before + 1


async def test_poison_seen_by_a_worker_is_counted(clients: Clients) -> None:
    task, _ = await clients.store.insert(NewTask("noop", Priority.MEDIUM, {}, max_attempts=3))
    worker = InProcessWorker(clients, "medium")
    before = dead_lettered(Priority.MEDIUM, "poison")
    delivery = Delivery(Priority.MEDIUM, "1-0", Message(task.id, "noop"), deliveries=9)
    await worker.executor.poison(delivery)
    assert await _failed(clients, task.id)
    assert dead_lettered(Priority.MEDIUM, "poison") == before + 1
    # Dead-lettered once: a second report of the same poison changes nothing.
    await worker.executor.poison(delivery)
    assert dead_lettered(Priority.MEDIUM, "poison") == before + 1


async def test_an_unknown_type_is_counted(clients: Clients) -> None:
    task, _ = await clients.store.insert(NewTask("noop", Priority.MEDIUM, {}, max_attempts=3))
    worker = InProcessWorker(clients, "medium")
    before = dead_lettered(Priority.MEDIUM, "unknown-type")
    await worker.executor.execute(
        Delivery(Priority.MEDIUM, "1-0", Message(task.id, "no-such-type")), "test"
    )
    assert await _failed(clients, task.id)
    assert dead_lettered(Priority.MEDIUM, "unknown-type") == before + 1
