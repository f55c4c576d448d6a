"""What recovery's membership check costs: one scan of a priority's stream and delayed set.

`python -m bench.recovery_scan [--entries 50000]` starts its own redis-server,
fills one priority with `entries` stream entries (half of them delivered, so
in the pending list) and a fifth as many delayed jobs, then times the scan
into a Python set, and one `redispatch.lua` call re-checking 500 candidates
against a stream tail of 1,000 entries added after the scan began.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from relayq.core.clients import connect_redis
from relayq.core.ids import new_task_id
from relayq.core.keys import Keys
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue, RecoveryQueue
from relayq.dev.servers import redis_server

BATCH = 5000


async def measure(port: int, entries: int) -> dict[str, float]:
    redis = connect_redis(f"redis://127.0.0.1:{port}/0")
    queue = Queue(redis, Keys())
    p = Priority.BATCH
    await queue.ensure_group(p)
    for i in range(0, entries, BATCH):
        n = min(BATCH, entries - i)
        await queue.enqueue_many(p, [Message(new_task_id(), "noop") for _ in range(n)])
    await queue.claim(p, "w", entries // 2)
    delayed = entries // 5
    for i in range(0, delayed, BATCH):
        n = min(BATCH, delayed - i)
        await queue.schedule(p, [(Message(new_task_id(), "noop"), 3600) for _ in range(n)])

    scans = []
    for _ in range(5):
        t0 = time.perf_counter()
        found = await RecoveryQueue(queue).presence(p)
        scans.append(time.perf_counter() - t0)
    assert len(found.task_ids) == entries + delayed
    await queue.enqueue_many(p, [Message(new_task_id(), "noop") for _ in range(1000)])
    jobs = [(Message(new_task_id(), "noop"), -1) for _ in range(500)]
    t0 = time.perf_counter()
    added = await RecoveryQueue(queue).redispatch(p, found.since_id, jobs)
    check = time.perf_counter() - t0
    assert len(added) == 500
    info = await redis.info("memory")
    await redis.aclose()
    return {
        "entries": entries,
        "delayed": delayed,
        "scan_s_median": statistics.median(scans),
        "redispatch_500_s": check,
        "redis_used_mb": info["used_memory"] / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = redis_server(Path(tmp)).start()
        try:
            result = asyncio.run(measure(server.port, args.entries))
        finally:
            server.stop()
    for name, value in result.items():
        print(f"{name:>18}: {value:.4f}" if isinstance(value, float) else f"{name:>18}: {value}")


if __name__ == "__main__":
    main()
