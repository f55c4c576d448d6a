"""The Redis side of dispatch, driven directly against a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import astuple
from typing import Any

import pytest
from redis.asyncio import Redis

from relayq.core.clients import Clients, connect_redis
from relayq.core.ids import new_task_id
from relayq.core.keys import CONSUMER_GROUP, Keys
from relayq.core.priorities import Priority
from relayq.core.queue import Delivery, Message, Queue
from tests.conftest import wait_until

P = Priority.HIGH


@pytest.fixture
def queue(clients: Clients) -> Queue:
    return clients.queue


@pytest.fixture
async def second_redis(clients: Clients) -> AsyncIterator[Redis]:
    redis = connect_redis(clients.settings.redis_url)
    yield redis
    await redis.aclose()


def msg(type_: str = "noop") -> Message:
    return Message(new_task_id(), type_)


async def redis_now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def pending_entry(queue: Queue, priority: Priority, entry_id: str) -> dict[str, Any] | None:
    rows = await queue.redis.xpending_range(
        queue.keys.of(priority).stream, CONSUMER_GROUP, min=entry_id, max=entry_id, count=1
    )
    return rows[0] if rows else None


async def wait_idle(queue: Queue, priority: Priority, entry_id: str, ms: int) -> None:
    async def idle_enough() -> bool:
        row = await pending_entry(queue, priority, entry_id)
        return row is not None and int(row["time_since_delivered"]) >= ms

    await wait_until(idle_enough, timeout=5, interval=0.02)


async def xlen(queue: Queue, priority: Priority) -> int:
    return int(await queue.redis.xlen(queue.keys.of(priority).stream))


async def claim_one(queue: Queue, priority: Priority, consumer: str = "a") -> Delivery:
    await queue.ensure_group(priority)
    claim = await queue.claim(priority, consumer, 1)
    assert len(claim.deliveries) == 1
    return claim.deliveries[0]


# -- enqueue, claim, ack -----------------------------------------------------


async def test_enqueue_claim_ack_leaves_empty_stream_and_zero_backlog(queue: Queue) -> None:
    await queue.ensure_group(P)
    sent = [msg() for _ in range(3)]
    ids = [await queue.enqueue(P, m) for m in sent]
    assert await xlen(queue, P) == 3

    claim = await queue.claim(P, "a", 10)
    assert not claim.paused
    assert [d.entry_id for d in claim.deliveries] == ids
    assert [d.message for d in claim.deliveries] == sent
    assert all(d.deliveries == 1 and d.priority is P for d in claim.deliveries)

    assert await queue.ack(P, [d.entry_id for d in claim.deliveries]) == 3
    assert await xlen(queue, P) == 0
    stats = await queue.stats(P)
    assert (stats.waiting, stats.active, stats.backlog) == (0, 0, 0)
    assert await queue.backlog(P) == 0


async def test_ack_of_unknown_or_no_entries_acknowledges_nothing(queue: Queue) -> None:
    await queue.ensure_group(P)
    assert await queue.ack(P, []) == 0
    assert await queue.ack(P, ["1-1"]) == 0


async def test_enqueue_many_adds_all_in_order(queue: Queue) -> None:
    await queue.ensure_group(P)
    sent = [msg() for _ in range(4)]
    ids = await queue.enqueue_many(P, sent)
    assert len(ids) == 4
    claim = await queue.claim(P, "a", 10)
    assert [d.message for d in claim.deliveries] == sent


async def test_claim_returns_at_most_count_entries(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue_many(P, [msg() for _ in range(5)])
    sizes = [len((await queue.claim(P, "a", 2)).deliveries) for _ in range(4)]
    assert sizes == [2, 2, 1, 0]


async def test_claim_with_nothing_ready_reports_last_entry_id_to_block_on(queue: Queue) -> None:
    await queue.ensure_group(P)
    entry_id = await queue.enqueue(P, msg())
    await queue.claim(P, "a", 1)
    empty = await queue.claim(P, "a", 1)
    assert empty.deliveries == []
    assert empty.last_entry_id == entry_id
    assert empty.next_due_ms is None


async def test_priorities_do_not_share_entries(queue: Queue) -> None:
    await queue.ensure_group(Priority.CRITICAL)
    await queue.ensure_group(Priority.BATCH)
    await queue.enqueue(Priority.BATCH, msg())
    assert (await queue.claim(Priority.CRITICAL, "a", 10)).deliveries == []
    assert len((await queue.claim(Priority.BATCH, "a", 10)).deliveries) == 1


# -- stats -------------------------------------------------------------------


async def test_stats_counts_waiting_active_delayed_and_due(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue_many(P, [msg() for _ in range(3)])
    await queue.claim(P, "a", 1)
    # Scheduled after the claim, so the claim did not promote the due one.
    await queue.schedule(P, [(msg(), 0), (msg(), 60)])

    stats = await queue.stats(P)
    assert stats.priority is P
    assert stats.waiting == 2
    assert stats.active == 1
    assert stats.delayed == 2
    assert stats.due == 1
    assert stats.paused is False
    assert stats.backlog == 2 + 1 + 1


async def test_stats_of_an_untouched_priority_are_all_zero(queue: Queue) -> None:
    stats = await queue.stats(Priority.LOW)
    assert (stats.waiting, stats.active, stats.delayed, stats.due, stats.backlog) == (0,) * 5
    assert stats.oldest_waiting_age_seconds == 0.0
    assert stats.paused is False


async def test_oldest_waiting_age_reflects_the_oldest_undelivered_entry(queue: Queue) -> None:
    stream = queue.keys.of(P).stream
    old_ms = await redis_now_ms(queue.redis) - 5000
    await queue.redis.xadd(stream, {"t": new_task_id(), "y": "noop"}, id=f"{old_ms}-0")
    await queue.ensure_group(P)
    await queue.enqueue(P, msg())

    stats = await queue.stats(P)
    assert stats.waiting == 2
    assert 4.5 <= stats.oldest_waiting_age_seconds < 30

    # Once the old entry is delivered, the age is that of the next one: fresh.
    await queue.claim(P, "a", 1)
    assert (await queue.stats(P)).oldest_waiting_age_seconds < 2

    await queue.claim(P, "a", 1)
    assert (await queue.stats(P)).oldest_waiting_age_seconds == 0.0


# -- pause -------------------------------------------------------------------


async def test_paused_priority_claims_nothing_until_resumed(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue_many(P, [msg(), msg()])
    await queue.pause(P)

    claim = await queue.claim(P, "a", 10)
    assert claim.paused is True
    assert claim.deliveries == []
    stats = await queue.stats(P)
    assert stats.paused is True
    assert stats.waiting == 2 and stats.active == 0

    await queue.resume(P)
    assert (await queue.stats(P)).paused is False
    claim = await queue.claim(P, "a", 10)
    assert claim.paused is False
    assert len(claim.deliveries) == 2


async def test_paused_priority_does_not_promote_due_delayed_jobs(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.schedule(P, [(msg(), 0)])
    await queue.pause(P)
    claim = await queue.claim(P, "a", 10)
    assert claim.paused and claim.deliveries == []
    assert claim.next_due_ms is not None
    stats = await queue.stats(P)
    assert stats.delayed == 1 and stats.waiting == 0


async def test_pause_of_one_priority_leaves_others_claiming(queue: Queue) -> None:
    await queue.ensure_group(Priority.CRITICAL)
    await queue.enqueue(Priority.CRITICAL, msg())
    await queue.pause(Priority.BATCH)
    claim = await queue.claim(Priority.CRITICAL, "a", 10)
    assert not claim.paused and len(claim.deliveries) == 1


# -- delayed jobs ------------------------------------------------------------


async def test_scheduled_job_is_promoted_only_once_due_on_the_redis_clock(queue: Queue) -> None:
    await queue.ensure_group(P)
    message = msg()
    before = await redis_now_ms(queue.redis)
    await queue.schedule(P, [(message, 0.4)])

    early = await queue.claim(P, "a", 10)
    assert early.deliveries == []
    assert early.next_due_ms is not None
    assert before + 400 <= early.next_due_ms <= before + 400 + 200
    stats = await queue.stats(P)
    assert (stats.delayed, stats.due, stats.backlog) == (1, 0, 0)

    async def claimed() -> list[Delivery]:
        return (await queue.claim(P, "a", 10)).deliveries

    deliveries = await wait_until(claimed, timeout=5, interval=0.02)
    assert await redis_now_ms(queue.redis) >= early.next_due_ms
    assert [d.message for d in deliveries] == [message]
    assert (await queue.stats(P)).delayed == 0


async def test_job_scheduled_far_ahead_is_not_promoted(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.schedule(P, [(msg(), 3600)])
    claim = await queue.claim(P, "a", 10)
    assert claim.deliveries == []
    assert await xlen(queue, P) == 0
    stats = await queue.stats(P)
    assert stats.delayed == 1 and stats.due == 0


async def test_schedule_of_nothing_is_a_no_op(queue: Queue) -> None:
    await queue.schedule(P, [])
    assert (await queue.stats(P)).delayed == 0


async def test_retry_later_moves_a_claim_to_delayed_and_it_is_promoted_later(
    queue: Queue,
) -> None:
    await queue.ensure_group(P)
    message = msg()
    await queue.enqueue(P, message)
    delivery = await claim_one(queue, P)

    before = await redis_now_ms(queue.redis)
    due = await queue.retry_later(delivery, 0.3)
    assert before + 300 <= due <= before + 300 + 200
    assert await xlen(queue, P) == 0
    stats = await queue.stats(P)
    assert (stats.waiting, stats.active, stats.delayed, stats.due) == (0, 0, 1, 0)
    assert await pending_entry(queue, P, delivery.entry_id) is None

    assert (await queue.claim(P, "a", 10)).deliveries == []

    async def claimed() -> list[Delivery]:
        return (await queue.claim(P, "b", 10)).deliveries

    again = await wait_until(claimed, timeout=5, interval=0.02)
    assert await redis_now_ms(queue.redis) >= due
    assert [d.message for d in again] == [message]
    assert again[0].entry_id != delivery.entry_id
    assert again[0].deliveries == 1


# -- reclaim -----------------------------------------------------------------


async def test_reclaim_takes_only_entries_idle_past_min_idle(queue: Queue) -> None:
    await queue.ensure_group(P)
    message = msg()
    await queue.enqueue(P, message)
    delivery = await claim_one(queue, P, "dead")

    fresh = await queue.reclaim(P, "rescuer", 5.0, 10, 5)
    assert fresh.deliveries == [] and fresh.poison == []

    await wait_idle(queue, P, delivery.entry_id, 250)
    taken = await queue.reclaim(P, "rescuer", 0.2, 10, 5)
    assert taken.poison == []
    assert len(taken.deliveries) == 1
    got = taken.deliveries[0]
    assert got.entry_id == delivery.entry_id
    assert got.message == message
    assert got.deliveries == 2
    row = await pending_entry(queue, P, delivery.entry_id)
    assert row is not None and row["consumer"] == "rescuer"
    assert int(row["times_delivered"]) == 2


async def test_reclaim_respects_count(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue_many(P, [msg() for _ in range(3)])
    await queue.claim(P, "dead", 3)
    taken = await queue.reclaim(P, "rescuer", 0, 2, 5)
    assert len(taken.deliveries) == 2
    rest = await queue.reclaim(P, "rescuer2", 0, 10, 5)
    assert len(rest.deliveries) == 3  # min idle 0: the two just taken are idle too


async def test_reclaim_removes_and_returns_poison_beyond_max_deliveries(queue: Queue) -> None:
    await queue.ensure_group(P)
    poison_msg, healthy_msg = msg(), msg()
    await queue.enqueue(P, poison_msg)
    first = await claim_one(queue, P, "a")  # delivery 1
    second = await queue.reclaim(P, "b", 0, 10, 5)  # delivery 2
    assert [d.deliveries for d in second.deliveries] == [2]
    await queue.enqueue(P, healthy_msg)
    healthy = await claim_one(queue, P, "a")  # delivery 1
    assert await xlen(queue, P) == 2

    result = await queue.reclaim(P, "c", 0, 10, 2)
    assert [(d.entry_id, d.message, d.deliveries) for d in result.poison] == [
        (first.entry_id, poison_msg, 3)
    ]
    assert [(d.entry_id, d.deliveries) for d in result.deliveries] == [(healthy.entry_id, 2)]
    assert await xlen(queue, P) == 1
    assert await pending_entry(queue, P, first.entry_id) is None
    stats = await queue.stats(P)
    assert stats.active == 1 and stats.waiting == 0


async def test_reclaim_on_missing_stream_or_group_returns_nothing(queue: Queue) -> None:
    empty = await queue.reclaim(Priority.LOW, "x", 0, 10, 5)
    assert empty.deliveries == [] and empty.poison == []
    await queue.redis.xadd(queue.keys.of(Priority.LOW).stream, {"t": new_task_id(), "y": "noop"})
    no_group = await queue.reclaim(Priority.LOW, "x", 0, 10, 5)
    assert no_group.deliveries == [] and no_group.poison == []


# -- extend ------------------------------------------------------------------


async def test_extend_resets_idle_so_the_entry_is_not_reclaimed(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue(P, msg())
    delivery = await claim_one(queue, P, "a")
    await wait_idle(queue, P, delivery.entry_id, 300)

    assert await queue.extend(P, "a", [delivery.entry_id]) == 1

    row = await pending_entry(queue, P, delivery.entry_id)
    assert row is not None
    assert int(row["time_since_delivered"]) < 300
    assert row["consumer"] == "a"
    taken = await queue.reclaim(P, "b", 0.3, 10, 5)
    assert taken.deliveries == [] and taken.poison == []


async def test_extend_does_not_count_as_a_delivery(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue(P, msg())
    delivery = await claim_one(queue, P, "a")
    for _ in range(5):
        assert await queue.extend(P, "a", [delivery.entry_id]) == 1
    row = await pending_entry(queue, P, delivery.entry_id)
    assert row is not None and int(row["times_delivered"]) == 1
    # Were extends counted, max_deliveries=1 would make this poison.
    taken = await queue.reclaim(P, "b", 0, 10, 2)
    assert taken.poison == []
    assert [d.deliveries for d in taken.deliveries] == [2]


async def test_extend_leaves_another_consumers_entry_alone(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue_many(P, [msg(), msg()])
    mine = await claim_one(queue, P, "a")
    theirs = await claim_one(queue, P, "b")
    await wait_idle(queue, P, theirs.entry_id, 300)

    assert await queue.extend(P, "a", [mine.entry_id, theirs.entry_id]) == 1

    row = await pending_entry(queue, P, theirs.entry_id)
    assert row is not None
    assert row["consumer"] == "b"
    assert int(row["time_since_delivered"]) >= 300
    assert int(row["times_delivered"]) == 1
    taken = await queue.reclaim(P, "c", 0.3, 10, 5)
    assert [d.entry_id for d in taken.deliveries] == [theirs.entry_id]


async def test_extend_of_acked_entry_or_no_entries_extends_nothing(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue(P, msg())
    delivery = await claim_one(queue, P, "a")
    await queue.ack(P, [delivery.entry_id])
    assert await queue.extend(P, "a", [delivery.entry_id]) == 0
    assert await queue.extend(P, "a", []) == 0


# -- rate limit --------------------------------------------------------------


async def test_rate_limit_allows_a_burst_of_limit_then_spaces_starts(queue: Queue) -> None:
    limit, period = 4, 0.8
    for _ in range(limit):
        assert await queue.rate_limit("mail", limit, period, burst=limit) == 0.0
    wait = await queue.rate_limit("mail", limit, period, burst=limit)
    assert 0.1 <= wait <= period / limit + 0.05

    started = time.monotonic()

    async def allowed() -> bool:
        return await queue.rate_limit("mail", limit, period, burst=limit) == 0.0

    await wait_until(allowed, timeout=5, interval=0.01)
    elapsed = time.monotonic() - started
    assert wait - 0.05 <= elapsed <= wait + 0.3
    # The slot just taken is the only one freed: the next start must wait again.
    assert await queue.rate_limit("mail", limit, period, burst=limit) > 0


async def test_rate_limit_without_burst_spaces_every_start(queue: Queue) -> None:
    assert await queue.rate_limit("sms", 4, 0.8) == 0.0
    wait = await queue.rate_limit("sms", 4, 0.8)
    assert 0.15 <= wait <= 0.2


async def test_rate_limit_budget_is_shared_across_redis_clients(
    queue: Queue, second_redis: Redis
) -> None:
    other = Queue(second_redis, queue.keys)
    limit, period = 6, 2.0
    results = []
    for i in range(limit):
        q = queue if i % 2 == 0 else other
        results.append(await q.rate_limit("webhook", limit, period, burst=limit))
    assert results == [0.0] * limit
    assert await queue.rate_limit("webhook", limit, period, burst=limit) > 0
    assert await other.rate_limit("webhook", limit, period, burst=limit) > 0


async def test_rate_limits_of_different_job_types_are_independent(queue: Queue) -> None:
    assert await queue.rate_limit("a", 1, 10) == 0.0
    assert await queue.rate_limit("a", 1, 10) > 0
    assert await queue.rate_limit("b", 1, 10) == 0.0


# -- resilience and key layout ----------------------------------------------


async def test_claim_recreates_a_deleted_stream_and_group(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue(P, msg())
    await claim_one(queue, P)
    await queue.redis.delete(queue.keys.of(P).stream)

    message = msg()
    await queue.enqueue(P, message)  # recreates the stream, without a group
    claim = await queue.claim(P, "a", 10)
    assert [d.message for d in claim.deliveries] == [message]
    groups = await queue.redis.xinfo_groups(queue.keys.of(P).stream)
    assert [g["name"] for g in groups] == [CONSUMER_GROUP]


async def test_claim_on_a_never_created_stream_creates_it_empty(queue: Queue) -> None:
    claim = await queue.claim(Priority.BATCH, "a", 10)
    assert claim.deliveries == [] and not claim.paused
    assert await queue.redis.exists(queue.keys.of(Priority.BATCH).stream) == 1


def _hash_tag(key: str) -> str:
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


async def test_every_key_a_priority_uses_carries_its_hash_tag(clients: Clients) -> None:
    queue = Queue(clients.redis, Keys("scanq"))
    for priority in Priority:
        await queue.ensure_group(priority)
        await queue.enqueue_many(priority, [msg(), msg()])
        delivery = await claim_one(queue, priority)
        await queue.retry_later(delivery, 60)
        await queue.schedule(priority, [(msg(), 30)])
        await queue.claim(priority, "b", 1)
        await queue.reclaim(priority, "c", 0, 10, 5)
        await queue.pause(priority)
        await queue.stats(priority)

    keys = [k async for k in clients.redis.scan_iter(match="*")]
    assert keys
    for key in keys:
        assert key.startswith("scanq:")
        tag = _hash_tag(key)
        priority = Priority(tag)
        assert key in astuple(queue.keys.of(priority))
    tags = {_hash_tag(key) for key in keys}
    assert tags == {p.value for p in Priority}


async def test_purge_deletes_a_prioritys_keys(queue: Queue) -> None:
    await queue.ensure_group(P)
    await queue.enqueue(P, msg())
    await queue.schedule(P, [(msg(), 60)])
    await queue.pause(P)
    await queue.purge(P)
    assert await queue.redis.exists(*astuple(queue.keys.of(P))) == 0


async def test_enqueues_made_together_share_one_pipeline_and_keep_their_order(
    clients: Clients,
) -> None:
    queue = clients.queue
    await queue.ensure_group(Priority.LOW)
    before = queue._xadds.batches
    ids = await asyncio.gather(
        *(queue.enqueue(Priority.LOW, Message(f"{i:032x}", "noop")) for i in range(50))
    )
    assert queue._xadds.batches - before == 1
    assert ids == sorted(ids, key=lambda e: tuple(int(p) for p in e.split("-")))
    entries = await queue.redis.xrange(queue.keys.of(Priority.LOW).stream)
    assert [e[1]["t"] for e in entries] == [f"{i:032x}" for i in range(50)]


async def test_an_enqueue_refused_by_redis_fails_alone(clients: Clients) -> None:
    queue = clients.queue
    await queue.redis.set(queue.keys.of(Priority.BATCH).stream, "not a stream")
    results = await asyncio.gather(
        queue.enqueue(Priority.BATCH, Message("0" * 32, "noop")),
        queue.enqueue(Priority.LOW, Message("1" * 32, "noop")),
        return_exceptions=True,
    )
    assert isinstance(results[0], Exception) and "WRONGTYPE" in str(results[0])
    assert isinstance(results[1], str)
