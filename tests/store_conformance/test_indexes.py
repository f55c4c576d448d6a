"""Every index relayq declares is created as declared, and relayq's queries use them.

On a server that scans the collection for a guarded update, each job costs
more as the collection grows (FerretDB 1.24 on SQLite: 10.6 updates/s at
1,000 records, 1.2/s at 10,000). The queries here are the ones relayq runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from relayq.core.api_keys import Actor, ApiKeys
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.store import FINISHED, OBSOLETE_INDEXES, NewTask, TaskStore, by_state, now
from relayq.recovery.retention import TTL_INDEX, apply_retention
from relayq.recovery.settings import RecoverySettings

DECLARED = {
    "_id_": ({"_id": 1}, False),
    "idem_unique": ({"idem": 1}, True),
    "state_priority_id": ({"state": 1, "priority": 1, "_id": -1}, False),
    "type_id": ({"type": 1, "_id": -1}, False),
    "owner_id": ({"owner": 1, "_id": -1}, False),
    "owner_state_id": ({"owner": 1, "state": 1, "_id": -1}, False),
    "owner_type_id": ({"owner": 1, "type": 1, "_id": -1}, False),
}


async def test_every_index_relayq_declares_exists_as_declared(store: TaskStore) -> None:
    await apply_retention(
        store, RecoverySettings(retention_seconds=3600, idempotency_window_seconds=3600)
    )
    found = {i["name"]: i async for i in await store.tasks.list_indexes()}
    for name, (keys, unique) in DECLARED.items():
        assert name in found, f"index {name} missing: {sorted(found)}"
        assert dict(found[name]["key"]) == keys
        assert bool(found[name].get("unique", False)) is unique
    assert dict(found[TTL_INDEX]["key"]) == {"finished_at": 1}
    assert int(found[TTL_INDEX]["expireAfterSeconds"]) == 3600


async def test_indexes_an_earlier_version_created_are_dropped(store: TaskStore) -> None:
    # What earlier versions declared; state_priority_id serves their queries now.
    await store.tasks.create_index([("state", 1), ("_id", -1)], name="state_id")
    await store.tasks.create_index([("priority", 1), ("state", 1)], name="priority_state")

    await store.ensure_indexes()
    await store.ensure_indexes()  # and again, with nothing left to drop

    found = {i["name"] async for i in await store.tasks.list_indexes()}
    assert not found & set(OBSOLETE_INDEXES), found
    assert set(DECLARED) <= found


# What MongoDB's explain calls a plan that reads an index (IDHACK and EXPRESS_*:
# the fast paths for an _id or unique-key equality in recent versions).
INDEX_STAGES = {"IXSCAN", "IDHACK", "EXPRESS_IXSCAN", "EXPRESS_CLUSTERED_IXSCAN"}


def stages(plan: Any) -> Iterator[str]:
    """Every `stage` named anywhere in an explain document."""
    if isinstance(plan, dict):
        if isinstance(plan.get("stage"), str):
            yield plan["stage"]
        for value in plan.values():
            yield from stages(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from stages(value)


def winning(explain: dict[str, Any]) -> Any:
    planner = explain.get("queryPlanner", explain)
    return planner.get("winningPlan", planner)


QUERIES: dict[str, tuple[dict[str, Any], list[tuple[str, int]] | None]] = {
    "idempotency replay": ({"idem": "order-7"}, None),
    "task by id": ({"_id": "t0000000000000000000000000000007"}, None),
    "listing by state": (by_state([TaskState.FAILED]), [("_id", -1)]),
    "listing by state, next page": (
        {**by_state([TaskState.FAILED]), "_id": {"$lt": "t9"}}, [("_id", -1)],
    ),
    "listing by priority": (by_state(TaskState, [Priority.HIGH]), [("_id", -1)]),
    "listing by state and priority": (
        by_state([TaskState.QUEUED], [Priority.HIGH]), [("_id", -1)],
    ),
    "listing by type": ({"type": "mail"}, [("_id", -1)]),
    "a client's listing": ({"owner": "client-a"}, [("_id", -1)]),
    "a client's listing, next page": (
        {"owner": "client-a", "_id": {"$lt": "t9"}}, [("_id", -1)],
    ),
    "a client's listing by state": ({"owner": "client-a", "state": "queued"}, [("_id", -1)]),
    "a client's listing by type": ({"owner": "client-a", "type": "mail"}, [("_id", -1)]),
    "counts per priority and state": ({"state": "failed", "priority": "high"}, None),
    "counts per state": ({"state": "failed"}, None),
    "recovery: records not in Redis": (
        by_state([TaskState.PENDING, TaskState.QUEUED, TaskState.RETRYING]), [("_id", 1)],
    ),
    "retention: finished long ago": (
        {"state": {"$in": FINISHED}, "finished_at": {"$lt": "RECENT"}}, None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", QUERIES)
async def test_relayq_query_is_served_by_an_index(store: TaskStore, name: str) -> None:
    await apply_retention(
        store, RecoverySettings(retention_seconds=3600, idempotency_window_seconds=3600)
    )
    await store.insert_many(
        [
            NewTask(
                type=f"t{i % 5}",
                priority=Priority.HIGH,
                payload={"i": i},
                max_attempts=1,
                owner=f"client-{'abc'[i % 3]}",
            )
            for i in range(200)
        ]
    )
    query, sort = QUERIES[name]
    if query.get("finished_at") == {"$lt": "RECENT"}:
        query = {**query, "finished_at": {"$lt": now() - timedelta(hours=1)}}
    cursor = store.tasks.find(query)
    if sort:
        cursor = cursor.sort(sort)
    explain = await cursor.explain()
    used = set(stages(winning(explain)))
    assert used, f"no plan stages in {explain}"
    assert "COLLSCAN" not in used, f"{name}: {used}"
    assert used & {"IXSCAN", "IDHACK", "EXPRESS_IXSCAN", "EXPRESS_CLUSTERED_IXSCAN"}, (
        f"{name}: {used}"
    )
    if sort:  # in index order, not sorted after the read: pages stay cheap however many match
        assert "SORT" not in used, f"{name}: {used}"


async def test_a_guarded_transition_is_served_by_the_id_index(store: TaskStore) -> None:
    task, _ = await store.insert(
        NewTask(type="noop", priority=Priority.HIGH, payload={}, max_attempts=1)
    )
    explain = await store.tasks.database.command(
        {
            "explain": {
                "findAndModify": store.tasks.name,
                "query": {"_id": task.id, "state": {"$in": [TaskState.QUEUED.value]}, "version": 0},
                "update": {"$set": {"state": TaskState.ACTIVE.value}},
            },
            "verbosity": "queryPlanner",
        }
    )
    used = set(stages(winning(explain)))
    assert "COLLSCAN" not in used and used & INDEX_STAGES, used


async def test_a_batched_transition_and_its_read_back_are_served_by_the_id_index(
    store: TaskStore,
) -> None:
    # TaskStore.transition_many: one guarded update_many pinned to _id, then a read by _id.
    tasks = [
        (
            await store.insert(
                NewTask(type="noop", priority=Priority.HIGH, payload={}, max_attempts=1)
            )
        )[0]
        for _ in range(20)
    ]
    ids = [t.id for t in tasks]
    guard = {"_id": {"$in": ids}, "state": {"$in": [TaskState.QUEUED.value]},
             "write_id": {"$ne": "w"}}  # fmt: skip
    explain = await store.tasks.database.command(
        {
            "explain": {
                "update": store.tasks.name,
                "updates": [
                    {
                        "q": guard,
                        "u": {"$set": {"state": TaskState.ACTIVE.value}},
                        "multi": True,
                        "hint": {"_id": 1},
                    }
                ],
            },
            "verbosity": "queryPlanner",
        }
    )
    used = set(stages(winning(explain)))
    assert "COLLSCAN" not in used and used & INDEX_STAGES, used
    assert '"indexName": "_id_"' in json.dumps(winning(explain), default=str), explain
    read_back = set(stages(winning(await store.tasks.find({"_id": {"$in": ids}}).explain())))
    assert "COLLSCAN" not in read_back and read_back & INDEX_STAGES, read_back


# -- client API keys and their audit trail (relayq.core.api_keys) -------------------

KEY_INDEXES = {
    "api_keys": {
        "_id_": {"_id": 1},
        "key_id": {"keyId": -1},
        "client_key_id": {"client": 1, "keyId": -1},
    },
    "audit": {
        "_id_": {"_id": 1},
        "key_id": {"keyId": 1, "_id": -1},
        "client_id": {"client": 1, "_id": -1},
    },
}
KEY_ID = "key_" + "0" * 28
# name -> (collection, query, sort, the index that must serve it; None: any, the _id fast paths)
KEY_QUERIES: dict[str, tuple[str, dict[str, Any], list[tuple[str, int]] | None, str | None]] = {
    "authentication: a key by its hash": ("api_keys", {"_id": "ab" * 32}, None, None),
    "a key by its id": ("api_keys", {"keyId": KEY_ID}, None, None),
    "the keys": ("api_keys", {"keyId": {"$gt": ""}}, [("keyId", -1)], "key_id"),
    "the keys, next page": ("api_keys", {"keyId": {"$lt": KEY_ID}}, [("keyId", -1)], "key_id"),
    "a client's keys": ("api_keys", {"keyId": {"$gt": ""}, "client": "client-a"},
                        [("keyId", -1)], "client_key_id"),
    "the audit": ("audit", {}, [("_id", -1)], "_id_"),
    "the audit, next page": ("audit", {"_id": {"$lt": "f" * 32}}, [("_id", -1)], "_id_"),
    "a key's audit": ("audit", {"keyId": KEY_ID}, [("_id", -1)], "key_id"),
    "a client's audit": ("audit", {"client": "client-a"}, [("_id", -1)], "client_id"),
}  # fmt: skip


async def _some_keys(store: TaskStore) -> ApiKeys:
    keys = ApiKeys(store.tasks.database)
    actor = Actor("test")
    for i in range(60):
        issued = await keys.create(f"client-{'abc'[i % 3]}", f"key {i}", actor)
        if i % 4 == 0:
            await keys.revoke(issued.key.key_id, "test", actor)
    return keys


async def test_every_key_index_relayq_declares_exists_as_declared(store: TaskStore) -> None:
    for collection, declared in KEY_INDEXES.items():
        found = {i["name"]: i async for i in await store.tasks.database[collection].list_indexes()}
        for name, keys in declared.items():
            assert name in found, f"{collection}: index {name} missing: {sorted(found)}"
            assert dict(found[name]["key"]) == keys


@pytest.mark.parametrize("name", KEY_QUERIES)
async def test_key_query_is_served_by_an_index(store: TaskStore, name: str) -> None:
    await _some_keys(store)
    collection, query, sort, index = KEY_QUERIES[name]
    cursor = store.tasks.database[collection].find(query)
    if sort:
        cursor = cursor.sort(sort)
    plan = winning(await cursor.explain())
    used = set(stages(plan))
    assert "COLLSCAN" not in used and used & INDEX_STAGES, f"{name}: {used}"
    if index is not None:  # not merely some index (the _id index serves every sort by _id)
        assert f'"indexName": "{index}"' in json.dumps(plan, default=str), f"{name}: {plan}"


@pytest.mark.parametrize(
    "guard",
    [
        {"keyId": KEY_ID, "revokedAt": None},  # revoke
        {"_id": "ab" * 32, "revokedAt": None, "rotatedTo": None, "expiresAt": None},  # rotate
    ],
    ids=["revoke", "rotate"],
)
async def test_a_guarded_key_change_is_served_by_an_index(
    store: TaskStore, guard: dict[str, Any]
) -> None:
    keys = await _some_keys(store)
    explain = await store.tasks.database.command(
        {
            "explain": {
                "findAndModify": keys.keys.name,
                "query": guard,
                "update": {"$set": {"revokedAt": now()}},
            },
            "verbosity": "queryPlanner",
        }
    )
    used = set(stages(winning(explain)))
    assert "COLLSCAN" not in used and used & INDEX_STAGES, used
