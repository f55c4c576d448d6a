"""relayq under the shared protocol (bench.competitors.common).

`measure_engine` is the queue layer alone: Queue.enqueue for each job, then one
Worker with a no-op handler, acking through Redis. `measure_with_store` is the
full path: JobService.submit writes each task record to MongoDB before the
enqueue, and the worker's TaskExecutor moves every record queued -> active ->
completed: three store writes per job, each acknowledged with majority and
journal write concern.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace

from bench.competitors.common import Countdown, enqueue_all, rates
from relayq.core.clients import connect_redis, open_clients
from relayq.core.keys import Keys
from relayq.core.priorities import Priority
from relayq.core.queue import Delivery, Message, Queue
from relayq.core.service import JobRequest
from relayq.core.settings import Settings
from relayq.worker.executor import Ack, HandlerDone, Outcome, TaskExecutor
from relayq.worker.runner import Worker, WorkerConfig

PRIORITY = Priority.MEDIUM


class NoopExecutor:
    """Runs every delivery as a no-op and acks it: the queue layer alone."""

    def __init__(self, countdown: Countdown) -> None:
        self.countdown = countdown

    async def execute(
        self, delivery: Delivery, consumer: str, handler_done: HandlerDone = lambda: None
    ) -> Outcome:
        self.countdown.hit()
        return Ack()

    async def give_back(self, delivery: Delivery) -> bool:
        return True


def _config(concurrency: int) -> WorkerConfig:
    return WorkerConfig(
        priority=PRIORITY,
        consumer=f"bench-{uuid.uuid4().hex[:6]}",
        concurrency=concurrency,
        lease_seconds=30,
        max_deliveries=5,
        drain_seconds=5,
    )


async def _process(worker: Worker, countdown: Countdown) -> float:
    started = time.perf_counter()
    task = asyncio.create_task(worker.run())
    await countdown.wait(task)
    elapsed = time.perf_counter() - started
    worker.stop()
    await task
    return elapsed


async def measure_engine(redis_url: str, jobs: int, concurrency: int) -> dict[str, float]:
    """relayq's queue and worker on Redis alone: enqueue_per_s and process_per_s."""
    redis = connect_redis(redis_url)
    try:
        queue = Queue(redis, Keys("bench"))
        await queue.ensure_group(PRIORITY)
        enqueue_s = await enqueue_all(
            jobs, lambda i: queue.enqueue(PRIORITY, Message(f"{i:032x}", "noop"))
        )
        countdown = Countdown(jobs)
        process_s = await _process(
            Worker(queue, NoopExecutor(countdown), _config(concurrency)), countdown
        )
        if (await queue.stats(PRIORITY)).backlog != 0:
            raise RuntimeError("relayq left jobs behind")
        return rates(jobs, enqueue_s, process_s)
    finally:
        await redis.aclose()


class CountingExecutor(TaskExecutor):
    """The real TaskExecutor, counting the completions."""

    countdown: Countdown

    async def execute(
        self, delivery: Delivery, consumer: str, handler_done: HandlerDone = lambda: None
    ) -> Outcome:
        outcome = await super().execute(delivery, consumer, handler_done)
        self.countdown.hit()
        return outcome


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_with_store(
    redis_url: str,
    mongo_url: str,
    jobs: int,
    concurrency: int,
    servers: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """relayq with its MongoDB task store as well: enqueue_per_s and process_per_s.

    Also where the processing time went: CPU microseconds per job of the
    worker (this process) and of each of `servers` (name -> pid), and the
    share of the machine's cores all of them kept busy
    (`process_cpu_us_per_job_<name>`, `process_cpu_busy_share`).
    """
    pids = {"worker": os.getpid(), **(servers or {})}
    settings = replace(
        Settings.from_env({}),
        redis_url=redis_url,
        mongo_url=mongo_url,
        mongo_database=f"bench_{uuid.uuid4().hex[:8]}",
        key_prefix="benchstore",
    )
    async with open_clients(settings) as clients:
        try:
            enqueue_s = await enqueue_all(
                jobs,
                lambda i: clients.service.submit(JobRequest("noop", {"i": i}, priority=PRIORITY)),
            )
            countdown = Countdown(jobs)
            executor = CountingExecutor(
                settings, clients.service.registry, clients.service.lifecycle, clients.queue
            )
            executor.countdown = countdown
            worker = Worker(clients.queue, executor, _config(concurrency))
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            process_s = await _process(worker, countdown)
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            completed = await clients.store.tasks.count_documents({"state": "completed"})
            if completed != jobs:
                raise RuntimeError(f"{completed} of {jobs} tasks completed")
            result = rates(jobs, enqueue_s, process_s)
            result["jobs"] = float(jobs)
            for name, seconds in cpu.items():
                result[f"process_cpu_us_per_job_{name}"] = seconds / jobs * 1e6
            result["process_cpu_busy_share"] = sum(cpu.values()) / (
                process_s * (os.cpu_count() or 1)
            )
            return result
        finally:
            await clients.store.client.drop_database(settings.mongo_database)
