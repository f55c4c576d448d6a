"""SAQ (saq.Queue.enqueue and saq.Worker) under the shared protocol.

Library defaults are kept: the queue throttles enqueue to `max_concurrent_ops=20`
Redis operations at a time, and the worker dequeues with a blocking BLMOVE
(`dequeue_timeout=0`), so there is no polling delay to tune.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from saq import Queue, Worker
from saq.types import Context

from bench.competitors.common import (
    QUEUE_NAME,
    Countdown,
    enqueue_all,
    finish_task,
    rates,
    wait_until,
)


async def measure(redis_url: str, jobs: int, concurrency: int) -> dict[str, float]:
    """Enqueue then process `jobs` no-op SAQ jobs; jobs per second for each phase."""
    client = Queue.from_url(redis_url, name=QUEUE_NAME)
    await client.connect()
    try:
        enqueue_s = await enqueue_all(jobs, lambda i: client.enqueue("noop", i=i))
        queued = await client.count("queued")
        if queued != jobs:
            raise RuntimeError(f"expected {jobs} queued SAQ jobs, found {queued}")
    finally:
        await client.disconnect()

    countdown = Countdown(jobs)

    async def noop(ctx: Context, **kwargs: Any) -> None:
        countdown.hit()

    # The worker gets its own Queue (and Redis pool), as a separate process would.
    queue = Queue.from_url(redis_url, name=QUEUE_NAME)
    await queue.connect()
    try:
        worker: Worker[Context] = Worker(queue, functions=[("noop", noop)], concurrency=concurrency)
        started = time.perf_counter()
        task = asyncio.create_task(worker.start())
        try:
            await countdown.wait(task)
            process_s = time.perf_counter() - started
            # Let the last jobs be marked complete before stopping: SAQ's stop
            # cancels whatever is in flight.
            await wait_until(lambda: queue.complete >= jobs, "all SAQ jobs complete")
        finally:
            await worker.stop()
            await finish_task(task)
    finally:
        await queue.disconnect()
    return rates(jobs, enqueue_s, process_s)
