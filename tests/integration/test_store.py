"""TaskStore against a MongoDB wire-protocol server (the local one, or RELAYQ_TEST_MONGO_URL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relayq.core.clients import Clients
from relayq.core.ids import is_task_id
from relayq.core.jobs import InvalidPayload, Task, TaskState
from relayq.core.priorities import Priority
from relayq.core.store import IdempotencyConflict, NewTask, TaskStore


@pytest.fixture
def store(clients: Clients) -> TaskStore:
    return clients.store


def new(
    type_: str = "noop",
    priority: Priority = Priority.MEDIUM,
    payload: dict[str, Any] | None = None,
    key: str | None = None,
    **kwargs: Any,
) -> NewTask:
    return NewTask(
        type=type_,
        priority=priority,
        payload=payload if payload is not None else {"n": 1},
        max_attempts=kwargs.pop("max_attempts", 3),
        idempotency_key=key,
        **kwargs,
    )


async def insert(store: TaskStore, *args: Any, **kwargs: Any) -> Task:
    task, created = await store.insert(new(*args, **kwargs))
    assert created
    return task


async def fail(store: TaskStore, task: Task) -> Task:
    done = await store.transition(task.id, [TaskState.QUEUED], TaskState.FAILED)
    assert done is not None
    return done


# -- insert ------------------------------------------------------------------


async def test_insert_creates_a_queued_task_with_fresh_counters(store: TaskStore) -> None:
    run_at = datetime.now(UTC) + timedelta(minutes=5)
    task, created = await store.insert(
        new("sleep", Priority.HIGH, {"seconds": 2}, max_attempts=4, run_at=run_at,
            trace={"requestId": "r-1"})
    )  # fmt: skip
    assert created is True
    assert is_task_id(task.id)
    assert task.state is TaskState.QUEUED
    assert (task.version, task.attempts, task.max_attempts) == (0, 0, 4)
    assert task.type == "sleep" and task.priority is Priority.HIGH
    assert task.payload == {"seconds": 2}
    assert task.idempotency_key is None
    assert task.trace == {"requestId": "r-1"}

    stored = await store.get(task.id)
    assert stored is not None
    assert stored.state is TaskState.QUEUED
    assert stored.payload == {"seconds": 2}
    assert stored.created_at.tzinfo is not None
    assert abs(stored.created_at - datetime.now(UTC)) < timedelta(seconds=30)
    assert stored.run_at is not None
    assert abs(stored.run_at - run_at) < timedelta(milliseconds=2)
    assert stored.trace == {"requestId": "r-1"}


async def test_get_of_unknown_id_is_none(store: TaskStore) -> None:
    assert await store.get("0" * 32) is None


async def test_idempotent_replay_returns_the_same_task_not_created(store: TaskStore) -> None:
    first, created = await store.insert(new(payload={"a": 1, "b": [1, 2]}, key="order-1"))
    assert created
    # Same body, keys in another order: still a replay.
    again, created_again = await store.insert(new(payload={"b": [1, 2], "a": 1}, key="order-1"))
    assert created_again is False
    assert again.id == first.id
    assert again.idempotency_key == "order-1"
    assert await store.tasks.count_documents({}) == 1


async def test_same_idempotency_key_with_other_payload_conflicts(store: TaskStore) -> None:
    first, _ = await store.insert(new(payload={"a": 1}, key="k"))
    with pytest.raises(IdempotencyConflict) as info:
        await store.insert(new(payload={"a": 2}, key="k"))
    assert info.value.code == "idempotency-conflict"
    assert info.value.existing.id == first.id
    assert first.id in str(info.value)
    assert await store.tasks.count_documents({}) == 1


@pytest.mark.parametrize("change", [{"type_": "sleep"}, {"priority": Priority.CRITICAL}])
async def test_same_key_with_other_type_or_priority_conflicts(
    store: TaskStore, change: dict[str, Any]
) -> None:
    await store.insert(new(payload={}, key="k"))
    with pytest.raises(IdempotencyConflict):
        await store.insert(new(payload={}, key="k", **change))


async def test_tasks_without_keys_never_collide(store: TaskStore) -> None:
    a = await insert(store)
    b = await insert(store)
    assert a.id != b.id
    assert await store.tasks.count_documents({}) == 2


async def test_insert_many_handles_mixed_keys_in_input_order(store: TaskStore) -> None:
    existing, _ = await store.insert(new(payload={"i": 0}, key="dup"))
    news = [
        new(payload={"i": 1}),
        new(payload={"i": 0}, key="dup"),
        new(payload={"i": 2}, key="fresh"),
        new(payload={"i": 3}),
    ]
    out = await store.insert_many(news)
    assert [t.payload["i"] for t, _ in out] == [1, 0, 2, 3]
    assert [created for _, created in out] == [True, False, True, True]
    assert out[1][0].id == existing.id
    assert out[2][0].idempotency_key == "fresh"
    assert len({t.id for t, _ in out}) == 4
    assert await store.tasks.count_documents({}) == 4
    for task, _ in out:
        stored = await store.get(task.id)
        assert stored is not None and stored.payload == task.payload


async def test_insert_many_with_conflicting_key_raises(store: TaskStore) -> None:
    await store.insert(new(payload={"i": 0}, key="dup"))
    with pytest.raises(IdempotencyConflict):
        await store.insert_many([new(payload={"i": 9}, key="dup")])


async def test_insert_many_of_nothing_returns_nothing(store: TaskStore) -> None:
    assert await store.insert_many([]) == []


# -- transitions -------------------------------------------------------------


async def test_transition_from_wrong_state_does_nothing(store: TaskStore) -> None:
    task = await insert(store)
    result = await store.transition(task.id, [TaskState.RETRYING], TaskState.ACTIVE)
    assert result is None
    stored = await store.get(task.id)
    assert stored is not None
    assert stored.state is TaskState.QUEUED and stored.version == 0


async def test_transition_with_stale_version_does_nothing(store: TaskStore) -> None:
    task = await insert(store)
    moved = await store.transition(task.id, [TaskState.QUEUED], TaskState.PENDING, version=0)
    assert moved is not None and moved.version == 1
    stale = await store.transition(
        task.id, [TaskState.PENDING], TaskState.ACTIVE, version=0, inc_fields={"attempts": 1}
    )
    assert stale is None
    stored = await store.get(task.id)
    assert stored is not None
    assert (stored.state, stored.version, stored.attempts) == (TaskState.PENDING, 1, 0)


async def test_transition_bumps_version_and_applies_set_and_inc(store: TaskStore) -> None:
    task = await insert(store)
    started = datetime.now(UTC)
    active = await store.transition(
        task.id,
        [TaskState.PENDING, TaskState.QUEUED],
        TaskState.ACTIVE,
        version=0,
        set_fields={"worker": "w-1", "started_at": started},
        inc_fields={"attempts": 1},
    )
    assert active is not None
    assert active.state is TaskState.ACTIVE
    assert active.version == 1
    assert active.attempts == 1
    assert active.worker == "w-1"
    assert active.started_at is not None
    assert abs(active.started_at - started) < timedelta(milliseconds=2)

    again = await store.transition(
        task.id, [TaskState.ACTIVE], TaskState.RETRYING, inc_fields={"attempts": 2}
    )
    assert again is not None
    assert (again.version, again.attempts) == (2, 3)
    stored = await store.get(task.id)
    assert stored is not None and (stored.state, stored.version) == (TaskState.RETRYING, 2)


async def test_transition_of_unknown_task_is_none(store: TaskStore) -> None:
    assert await store.transition("f" * 32, [TaskState.PENDING], TaskState.QUEUED) is None


# -- reads -------------------------------------------------------------------


async def test_list_pages_newest_first_and_sees_each_task_once(store: TaskStore) -> None:
    ids = []
    for i in range(7):
        ids.append((await insert(store, payload={"i": i})).id)
        await asyncio.sleep(0.002)  # distinct milliseconds, so ids sort by insertion

    seen: list[str] = []
    sizes = []
    cursor: str | None = None
    for _ in range(10):
        page = await store.list(limit=3, cursor=cursor)
        sizes.append(len(page.tasks))
        seen += [t.id for t in page.tasks]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == list(reversed(ids))


async def test_list_with_limit_equal_to_total_has_no_next_cursor(store: TaskStore) -> None:
    for _ in range(3):
        await insert(store)
    page = await store.list(limit=3)
    assert len(page.tasks) == 3
    assert page.next_cursor is None


async def test_list_filters_by_state_type_and_priority(store: TaskStore) -> None:
    a = await insert(store, "noop", Priority.HIGH)
    b = await insert(store, "sleep", Priority.HIGH)
    c = await insert(store, "noop", Priority.LOW)
    await fail(store, c)

    def ids(page_tasks: list[Task]) -> set[str]:
        return {t.id for t in page_tasks}

    assert ids((await store.list(type_="noop")).tasks) == {a.id, c.id}
    assert ids((await store.list(priority=Priority.HIGH)).tasks) == {a.id, b.id}
    assert ids((await store.list(state=TaskState.QUEUED)).tasks) == {a.id, b.id}
    assert ids((await store.list(state=TaskState.FAILED)).tasks) == {c.id}
    assert ids((await store.list(type_="noop", priority=Priority.HIGH)).tasks) == {a.id}
    assert (await store.list(type_="fail")).tasks == []


async def test_listings_by_state_or_priority_page_newest_first_across_the_other(
    store: TaskStore,
) -> None:
    # Served by state_priority_id one range per (state, priority) pair, merged by id.
    made: list[Task] = []
    for i in range(8):
        task = await insert(store, payload={"i": i}, priority=[Priority.HIGH, Priority.LOW][i % 2])
        made.append(await fail(store, task) if i % 3 == 0 else task)
        await asyncio.sleep(0.002)  # distinct milliseconds, so ids sort by insertion

    async def pages(**filters: Any) -> list[str]:
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(10):
            page = await store.list(limit=2, cursor=cursor, **filters)
            seen += [t.id for t in page.tasks]
            cursor = page.next_cursor
            if cursor is None:
                return seen
        raise AssertionError("more pages than tasks")

    newest_first = list(reversed(made))
    assert await pages(state=TaskState.QUEUED) == [
        t.id for t in newest_first if t.state is TaskState.QUEUED
    ]
    assert await pages(priority=Priority.HIGH) == [
        t.id for t in newest_first if t.priority is Priority.HIGH
    ]
    assert await pages(state=TaskState.FAILED, priority=Priority.LOW) == [
        t.id for t in newest_first if (t.state, t.priority) == (TaskState.FAILED, Priority.LOW)
    ]


async def test_dead_letters_lists_only_failed_tasks_of_the_type(store: TaskStore) -> None:
    ok = await insert(store, "noop")
    dead_noop = await fail(store, await insert(store, "noop"))
    dead_sleep = await fail(store, await insert(store, "sleep"))

    all_dead = await store.dead_letters()
    assert {t.id for t in all_dead.tasks} == {dead_noop.id, dead_sleep.id}
    assert ok.id not in {t.id for t in all_dead.tasks}
    only_noop = await store.dead_letters(type_="noop")
    assert [t.id for t in only_noop.tasks] == [dead_noop.id]


async def test_dead_letters_paginate_with_cursor(store: TaskStore) -> None:
    dead = [(await fail(store, await insert(store))).id for _ in range(5)]
    first = await store.dead_letters(limit=2)
    assert first.next_cursor is not None
    rest = await store.dead_letters(limit=10, cursor=first.next_cursor)
    assert rest.next_cursor is None
    seen = [t.id for t in first.tasks + rest.tasks]
    assert sorted(seen) == sorted(dead)
    assert len(seen) == len(set(seen))


async def test_count_by_state_and_priority(store: TaskStore) -> None:
    await fail(store, await insert(store, priority=Priority.HIGH))
    await fail(store, await insert(store, priority=Priority.HIGH))
    await fail(store, await insert(store, priority=Priority.LOW))
    await insert(store, priority=Priority.HIGH)

    assert await store.count(state=TaskState.FAILED) == 3
    assert await store.count(state=TaskState.FAILED, priority=Priority.HIGH) == 2
    assert await store.count(state=TaskState.FAILED, priority=Priority.LOW) == 1
    assert await store.count(state=TaskState.FAILED, priority=Priority.BATCH) == 0
    assert await store.count(state=TaskState.QUEUED, priority=Priority.HIGH) == 1


async def test_delete_only_removes_tasks_in_the_given_states(store: TaskStore) -> None:
    pending = await insert(store)
    dead = await fail(store, await insert(store))

    assert await store.delete(pending.id, [TaskState.FAILED]) is False
    assert await store.get(pending.id) is not None

    assert await store.delete(dead.id, [TaskState.FAILED, TaskState.COMPLETED]) is True
    assert await store.get(dead.id) is None
    assert await store.delete(dead.id, [TaskState.FAILED]) is False


async def test_deleting_a_keyed_task_frees_its_idempotency_key(store: TaskStore) -> None:
    first = await fail(store, (await store.insert(new(payload={"a": 1}, key="k")))[0])
    assert await store.delete(first.id, [TaskState.FAILED])
    second, created = await store.insert(new(payload={"a": 2}, key="k"))
    assert created and second.id != first.id


def nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(depth):
        doc = {"a": doc}
    return doc


# MongoDB refuses documents nested more than 180 levels (Overflow, code 15), and
# PyMongo refuses one over the server's maxBsonObjectSize (16 MiB) before sending it.
REFUSED = {
    "nested too deep": (nested(200), "levels of nesting"),
    "over the document size limit": ({"blob": "x" * (17 * 1024 * 1024)}, "too large"),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_a_payload_the_store_refuses_is_invalid_and_nothing_is_written(
    store: TaskStore, case: str
) -> None:
    # A refusal of the document is the client's bad payload, not an outage.
    refused, says = REFUSED[case]
    with pytest.raises(InvalidPayload) as one:
        await store.insert(new(payload=refused))
    assert one.value.field == "payload" and says in str(one.value)
    with pytest.raises(InvalidPayload):
        await store.insert_many([new(), new(payload=refused), new()])
    assert await store.tasks.count_documents({}) == 0
