"""JobService: validation, record-then-dispatch, and dead-letter administration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relayq.core.clients import Clients, open_clients
from relayq.core.jobs import InvalidPayload, JobError, TaskState, UnknownJobType
from relayq.core.priorities import Priority
from relayq.core.service import IDEMPOTENCY_KEY_MAX_LENGTH, MAX_DELAY_SECONDS, JobRequest
from relayq.dev.servers import free_port
from tests.gateway import make_dead


@pytest.fixture
async def redis_down(clients: Clients) -> AsyncIterator[Clients]:
    """Clients on the same MongoDB database, with Redis pointed at a closed port."""
    settings = replace(clients.settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with open_clients(settings) as down:
        yield down


async def xlen(clients: Clients, priority: Priority) -> int:
    return int(await clients.redis.xlen(clients.queue.keys.of(priority).stream))


async def zcard(clients: Clients, priority: Priority) -> int:
    return int(await clients.redis.zcard(clients.queue.keys.of(priority).delayed))


# -- validation --------------------------------------------------------------


async def test_unknown_type_is_rejected_with_its_code(clients: Clients) -> None:
    with pytest.raises(UnknownJobType) as info:
        await clients.service.submit(JobRequest("no-such-type", {}))
    assert info.value.code == "unknown-job-type"
    assert await clients.store.tasks.count_documents({}) == 0


@pytest.mark.parametrize(
    ("type_", "payload", "field"),
    [
        ("sleep", {"seconds": -1}, "payload.seconds"),
        ("sleep", {"seconds": "1"}, "payload.seconds"),
        ("fail", {"times": -2}, "payload.times"),
        ("noop", [1, 2], "payload"),
        ("noop", {"x": float("nan")}, "payload"),
    ],
)
async def test_invalid_payload_is_rejected_naming_the_field(
    clients: Clients, type_: str, payload: Any, field: str
) -> None:
    with pytest.raises(InvalidPayload) as info:
        await clients.service.submit(JobRequest(type_, payload))
    assert info.value.code == "invalid-payload"
    assert info.value.field == field
    assert await clients.store.tasks.count_documents({}) == 0


@pytest.mark.parametrize("max_attempts", [-1, 101, 1000])
async def test_max_attempts_out_of_range_is_rejected(clients: Clients, max_attempts: int) -> None:
    with pytest.raises(InvalidPayload) as info:
        await clients.service.submit(JobRequest("noop", {}, max_attempts=max_attempts))
    assert info.value.field == "maxAttempts"


async def test_max_attempts_within_range_is_kept(clients: Clients) -> None:
    for n in (1, 100):
        sub = await clients.service.submit(JobRequest("noop", {}, max_attempts=n))
        assert sub.task.max_attempts == n


async def test_max_attempts_defaults_to_the_priority_class(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}, priority=Priority.CRITICAL))
    assert sub.task.max_attempts == clients.settings.priority_class(Priority.CRITICAL).max_attempts


async def test_delay_and_run_at_together_are_rejected(clients: Clients) -> None:
    with pytest.raises(InvalidPayload) as info:
        await clients.service.submit(
            JobRequest("noop", {}, delay_seconds=5, run_at=datetime.now(UTC))
        )
    assert info.value.field == "delaySeconds"


async def test_naive_run_at_is_rejected(clients: Clients) -> None:
    with pytest.raises(InvalidPayload, match="time zone") as info:
        await clients.service.submit(JobRequest("noop", {}, run_at=datetime(2030, 1, 1)))
    assert info.value.field == "runAt"


async def test_run_at_too_far_ahead_is_rejected(clients: Clients) -> None:
    far = datetime.now(UTC) + timedelta(seconds=MAX_DELAY_SECONDS + 3600)
    with pytest.raises(InvalidPayload, match="too far") as info:
        await clients.service.submit(JobRequest("noop", {}, run_at=far))
    assert info.value.field == "runAt"


@pytest.mark.parametrize("delay", [-1.0, MAX_DELAY_SECONDS + 1.0, float("nan")])
async def test_delay_out_of_range_is_rejected(clients: Clients, delay: float) -> None:
    with pytest.raises(InvalidPayload) as info:
        await clients.service.submit(JobRequest("noop", {}, delay_seconds=delay))
    assert info.value.field == "delaySeconds"


@pytest.mark.parametrize("key", ["", "k" * (IDEMPOTENCY_KEY_MAX_LENGTH + 1)])
async def test_idempotency_key_empty_or_too_long_is_rejected(clients: Clients, key: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        await clients.service.submit(JobRequest("noop", {}, idempotency_key=key))
    assert info.value.field == "idempotencyKey"


async def test_one_invalid_request_in_a_batch_writes_nothing(clients: Clients) -> None:
    with pytest.raises(JobError):
        await clients.service.submit_many(
            [JobRequest("noop", {}), JobRequest("sleep", {"seconds": -1})]
        )
    assert await clients.store.tasks.count_documents({}) == 0
    assert await xlen(clients, Priority.MEDIUM) == 0


# -- submit and dispatch -----------------------------------------------------


async def test_submit_records_the_task_then_puts_it_on_its_priority_stream(
    clients: Clients,
) -> None:
    sub = await clients.service.submit(
        JobRequest("noop", {"a": 1}, priority=Priority.HIGH, trace={"requestId": "r1"})
    )
    assert sub.created
    assert sub.task.state is TaskState.QUEUED
    stored = await clients.store.get(sub.task.id)
    assert stored is not None
    assert stored.state is TaskState.QUEUED and stored.queued_at is not None
    assert stored.payload == {"a": 1} and stored.trace == {"requestId": "r1"}
    assert await xlen(clients, Priority.HIGH) == 1
    assert await xlen(clients, Priority.MEDIUM) == 0
    claim = await clients.queue.claim(Priority.HIGH, "t", 10)
    assert [(d.message.task_id, d.message.type) for d in claim.deliveries] == [
        (sub.task.id, "noop")
    ]


async def test_submit_without_priority_uses_the_types_default(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("record", {}))
    assert sub.task.priority is Priority.HIGH  # tests.jobtypes registers record as HIGH
    assert await xlen(clients, Priority.HIGH) == 1


async def test_idempotent_replay_is_not_dispatched_twice(clients: Clients) -> None:
    first = await clients.service.submit(JobRequest("noop", {"a": 1}, idempotency_key="order-9"))
    again = await clients.service.submit(JobRequest("noop", {"a": 1}, idempotency_key="order-9"))
    assert first.created and not again.created
    assert again.task.id == first.task.id
    assert await xlen(clients, Priority.MEDIUM) == 1


async def test_delayed_submit_lands_in_the_delayed_set_not_the_stream(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}, delay_seconds=60))
    assert sub.task.state is TaskState.QUEUED
    assert sub.task.run_at is not None
    assert timedelta(seconds=55) < sub.task.run_at - datetime.now(UTC) <= timedelta(seconds=60)
    assert await xlen(clients, Priority.MEDIUM) == 0
    assert await zcard(clients, Priority.MEDIUM) == 1
    stats = await clients.queue.stats(Priority.MEDIUM)
    assert (stats.delayed, stats.due, stats.backlog) == (1, 0, 0)
    members = await clients.redis.zrange(clients.queue.keys.of(Priority.MEDIUM).delayed, 0, -1)
    assert members == [f"{sub.task.id}|noop"]


async def test_run_at_in_the_future_is_scheduled_for_that_time(clients: Clients) -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=120)
    sub = await clients.service.submit(JobRequest("noop", {}, run_at=run_at))
    delayed_key = clients.queue.keys.of(Priority.MEDIUM).delayed
    score = await clients.redis.zscore(delayed_key, f"{sub.task.id}|noop")
    assert score is not None
    assert abs(score - run_at.timestamp() * 1000) < 2000
    assert await xlen(clients, Priority.MEDIUM) == 0


async def test_run_at_in_the_past_is_ready_at_once(clients: Clients) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    await clients.service.submit(JobRequest("noop", {}, run_at=past))
    assert await xlen(clients, Priority.MEDIUM) == 1
    assert await zcard(clients, Priority.MEDIUM) == 0


async def test_submit_with_redis_down_leaves_the_task_pending_in_mongo(
    clients: Clients, redis_down: Clients
) -> None:
    sub = await redis_down.service.submit(JobRequest("noop", {"k": "v"}, priority=Priority.HIGH))
    assert sub.created
    assert sub.task.state is TaskState.PENDING
    stored = await clients.store.get(sub.task.id)
    assert stored is not None
    assert stored.state is TaskState.PENDING
    assert stored.queued_at is None
    assert stored.payload == {"k": "v"}
    # The reachable Redis never saw it: recovery must dispatch it later.
    assert await xlen(clients, Priority.HIGH) == 0


async def test_dispatch_after_redis_returns_queues_a_pending_task(
    clients: Clients, redis_down: Clients
) -> None:
    sub = await redis_down.service.submit(JobRequest("noop", {}))
    assert sub.task.state is TaskState.PENDING
    still_pending = await clients.service.dispatch_pending([sub.task])
    assert still_pending == {}
    stored = await clients.store.get(sub.task.id)
    assert stored is not None and stored.state is TaskState.QUEUED
    assert await xlen(clients, Priority.MEDIUM) == 1


# -- overview ----------------------------------------------------------------


async def test_overview_reports_every_priority_with_its_dead_count(clients: Clients) -> None:
    await make_dead(clients, priority=Priority.LOW)
    await make_dead(clients, priority=Priority.LOW)
    await make_dead(clients, priority=Priority.CRITICAL)
    await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    await clients.service.submit(JobRequest("noop", {}, priority=Priority.BATCH, delay_seconds=60))
    await clients.service.pause(Priority.MEDIUM)

    overview = {o.stats.priority: o for o in await clients.service.overview()}
    assert list(overview) == list(Priority)
    assert overview[Priority.LOW].dead == 2
    assert overview[Priority.CRITICAL].dead == 1
    assert overview[Priority.HIGH].dead == 0
    assert overview[Priority.HIGH].stats.waiting == 2
    assert overview[Priority.BATCH].stats.delayed == 1
    assert overview[Priority.MEDIUM].stats.paused is True

    public = overview[Priority.HIGH].to_public()
    assert public["priority"] == "high"
    assert public["waiting"] == 2 and public["backlog"] == 2 and public["dead"] == 0
    assert public["paused"] is False
    assert overview[Priority.LOW].to_public()["dead"] == 2


async def test_pause_and_resume_through_the_service(clients: Clients) -> None:
    await clients.service.pause(Priority.HIGH)
    assert (await clients.queue.stats(Priority.HIGH)).paused
    await clients.service.resume(Priority.HIGH)
    assert not (await clients.queue.stats(Priority.HIGH)).paused


# -- dead letters ------------------------------------------------------------


async def test_retry_dead_letter_gives_a_fresh_budget_and_dispatches(clients: Clients) -> None:
    dead = await make_dead(clients, max_attempts=3)
    assert dead.attempts == 3 and dead.max_attempts == 3

    retried = await clients.service.retry_dead_letter(dead.id)
    assert retried is not None
    assert retried.id == dead.id
    assert retried.state is TaskState.QUEUED
    stored = await clients.store.get(dead.id)
    assert stored is not None
    assert stored.state is TaskState.QUEUED
    assert stored.max_attempts - stored.attempts == 3
    assert stored.finished_at is None
    assert stored.version > dead.version
    claim = await clients.queue.claim(Priority.MEDIUM, "t", 10)
    assert [d.message.task_id for d in claim.deliveries] == [dead.id]
    assert await clients.store.count(state=TaskState.FAILED) == 0


async def test_retry_dead_letter_ignores_tasks_that_are_not_failed(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))
    before = await clients.store.get(sub.task.id)
    assert await clients.service.retry_dead_letter(sub.task.id) is None
    after = await clients.store.get(sub.task.id)
    assert before is not None and after is not None
    assert (after.state, after.version) == (before.state, before.version)
    assert await xlen(clients, Priority.MEDIUM) == 1  # not enqueued a second time
    assert await clients.service.retry_dead_letter("0" * 32) is None


async def test_retry_dead_letter_with_redis_down_leaves_it_pending(
    clients: Clients, redis_down: Clients
) -> None:
    dead = await make_dead(clients)
    retried = await redis_down.service.retry_dead_letter(dead.id)
    assert retried is not None and retried.state is TaskState.PENDING
    stored = await clients.store.get(dead.id)
    assert stored is not None and stored.state is TaskState.PENDING


async def test_retry_dead_letters_by_type_retries_only_that_type(clients: Clients) -> None:
    noops = [await make_dead(clients, "noop") for _ in range(3)]
    sleeper = await make_dead(clients, "sleep", payload={"seconds": 0})

    assert await clients.service.retry_dead_letters(type_="noop") == 3
    for task in noops:
        stored = await clients.store.get(task.id)
        assert stored is not None and stored.state is TaskState.QUEUED
    still = await clients.store.get(sleeper.id)
    assert still is not None and still.state is TaskState.FAILED
    assert await xlen(clients, Priority.MEDIUM) == 3

    assert await clients.service.retry_dead_letters() == 1
    assert await clients.store.count(state=TaskState.FAILED) == 0


async def test_retry_dead_letters_stops_at_the_limit(clients: Clients) -> None:
    for _ in range(4):
        await make_dead(clients)
    assert await clients.service.retry_dead_letters(limit=3) == 3
    assert await clients.store.count(state=TaskState.FAILED) == 1


async def test_retry_dead_letters_with_none_dead_retries_nothing(clients: Clients) -> None:
    await clients.service.submit(JobRequest("noop", {}))
    assert await clients.service.retry_dead_letters() == 0


async def test_delete_dead_letter_removes_only_failed_tasks(clients: Clients) -> None:
    dead = await make_dead(clients)
    live = await clients.service.submit(JobRequest("noop", {}))

    assert await clients.service.delete_dead_letter(live.task.id) is False
    assert await clients.store.get(live.task.id) is not None

    assert await clients.service.delete_dead_letter(dead.id) is True
    assert await clients.store.get(dead.id) is None
    assert await clients.service.delete_dead_letter(dead.id) is False
