"""A slot is a running handler: it frees when the handler returns, not when the
outcome's write does, so the next claim overlaps the last one's finishing write;
jobs finishing that way are bounded by the concurrency as well."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY

from relayq.core.clients import Clients
from relayq.core.priorities import Priority
from relayq.core.queue import Delivery, Message
from relayq.worker.executor import Ack, HandlerDone, Outcome
from relayq.worker.runner import Worker, WorkerConfig
from tests.conftest import wait_until

CONCURRENCY = 3
JOBS = 20


class SlowWrites:
    """Handlers that return at once, then finishing writes that wait for `writes_open`."""

    def __init__(self) -> None:
        self.handlers_running = 0
        self.most_handlers = 0
        self.finishing = 0
        self.most_finishing = 0
        self.finished = 0
        self.handler_gate = asyncio.Event()
        self.writes_open = asyncio.Event()

    async def execute(
        self, delivery: Delivery, consumer: str, handler_done: HandlerDone = lambda: None
    ) -> Outcome:
        self.handlers_running += 1
        self.most_handlers = max(self.most_handlers, self.handlers_running)
        await self.handler_gate.wait()
        self.handlers_running -= 1
        handler_done()
        self.finishing += 1
        self.most_finishing = max(self.most_finishing, self.finishing)
        await self.writes_open.wait()
        self.finishing -= 1
        self.finished += 1
        return Ack()

    async def give_back(self, delivery: Delivery) -> bool:
        return True


def holds(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


def config() -> WorkerConfig:
    return WorkerConfig(
        priority=Priority.LOW, consumer="slots-1", concurrency=CONCURRENCY,
        lease_seconds=30, max_deliveries=5, drain_seconds=5,
    )  # fmt: skip


async def test_a_returned_handler_frees_its_slot_before_its_write_finishes(
    clients: Clients,
) -> None:
    queue = clients.queue
    await queue.ensure_group(Priority.LOW)
    for i in range(JOBS):
        await queue.enqueue(Priority.LOW, Message(f"{i:032x}", "noop"))
    executor = SlowWrites()
    worker = Worker(queue, executor, config())
    run = asyncio.create_task(worker.run())
    try:
        # Handlers are held: only `concurrency` jobs are claimed.
        await wait_until(holds(lambda: executor.handlers_running == CONCURRENCY), 10)
        await asyncio.sleep(0.2)
        assert worker.in_flight == CONCURRENCY
        # Handlers return, writes are held: the freed slots take new jobs at
        # once, until `concurrency` more are finishing and the slots are full again.
        executor.handler_gate.set()
        await wait_until(holds(lambda: executor.finishing == 2 * CONCURRENCY), 10)
        await asyncio.sleep(0.2)
        assert executor.finishing == 2 * CONCURRENCY
        assert worker.in_flight == 2 * CONCURRENCY
        assert executor.finished == 0
        # The in-flight gauge counts running handlers, so it never passes the slots.
        running = REGISTRY.get_sample_value("relayq_jobs_in_flight", {"priority": "low"})
        assert running is not None and running <= CONCURRENCY
        executor.writes_open.set()
        await wait_until(holds(lambda: executor.finished == JOBS), 10)
        await wait_until(holds(lambda: worker.counters.acked == JOBS), 10)
    finally:
        worker.stop()
        await run
    assert executor.most_handlers <= CONCURRENCY
    assert executor.most_finishing <= 2 * CONCURRENCY
    assert (await queue.stats(Priority.LOW)).backlog == 0
