"""What the local MongoDB (secantusd-rs) spends per task record, by operation.

`python -m bench.store_cost [--records N] [--batch B] [--in-flight K]` starts a fresh server
(as the tests and `make bench` run it: `--sync-on-commit`, writes with
`w: majority, j: true`) and measures the server process's CPU per record for
the writes of the store path, in batches as the worker makes them: the
group-committed insert, the guarded `update_many` of a start (queued ->
active), the read-back of the started records, and the guarded `update_many`
of a completion. It does so twice: on a collection with only the unique
idempotency index, and with every index `TaskStore` creates, to show what the
indexes cost each state change. The floor it gives is the store's side of
`engine_with_store`: a job costs at least one insert, two updates and one read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pymongo import ASCENDING, AsyncMongoClient

from bench.relayq_bench import cpu_seconds
from relayq.core.priorities import Priority
from relayq.core.store import WRITE_CONCERN, NewTask, TaskStore, _new_doc
from relayq.dev.servers import mongo_server

Write = Callable[[list[dict[str, object]]], Awaitable[object]]


async def _measure(
    url: str, pid: int, records: int, batch: int, indexes: bool, in_flight: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Server CPU per record, and server cores busy, for each write of the store path."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    try:
        store = TaskStore(client, f"cost_{int(indexes)}_{os.getpid()}")
        tasks = store.tasks.with_options(write_concern=WRITE_CONCERN)
        if indexes:
            await store.ensure_indexes()
        else:
            await tasks.create_index([("idem", ASCENDING)], unique=True, name="idem_unique")
        docs = [_new_doc(NewTask("noop", Priority.MEDIUM, {"i": i}, 5)) for i in range(records)]
        chunks = [docs[i : i + batch] for i in range(0, records, batch)]
        costs: dict[str, float] = {}
        cores: dict[str, float] = {}

        async def phase(name: str, op: Write) -> None:
            left = iter(chunks)

            async def writer() -> None:
                for chunk in left:
                    await op(chunk)

            before, started = cpu_seconds(pid), time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(in_flight)))
            used = cpu_seconds(pid) - before
            costs[name] = used / records * 1e6
            cores[name] = used / (time.perf_counter() - started)

        def ids(chunk: list[dict[str, object]]) -> list[object]:
            return [d["_id"] for d in chunk]

        await phase("insert", lambda c: tasks.insert_many(c, ordered=False))
        await phase(
            "start",
            lambda c: tasks.update_many(
                {"_id": {"$in": ids(c)}, "state": {"$in": ["queued"]}, "write_id": {"$ne": "s"}},
                {
                    "$set": {"state": "active", "write_id": "s", "started_at": time.time(),
                             "worker": "w", "run_at": None, "updated_at": time.time()},
                    "$inc": {"version": 1, "attempts": 1},
                },
                hint=[("_id", ASCENDING)],
            ),
        )  # fmt: skip
        await phase("read back", lambda c: tasks.find({"_id": {"$in": ids(c)}}).to_list())
        await phase(
            "complete",
            lambda c: tasks.update_many(
                {"_id": {"$in": ids(c)}, "state": {"$in": ["active"]}, "version": 1},
                {
                    "$set": {"state": "completed", "write_id": "c", "result": {"ok": True},
                             "finished_at": time.time(), "last_error": None,
                             "updated_at": time.time()},
                    "$inc": {"version": 1},
                },
                hint=[("_id", ASCENDING)],
            ),
        )  # fmt: skip
        await client.drop_database(store.tasks.database.name)
        return costs, cores
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_cost", description=__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50, help="records per write (default 50)")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1,
        help="writes of each kind in flight at once (default 1); the server's cores busy "
        "show whether a second one runs beside the first",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="relayq-store-cost-") as tmp:
        server = mongo_server(Path(tmp) / "mongo").start()
        try:
            assert server.process is not None
            url = f"mongodb://127.0.0.1:{server.port}/"
            rows = {
                label: asyncio.run(
                    _measure(
                        url, server.process.pid, args.records, args.batch, indexes, args.in_flight
                    )
                )
                for label, indexes in (("idempotency index only", False), ("every index", True))
            }
        finally:
            server.stop()
    names = list(next(iter(rows.values()))[0])
    print(
        f"server CPU per record (us), {args.records} records in writes of {args.batch}, "
        f"{args.in_flight} in flight"
    )
    print(f"{'indexes':24s}" + "".join(f"{n:>11s}" for n in names) + f"{'per job':>11s}")
    for label, (costs, _) in rows.items():
        cells = "".join(f"{costs[n]:11.1f}" for n in names)
        print(f"{label:24s}{cells}{sum(costs.values()):11.1f}")
    print("server cores busy during each write")
    for label, (_, cores) in rows.items():
        print(f"{label:24s}" + "".join(f"{cores[n]:11.2f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
