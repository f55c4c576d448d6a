"""The store conformance suite: what relayq relies on MongoDB for, checked on a server.

Every exactly-once promise in relayq rests on these behaviours, so the tests
of the rest of relayq prove something only on a server that passes this suite.
It runs against the local stand-in in `make test`, and against any server named
by RELAYQ_TEST_MONGO_URL (run it against your own replica set:
`RELAYQ_TEST_MONGO_URL=mongodb://... make test PYTEST_ARGS=tests/store_conformance`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from relayq.core.store import TaskStore, connect_mongo

REMOTE = bool(os.environ.get("RELAYQ_TEST_MONGO_URL"))
RACERS = 8
TRIALS = 50


@pytest.fixture
async def mongo(mongo_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client = connect_mongo(mongo_url)
    yield client
    await client.close()


@pytest.fixture
async def db(
    mongo: AsyncMongoClient[dict[str, Any]],
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    name = f"conf_{uuid.uuid4().hex[:12]}"
    yield mongo[name]
    await mongo.drop_database(name)


@pytest.fixture
async def store(
    mongo: AsyncMongoClient[dict[str, Any]], db: AsyncDatabase[dict[str, Any]]
) -> TaskStore:
    store = TaskStore(mongo, db.name)
    await store.ensure_indexes()
    return store


@pytest.fixture
async def racers(mongo_url: str) -> AsyncIterator[list[AsyncMongoClient[dict[str, Any]]]]:
    """One client (so one connection) per racing writer, each connected before the race."""
    clients = [connect_mongo(mongo_url) for _ in range(RACERS)]
    for client in clients:
        await client.admin.command("ping")
    yield clients
    for client in clients:
        await client.close()
