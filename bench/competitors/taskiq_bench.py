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

taskiq 0.13 removed `taskiq.compat.model_dump` and `model_validate`, which
taskiq-redis 1.0.x imports at package import time (for its schedule sources and
result backend, which this benchmark does not use). taskiq-redis releases after
1.0 need redis-py 6 while arq needs redis-py < 6, so the lock can only hold
taskiq-redis 1.0.x; `_restore_taskiq_compat` puts back the two helpers, exactly
as taskiq 0.12 defined them for pydantic 2, when they are missing. Constraining
the bench group to `taskiq<0.13` makes it a no-op.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pydantic
import taskiq.compat
from taskiq.receiver import Receiver

from bench.competitors.common import QUEUE_NAME, Countdown, enqueue_all, finish_task, rates

Model = TypeVar("Model", bound=pydantic.BaseModel)


def _model_validate(model_class: type[Model], message: dict[str, Any]) -> Model:
    return model_class.model_validate(message)


def _model_dump(instance: pydantic.BaseModel) -> dict[str, Any]:
    return instance.model_dump(mode="json")


def _restore_taskiq_compat() -> None:
    """Give taskiq.compat the helpers taskiq-redis 1.0.x imports, if it lacks them."""
    if not hasattr(taskiq.compat, "model_validate"):
        taskiq.compat.model_validate = _model_validate  # type: ignore[attr-defined]
    if not hasattr(taskiq.compat, "model_dump"):
        taskiq.compat.model_dump = _model_dump  # type: ignore[attr-defined]


_restore_taskiq_compat()

from taskiq_redis import RedisStreamBroker  # noqa: E402


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
