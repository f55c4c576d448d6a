"""arq (ArqRedis.enqueue_job and arq.worker.Worker) under the shared protocol.

One setting differs from arq's defaults: `poll_delay`. An arq worker does not
block on Redis; it polls the queue's sorted set, starts jobs for its free slots,
then sleeps out the rest of `poll_delay` (0.5 s by default), so slots that free
up during the sleep stay idle until the next poll. On the benchmark machine the
default processed about 30% fewer jobs per second than `POLL_DELAY_S`; 0.01 to
0.1 s were all alike within noise. (It must stay above zero: with 0 the
poll loop never yields to the event loop while every slot is busy.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq.connections import RedisSettings, create_pool
from arq.worker import Worker, func

from bench.competitors.common import (
    QUEUE_NAME,
    Countdown,
    enqueue_all,
    finish_task,
    rates,
    wait_until,
)

POLL_DELAY_S = 0.05
"""Seconds between the worker's queue polls (arq's default is 0.5)."""

ARQ_QUEUE = f"arq:{QUEUE_NAME}"


async def measure(redis_url: str, jobs: int, concurrency: int) -> dict[str, float]:
    """Enqueue then process `jobs` no-op arq jobs; jobs per second for each phase."""
    settings = RedisSettings.from_dsn(redis_url)
    client = await create_pool(settings, default_queue_name=ARQ_QUEUE)
    try:
        enqueue_s = await enqueue_all(jobs, lambda i: client.enqueue_job("noop", i))
        queued = await client.zcard(ARQ_QUEUE)
        if queued != jobs:
            raise RuntimeError(f"expected {jobs} queued arq jobs, found {queued}")
    finally:
        await client.aclose(close_connection_pool=True)

    countdown = Countdown(jobs)

    async def noop(ctx: dict[str, Any], i: int) -> None:
        countdown.hit()

    # The worker opens its own pool from the settings, as a separate process would.
    worker = Worker(
        functions=[func(noop, name="noop")],
        queue_name=ARQ_QUEUE,
        redis_settings=settings,
        max_jobs=concurrency,
        poll_delay=POLL_DELAY_S,
        handle_signals=False,
    )
    started = time.perf_counter()
    task = asyncio.create_task(worker.async_run())
    try:
        await countdown.wait(task)
        process_s = time.perf_counter() - started
        # arq's close cancels the job tasks still running, so let them record
        # their results first.
        await wait_until(
            lambda: (
                worker.jobs_complete >= jobs and all(job.done() for job in worker.tasks.values())
            ),
            "all arq jobs complete",
        )
    finally:
        await worker.close()
        await finish_task(task)
    return rates(jobs, enqueue_s, process_s)
