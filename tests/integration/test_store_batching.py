"""Batched store writes on the real server: group-committed inserts and batched transitions.

Each caller of a batch must get exactly the answer its write alone would have
given: created or replayed, refused, guarded out, or the outage's error.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relayq.core.clients import Clients
from relayq.core.jobs import InvalidPayload, Task, TaskState
from relayq.core.lifecycle import Lifecycle
from relayq.core.priorities import Priority
from relayq.core.store import Change, IdempotencyConflict, NewTask, TaskStore, connect_mongo
from relayq.dev.servers import free_port, mongo_server
from tests.integration.test_store import nested


@pytest.fixture
def store(clients: Clients) -> TaskStore:
    return clients.store


def new(payload: dict[str, Any] | None = None, key: str | None = None) -> NewTask:
    return NewTask(
        type="noop",
        priority=Priority.MEDIUM,
        payload=payload if payload is not None else {"n": 1},
        max_attempts=3,
        idempotency_key=key,
    )


# -- group commit of inserts -------------------------------------------------------------


async def test_concurrent_inserts_share_one_commit_and_each_is_durable(store: TaskStore) -> None:
    before = store._inserts.batches
    results = await asyncio.gather(*(store.insert(new({"n": i})) for i in range(40)))
    assert store._inserts.batches - before <= 2  # two writes may be in flight at once
    assert all(created for _, created in results)
    for task, _ in results:
        assert await store.get(task.id) == task


async def test_a_duplicate_key_in_a_batch_is_answered_with_its_replay(store: TaskStore) -> None:
    original, _ = await store.insert(new({"a": 1}, key="k1"))
    results = await asyncio.gather(
        store.insert(new({"a": 1}, key="k1")),  # a replay of an earlier request
        store.insert(new({"b": 1}, key="k2")),
        store.insert(new({"b": 1}, key="k2")),  # two of one key in the same batch
        store.insert(new({"c": 1})),
    )
    assert results[0] == (original, False)
    (first, first_created), (second, second_created) = results[1], results[2]
    assert first.id == second.id and sorted([first_created, second_created]) == [False, True]
    assert results[3][1] is True
    assert await store.tasks.count_documents({}) == 3


async def test_a_conflicting_key_fails_only_its_own_request(store: TaskStore) -> None:
    await store.insert(new({"a": 1}, key="k"))
    results = await asyncio.gather(
        store.insert(new({"a": 2}, key="k")), store.insert(new()), return_exceptions=True
    )
    assert isinstance(results[0], IdempotencyConflict)
    assert isinstance(results[1], tuple) and results[1][1] is True


@pytest.mark.parametrize(
    "refused", [nested(200), {"blob": "x" * (17 * 1024 * 1024)}], ids=["server", "client"]
)
async def test_a_row_the_store_refuses_fails_alone_and_the_rest_are_written(
    store: TaskStore, refused: dict[str, Any]
) -> None:
    results = await asyncio.gather(
        store.insert(new({"n": 1})),
        store.insert(new(refused)),
        store.insert(new({"n": 2}, key="kept")),
        return_exceptions=True,
    )
    assert isinstance(results[1], InvalidPayload) and results[1].field == "payload"
    for result in (results[0], results[2]):
        assert isinstance(result, tuple) and result[1] is True
        assert await store.get(result[0].id) == result[0]
    assert await store.tasks.count_documents({}) == 2


async def test_store_unreachable_answers_every_request_of_the_batch_with_the_error(
    clients: Clients,
) -> None:
    mongo = connect_mongo(f"mongodb://127.0.0.1:{free_port()}/", timeout_seconds=0.3)
    try:
        down = TaskStore(mongo, "down")
        results = await asyncio.gather(
            *(down.insert(new({"n": i})) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, Exception) for r in results)
        assert down._inserts.batches == 1
    finally:
        await mongo.close()


async def test_store_killed_mid_batch_loses_no_acknowledged_insert(tmp_path: Path) -> None:
    server = mongo_server(tmp_path / "mongo").start()
    mongo = connect_mongo(f"mongodb://127.0.0.1:{server.port}/", timeout_seconds=1)
    try:
        store = TaskStore(mongo, "killed")
        acked: list[Task] = []
        failed = 0
        enough = asyncio.Event()

        async def submit(i: int) -> None:
            nonlocal failed
            try:
                acked.append((await store.insert(new({"n": i})))[0])
            except Exception:
                failed += 1
            if len(acked) >= 150:
                enough.set()

        async def kill_soon() -> None:
            await enough.wait()
            server.kill()

        killer = asyncio.ensure_future(kill_soon())
        await asyncio.gather(*(submit(i) for i in range(600)))
        await killer
        assert failed > 0 and len(acked) >= 150
        server.restart()
        stored = {d["_id"] for d in await store.tasks.find({}, {"_id": 1}).to_list()}
        assert {t.id for t in acked} <= stored
    finally:
        await mongo.close()
        server.stop()


# -- batched transitions ------------------------------------------------------------------


async def queued(store: TaskStore, n: int) -> list[Task]:
    return [t for t, _ in await store.insert_many([new({"n": i}) for i in range(n)])]


async def test_starts_of_one_claim_go_as_one_write_and_answer_like_the_records(
    store: TaskStore,
) -> None:
    life = Lifecycle(store)
    tasks = await queued(store, 20)
    started = await asyncio.gather(*(life.start(t.id, "w1", redelivered=False) for t in tasks))
    assert life._runs.batches == 1
    for task in started:
        assert task is not None and task.state is TaskState.ACTIVE and task.attempts == 1
        assert await store.get(task.id) == task
    done = await asyncio.gather(*(life.complete(t, {"ok": t.id}) for t in started if t))
    assert life._runs.batches == 2
    for task in done:
        assert task is not None and task.state is TaskState.COMPLETED
        assert await store.get(task.id) == task  # computed, not read back: must match exactly


async def test_a_stale_duplicate_in_a_batch_is_dropped_and_the_others_start(
    store: TaskStore,
) -> None:
    life = Lifecycle(store)
    tasks = await queued(store, 5)
    assert await life.start(tasks[2].id, "other", redelivered=False) is not None
    started = await asyncio.gather(*(life.start(t.id, "w1", redelivered=False) for t in tasks))
    assert [t is None for t in started] == [False, False, True, False, False]
    assert (await store.get(tasks[2].id)).worker == "other"  # type: ignore[union-attr]


async def test_one_task_twice_in_a_batch_starts_once(store: TaskStore) -> None:
    life = Lifecycle(store)
    (task, other) = await queued(store, 2)
    started = await asyncio.gather(
        life.start(task.id, "w1", redelivered=False),
        life.start(task.id, "w1", redelivered=False),
        life.start(other.id, "w1", redelivered=False),
    )
    assert sum(t is not None for t in started[:2]) == 1 and started[2] is not None
    assert (await store.get(task.id)).attempts == 1  # type: ignore[union-attr]


async def test_a_superseded_completion_in_a_batch_is_refused_alone(store: TaskStore) -> None:
    life = Lifecycle(store)
    tasks = await queued(store, 4)
    started = [await life.start(t.id, "w1", redelivered=False) for t in tasks]
    # Another worker took the second over (its lease ran out): this run's copy is stale.
    assert await life.start(tasks[1].id, "w2", redelivered=True) is not None
    done = await asyncio.gather(*(life.complete(t, None) for t in started if t))
    assert [t is None for t in done] == [False, True, False, False]
    states = [(await store.get(t.id)).state for t in tasks]  # type: ignore[union-attr]
    assert states[1] is TaskState.ACTIVE and states.count(TaskState.COMPLETED) == 3


async def test_starts_and_completions_mixed_in_one_batch(store: TaskStore) -> None:
    life = Lifecycle(store)
    first, second = await queued(store, 2)
    running = await life.start(first.id, "w1", redelivered=False)
    assert running is not None
    done, started = await asyncio.gather(
        life.complete(running, 7), life.start(second.id, "w1", redelivered=False)
    )
    assert done is not None and done.result == 7 and started is not None
    assert await store.get(done.id) == done and await store.get(started.id) == started


async def test_transition_many_with_the_store_down_answers_each_change_with_the_error(
    clients: Clients,
) -> None:
    mongo = connect_mongo(f"mongodb://127.0.0.1:{free_port()}/", timeout_seconds=0.3)
    try:
        down = Lifecycle(TaskStore(mongo, "down"))
        results = await asyncio.gather(
            *(down.start(f"{i:032x}", "w1", redelivered=False) for i in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, Exception) for r in results)
    finally:
        await mongo.close()


async def test_without_batching_each_change_is_its_own_write(clients: Clients) -> None:
    store = TaskStore(clients.store.client, clients.store.tasks.database.name, batch_max=1)
    life = Lifecycle(store)
    tasks = await queued(store, 3)
    started = await asyncio.gather(*(life.start(t.id, "w1", redelivered=False) for t in tasks))
    assert life._runs.batches == 0 and all(t is not None for t in started)


async def test_a_retried_batch_does_not_apply_twice(store: TaskStore) -> None:
    # A write conflict makes the whole update_many go again: the stamp guard keeps
    # the redelivered start (which may take over `active`) from counting twice.
    tasks = await queued(store, 3)
    change = [
        Change(
            t.id, (TaskState.QUEUED, TaskState.ACTIVE), TaskState.ACTIVE, inc_fields={"attempts": 1}
        )
        for t in tasks
    ]
    first = await store.transition_many(change)
    assert all(isinstance(t, Task) for t in first)
    second = await store.transition_many(change)  # a new stamp: applies again, once
    assert [t.attempts for t in second if isinstance(t, Task)] == [2, 2, 2]
    assert replace(tasks[0], state=TaskState.ACTIVE).id == tasks[0].id
