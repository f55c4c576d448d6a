"""Queue.oldest_waiting_age: undelivered entries and due delayed jobs, on a real Redis."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from relayq.core.clients import Clients
from relayq.core.ids import new_task_id
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue

P = Priority.MEDIUM


@pytest.fixture
def queue(clients: Clients) -> Queue:
    return clients.queue


async def redis_now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def member() -> str:
    return Message(new_task_id(), "noop").member


async def test_empty_priority_has_no_waiting_age(queue: Queue) -> None:
    assert await queue.oldest_waiting_age(P) == 0.0


async def test_oldest_undelivered_entry_sets_the_age(queue: Queue) -> None:
    old_ms = await redis_now_ms(queue.redis) - 8000
    await queue.redis.xadd(
        queue.keys.of(P).stream, {"t": new_task_id(), "y": "noop"}, id=f"{old_ms}-0"
    )
    await queue.ensure_group(P)
    assert 7.5 <= await queue.oldest_waiting_age(P) < 30


async def test_due_delayed_job_waits_since_its_due_time(queue: Queue) -> None:
    now = await redis_now_ms(queue.redis)
    await queue.redis.zadd(queue.keys.of(P).delayed, {member(): now - 6000})
    await queue.enqueue(P, Message(new_task_id(), "noop"))  # fresh: younger than the due job
    age = await queue.oldest_waiting_age(P)
    assert 5.5 <= age < 30


async def test_delayed_job_not_yet_due_does_not_count(queue: Queue) -> None:
    now = await redis_now_ms(queue.redis)
    await queue.redis.zadd(queue.keys.of(P).delayed, {member(): now + 60_000})
    assert await queue.oldest_waiting_age(P) == 0.0


async def test_claimed_jobs_are_not_waiting(queue: Queue) -> None:
    old_ms = await redis_now_ms(queue.redis) - 8000
    await queue.redis.xadd(
        queue.keys.of(P).stream, {"t": new_task_id(), "y": "noop"}, id=f"{old_ms}-0"
    )
    await queue.ensure_group(P)
    claim = await queue.claim(P, "pod-a-1", 10)
    assert len(claim.deliveries) == 1
    assert await queue.oldest_waiting_age(P) == 0.0
