"""Acknowledged writes are durable: relayq's write concern, and a SIGKILL right after an ack.

relayq answers a client (202 with a task id) only after its record's write is
acknowledged with relayq's write concern, and a worker acts on a claim only
after its guarded update is. If the server can lose such a write in a crash, a
task the client was promised is gone, or a transfer that was claimed runs
again. The crash test kills the server the moment an acknowledgement arrives,
while other writes are in flight, so it does not depend on timing luck.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from relayq.core.store import WRITE_CONCERN, connect_mongo
from relayq.dev.servers import mongo_server
from tests.store_conformance.conftest import REMOTE

WRITERS = 16
ROUNDS = 3


async def test_relayq_write_concern_is_accepted_and_acknowledged(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    assert WRITE_CONCERN.document == {"w": "majority", "j": True}
    tasks = db.get_collection("tasks", write_concern=WRITE_CONCERN)
    result = await tasks.insert_one({"_id": "a"})
    assert result.acknowledged
    updated = await tasks.update_one({"_id": "a"}, {"$set": {"x": 1}})
    assert updated.acknowledged and updated.modified_count == 1
    # A write concern the server cannot satisfy is refused, not ignored.
    impossible = db.get_collection("tasks", write_concern=WriteConcern(w=50, wtimeout=1000))
    with pytest.raises(PyMongoError):
        await impossible.insert_one({"_id": "b"})


@pytest.mark.slow
@pytest.mark.skipif(REMOTE, reason="kills the server it writes to: runs on a local server only")
async def test_writes_acknowledged_right_before_a_sigkill_survive_the_restart(
    tmp_path: Path,
) -> None:
    server = mongo_server(tmp_path / "mongo").start()
    try:
        for round_ in range(ROUNDS):
            assert server.process is not None
            load = CrashLoad(server.port, server.process.pid, round_, kill_after=300 + 250 * round_)
            await load.run()
            server.process.wait(10)
            server.start()
            client = connect_mongo(f"mongodb://127.0.0.1:{server.port}/")
            try:
                docs = client["durability"]["docs"]
                found = {d["_id"]: d["state"] async for d in docs.find({"round": round_})}
            finally:
                await client.close()
            lost = [i for i in load.inserted if i not in found]
            assert not lost, f"round {round_}: {len(lost)} of {len(load.inserted)} inserts lost"
            undone = [i for i in load.updated if found.get(i) != "done"]
            assert not undone, f"round {round_}: {len(undone)} of {len(load.updated)} updates lost"
    finally:
        server.stop()


class CrashLoad:
    """WRITERS clients insert, then claim with a guarded update, until `kill_after` acks.

    The acknowledgement that reaches `kill_after` SIGKILLs the server before any
    other coroutine runs: the other writers' writes are in flight on their
    connections. `inserted` and `updated` hold what was acknowledged before that.
    """

    def __init__(self, port: int, pid: int, round_: int, kill_after: int) -> None:
        self.url = f"mongodb://127.0.0.1:{port}/"
        self.pid = pid
        self.round = round_
        self.kill_after = kill_after
        self.inserted: list[str] = []
        self.updated: list[str] = []
        self.killed = False

    def _acked(self, into: list[str], doc_id: str) -> None:
        if self.killed:
            return  # arrived after the kill: not counted
        into.append(doc_id)
        if len(self.inserted) + len(self.updated) >= self.kill_after:
            os.kill(self.pid, signal.SIGKILL)
            self.killed = True

    async def _write(self, client: AsyncMongoClient[dict[str, Any]]) -> None:
        docs = client["durability"].get_collection("docs", write_concern=WRITE_CONCERN)
        while not self.killed:
            doc_id = uuid.uuid4().hex
            try:
                await docs.insert_one({"_id": doc_id, "round": self.round, "state": "new"})
                self._acked(self.inserted, doc_id)
                if self.killed:
                    return
                claimed = await docs.find_one_and_update(
                    {"_id": doc_id, "state": "new"}, {"$set": {"state": "done"}}
                )
                if claimed is not None:
                    self._acked(self.updated, doc_id)
            except PyMongoError:
                if not self.killed:
                    raise

    async def run(self) -> None:
        clients: list[AsyncMongoClient[dict[str, Any]]] = [
            connect_mongo(self.url, timeout_seconds=2) for _ in range(WRITERS)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(self._write(c) for c in clients)), 120)
        finally:
            for client in clients:
                await client.close()
        assert self.killed, "the load ended before the server was killed"
