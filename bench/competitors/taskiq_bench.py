"""taskiq with taskiq-redis's RedisStreamBroker under the shared protocol.

RedisStreamBroker is the broker taskiq-redis documents first; like relayq it
keeps jobs in a Redis stream read through a consumer group and acknowledges each
one. Enqueue is `task.kiq(...)`; the worker is taskiq's `Receiver`, built the
way `taskiq worker` builds it (thread pool executor, CLI defaults) apart from
`max_async_tasks`, which is the benchmark's concurrency. No result backend is
configured (taskiq's default), so nothing is stored per job.

The client and the worker use separate broker objects, as separate processes
would. The client's `startup()` creates the consumer group before the first
enqueue: the stream broker creates it at `$`, so jobs added earlier would never
be delivered.

The bench group pins taskiq below 0.13: taskiq 0.13 removed helpers from
`taskiq.compat` that taskiq-redis 1.0.x imports, and later taskiq-redis releases
need redis-py 6 while arq needs redis-py below 6.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

from bench.competitors.common import QUEUE_NAME, Countdown, enqueue_all, finish_task, rates


def _broker(redis_url: str) -> RedisStreamBroker:
    return RedisStreamBroker(url=redis_url, queue_name=QUEUE_NAME)


async def measure(redis_url: str, jobs: int, concurrency: int) -> dict[str, float]:
    """Enqueue then process `jobs` no-op taskiq jobs; jobs per second for each phase."""
    countdown = Countdown(jobs)

    async def noop(i: int) -> None:
        countdown.hit()

    client = _broker(redis_url)
    task = client.register_task(noop, task_name="noop")
    await client.startup()
    try:
        enqueue_s = await enqueue_all(jobs, lambda i: task.kiq(i))
    finally:
        await client.shutdown()

    broker = _broker(redis_url)
    broker.register_task(noop, task_name="noop")
    broker.is_worker_process = True
    stop = asyncio.Event()
    with ThreadPoolExecutor() as executor:
        receiver = Receiver(broker=broker, executor=executor, max_async_tasks=concurrency)
        started = time.perf_counter()
        listening = asyncio.create_task(receiver.listen(stop))
        try:
            await countdown.wait(listening)
            process_s = time.perf_counter() - started
        finally:
            # The receiver stops fetching and waits for the jobs it started.
            stop.set()
            await finish_task(listening)
            await broker.shutdown()
    return rates(jobs, enqueue_s, process_s)
