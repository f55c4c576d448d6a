"""A TTL index expires documents, and an index's expiry can be retuned (collMod).

relayq's retention leans on the server's TTL monitor and backs it up with its
own deletes (relayq.recovery.retention): this test says whether the backup is
what keeps the collection bounded on a given server. MongoDB's TTL monitor runs
every 60 s, so this test may wait that long.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from relayq.core.store import now

TTL_MONITOR_WAIT_SECONDS = 150


@pytest.mark.slow
async def test_a_ttl_index_expires_documents_past_their_time(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    await db.docs.create_index("finished_at", expireAfterSeconds=1, name="ttl")
    await db.docs.insert_many(
        [
            {"_id": "old", "finished_at": now() - timedelta(hours=1)},
            {"_id": "unfinished", "finished_at": None},
            {"_id": "future", "finished_at": now() + timedelta(days=1)},
        ]
    )
    deadline = time.monotonic() + TTL_MONITOR_WAIT_SECONDS
    while await db.docs.find_one({"_id": "old"}) is not None:
        assert time.monotonic() < deadline, "the TTL monitor did not expire a document"
        await asyncio.sleep(0.5)
    left = {d["_id"] async for d in db.docs.find({}, {"_id": 1})}
    assert left == {"unfinished", "future"}


async def test_coll_mod_retunes_a_ttl_index(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db.docs.create_index("finished_at", expireAfterSeconds=60, name="ttl")
    await db.command({"collMod": "docs", "index": {"name": "ttl", "expireAfterSeconds": 120}})
    indexes = {i["name"]: i async for i in await db.docs.list_indexes()}
    assert int(indexes["ttl"]["expireAfterSeconds"]) == 120
