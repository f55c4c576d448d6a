"""Guarded writes are atomic per document: racing writers, exactly one winner.

relayq moves a task between states with a `find_one_and_update` guarded on the
expected state and version, claims a purchase's transfer the same way, and
deduplicates submissions with a unique index. If two racing writers can both
pass one guard, a job runs twice or a transfer is sent twice: these tests fail
on a server whose guarded update reads, then writes by `_id` without checking
the filter again (FerretDB 1.24: both of 2 writers won in 50 of 50 trials).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.store import NewTask, TaskStore
from tests.store_conformance.conftest import RACERS, TRIALS

Clients = list[AsyncMongoClient[dict[str, Any]]]
DUPLICATE_KEY = 11000


async def race(calls: list[Any]) -> list[Any]:
    """Start every call at once; exceptions are returned, not raised."""
    start = asyncio.Event()

    async def one(call: Any) -> Any:
        await start.wait()
        return await call()

    tasks = [asyncio.ensure_future(one(c)) for c in calls]
    await asyncio.sleep(0)
    start.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_guarded_find_one_and_update_has_exactly_one_winner_among_8_racing_writers(
    db: AsyncDatabase[dict[str, Any]], racers: Clients
) -> None:
    winners_per_trial = []
    for trial in range(TRIALS):
        await db.jobs.insert_one({"_id": trial, "state": "queued", "version": 0, "owner": None})

        def claim(writer: int, trial: int = trial) -> Any:
            jobs = racers[writer][db.name].jobs
            return lambda: jobs.find_one_and_update(
                {"_id": trial, "state": "queued", "version": 0},
                {"$set": {"state": "active", "owner": writer}, "$inc": {"version": 1}},
                return_document=ReturnDocument.AFTER,
            )

        results = await race([claim(w) for w in range(RACERS)])
        assert not [r for r in results if isinstance(r, BaseException)], results
        winners = [r["owner"] for r in results if r is not None]
        final = await db.jobs.find_one({"_id": trial})
        assert final is not None and final["version"] == 1
        winners_per_trial.append(len(winners))
        assert winners == [final["owner"]], f"trial {trial}: {len(winners)} winners"
    assert winners_per_trial == [1] * TRIALS


async def test_task_store_transition_has_exactly_one_winner_among_8_racing_workers(
    store: TaskStore, mongo_url: str, racers: Clients
) -> None:
    stores = [TaskStore(client, store.tasks.database.name) for client in racers]
    for trial in range(TRIALS):
        task, _ = await store.insert(
            NewTask(type="noop", priority=Priority.HIGH, payload={"t": trial}, max_attempts=3)
        )
        results = await race(
            [
                partial(
                    s.transition, task.id, [TaskState.QUEUED], TaskState.ACTIVE,
                    version=task.version, set_fields={"worker": f"w{w}"},
                )
                for w, s in enumerate(stores)
            ]
        )  # fmt: skip
        assert not [r for r in results if isinstance(r, BaseException)], results
        won = [r for r in results if r is not None]
        assert len(won) == 1, f"trial {trial}: {len(won)} workers started the task"
        final = await store.get(task.id)
        assert final is not None and final.worker == won[0].worker and final.version == 1


async def test_racing_increments_lose_no_update(
    db: AsyncDatabase[dict[str, Any]], racers: Clients
) -> None:
    await db.counters.insert_one({"_id": "c", "n": 0})
    per_writer = 50

    async def bump(writer: int) -> None:
        counters = racers[writer][db.name].counters
        for _ in range(per_writer):
            await counters.update_one({"_id": "c"}, {"$inc": {"n": 1}})

    await asyncio.gather(*(bump(w) for w in range(RACERS)))
    doc = await db.counters.find_one({"_id": "c"})
    assert doc is not None and doc["n"] == RACERS * per_writer


async def test_unique_index_lets_one_of_8_racing_inserts_in_and_refuses_the_rest_with_11000(
    db: AsyncDatabase[dict[str, Any]], racers: Clients
) -> None:
    await db.keys.create_index("idem", unique=True)
    for trial in range(TRIALS):

        def insert(writer: int, trial: int = trial) -> Any:
            keys = racers[writer][db.name].keys
            return lambda: keys.insert_one({"idem": f"k{trial}", "writer": writer})

        results = await race([insert(w) for w in range(RACERS)])
        refused = [r for r in results if isinstance(r, DuplicateKeyError)]
        assert all(r.code == DUPLICATE_KEY for r in refused)
        assert len(refused) == RACERS - 1, f"trial {trial}: {results}"
        assert await db.keys.count_documents({"idem": f"k{trial}"}) == 1


async def test_racing_submissions_with_one_idempotency_key_create_one_task(
    store: TaskStore, racers: Clients
) -> None:
    stores = [TaskStore(client, store.tasks.database.name) for client in racers]
    for trial in range(TRIALS):
        new = NewTask(
            type="noop", priority=Priority.HIGH, payload={"t": trial}, max_attempts=3,
            idempotency_key=f"order-{trial}",
        )  # fmt: skip
        results = await race([partial(s.insert, new) for s in stores])
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert sum(created for _, created in results) == 1, f"trial {trial}"
        assert len({task.id for task, _ in results}) == 1
