"""The worker loop for one priority: claim in batches, run concurrently, ack.

One fetch loop claims as many jobs as there are free slots; when the stream is
empty it blocks on XREAD until a new entry arrives or the next delayed job is
due. A slot is a running handler: it frees when the handler returns, while the
outcome's store write and ack are still under way, so the next batch's claim
and start write overlap the last one's finishing write rather than wait for it.
Jobs finishing that way are bounded by the concurrency too.

Side loops extend the leases of running and finishing jobs, take over claims
left by dead workers, and publish the backlog gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import Counter
from redis.exceptions import RedisError

from relayq.core.priorities import Priority
from relayq.core.queue import Delivery, Queue
from relayq.core.telemetry import (
    IN_FLIGHT,
    RECLAIMED,
    init_worker_metrics,
    log_event,
    refresh_queue_gauges,
)
from relayq.worker.executor import Ack, Executor, RetryIn

log = logging.getLogger("relayq.worker")

PAUSED_POLL_SECONDS = 0.5
IDLE_BLOCK_SECONDS = 1.0
ERROR_BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)
BACKLOG_PERIOD_SECONDS = 5.0

# Failed Redis calls of the fetch loop; each is logged and retried with backoff
# (a Sentinel failover shows here as a short burst, then none).
REDIS_ERRORS = Counter(
    "relayq_worker_redis_errors_total",
    "Redis calls of the worker's fetch loop that failed and were retried after a backoff.",
    ["priority", "operation"],
)

# Told about deliveries removed as poison, to dead-letter their tasks.
PoisonHandler = Callable[[Delivery], Awaitable[None]]


@dataclass
class WorkerConfig:
    """How one worker process runs.

    Attributes:
        priority: the queue it serves.
        consumer: its consumer name in the group; unique per process.
        concurrency: jobs run at once.
        lease_seconds: a claim idle this long may be taken over by others.
        max_deliveries: a job delivered more often than this is poison.
        drain_seconds: on stop, how long in-flight jobs may take to finish.
    """

    priority: Priority
    consumer: str
    concurrency: int
    lease_seconds: float
    max_deliveries: int
    drain_seconds: float


@dataclass
class WorkerCounters:
    """What this worker did since it started."""

    claimed: int = 0
    acked: int = 0
    retried: int = 0
    reclaimed: int = 0
    poison: int = 0
    given_back: int = 0
    errors: int = 0
    last_error: str | None = field(default=None)


class Worker:
    """Runs one priority's jobs until `stop()`; then drains within the bound."""

    def __init__(
        self,
        queue: Queue,
        executor: Executor,
        config: WorkerConfig,
        poison_handler: PoisonHandler | None = None,
    ) -> None:
        self.queue = queue
        self.executor = executor
        self.config = config
        self.poison_handler = poison_handler
        self.counters = WorkerCounters()
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        # Claimed and not yet acked or given back: leases are extended for these.
        self._running: dict[str, tuple[Delivery, asyncio.Task[None]]] = {}
        # Of those, the ones whose handler has not returned yet: the slots in use.
        self._handlers: set[str] = set()
        self._acks: list[str] = []
        self._ack_wanted = asyncio.Event()
        self._gauge = IN_FLIGHT.labels(priority=config.priority.value)
        init_worker_metrics(config.priority, config.concurrency)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def _free_slots(self) -> int:
        """Handlers that may start now: free slots, and at most `concurrency` finishing."""
        cfg = self.config
        return min(cfg.concurrency - len(self._handlers), 2 * cfg.concurrency - len(self._running))

    def stop(self) -> None:
        """Stop claiming; `run` returns once in-flight work drained or was given back."""
        self._stopping.set()

    async def run(self) -> None:
        cfg = self.config
        await self._start_up()
        log_event(
            log,
            logging.INFO,
            "worker started",
            priority=cfg.priority.value,
            consumer=cfg.consumer,
            concurrency=cfg.concurrency,
        )
        side = [
            asyncio.create_task(self._ack_loop(), name="acks"),
            asyncio.create_task(self._lease_loop(), name="leases"),
            asyncio.create_task(self._reclaim_loop(), name="reclaim"),
            asyncio.create_task(self._backlog_loop(), name="backlog"),
        ]
        try:
            await self._fetch_loop()
            await self._drain()
        finally:
            for task in side[1:]:
                task.cancel()
            self._stopping.set()
            self._ack_wanted.set()
            await asyncio.gather(*side, return_exceptions=True)
            await self._flush_acks()
            self._gauge.set(len(self._handlers))
            log_event(
                log,
                logging.INFO,
                "worker stopped",
                priority=cfg.priority.value,
                consumer=cfg.consumer,
                **{k: v for k, v in vars(self.counters).items() if v},
            )

    async def _start_up(self) -> None:
        """Create the group, take over what a crashed predecessor held; wait out Redis outages."""
        failures = 0
        while not self._stopping.is_set():
            try:
                await self.queue.ensure_group(self.config.priority)
                await self._reclaim()
                return
            except (RedisError, OSError) as exc:
                failures += 1
                await self._note_error("start", exc, failures)

    # -- claiming -----------------------------------------------------------

    async def _fetch_loop(self) -> None:
        cfg = self.config
        failures = 0
        while not self._stopping.is_set():
            # Once per turn rather than per job: a scrape sees it within one claim.
            self._gauge.set(len(self._handlers))
            free = self._free_slots()
            if free <= 0:
                self._slot_free.clear()
                await self._until(self._slot_free.wait(), None)
                continue
            try:
                claim = await self.queue.claim(cfg.priority, cfg.consumer, free)
            except (RedisError, OSError) as exc:
                failures += 1
                await self._note_error("claim", exc, failures)
                continue
            if failures:
                log_event(
                    log, logging.INFO, "redis reachable again",
                    priority=cfg.priority.value, failed_calls=failures,
                )  # fmt: skip
                failures = 0
            if claim.paused:
                await self._until(self._stopping.wait(), PAUSED_POLL_SECONDS)
                continue
            if claim.deliveries:
                self.counters.claimed += len(claim.deliveries)
                for delivery in claim.deliveries:
                    self._start(delivery)
                continue
            timeout = IDLE_BLOCK_SECONDS
            if claim.next_due_ms is not None:
                timeout = min(timeout, max(0.005, claim.next_due_ms / 1000 - time.time()))
            try:
                await self._until(
                    self.queue.wait_for_work(cfg.priority, claim, timeout), timeout + 1
                )
            except (RedisError, OSError) as exc:
                # A blocking read cut by a failover: back off, then claim again,
                # which reconnects to whichever server is master now.
                failures += 1
                await self._note_error("wait", exc, failures)

    async def _until(self, awaitable: Awaitable[object], timeout: float | None) -> None:
        """Await `awaitable` until it finishes, the timeout passes, or stop is asked."""
        waiter = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter in done:
                waiter.result()
        finally:
            for fut in (waiter, stopper):
                if not fut.done():
                    fut.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(waiter, stopper, return_exceptions=True)

    async def _note_error(self, operation: str, exc: BaseException, failures: int) -> None:
        self.counters.errors += 1
        self.counters.last_error = f"{operation} failed: {exc}"
        REDIS_ERRORS.labels(priority=self.config.priority.value, operation=operation).inc()
        log_event(
            log, logging.WARNING, f"{operation} failed", priority=self.config.priority.value,
            error=f"{type(exc).__name__}: {exc}", consecutive_failures=failures,
        )  # fmt: skip
        pause = ERROR_BACKOFF_SECONDS[min(failures, len(ERROR_BACKOFF_SECONDS)) - 1]
        await self._until(self._stopping.wait(), pause)

    # -- running ------------------------------------------------------------

    def _start(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._execute(delivery))
        self._running[delivery.entry_id] = (delivery, task)
        self._handlers.add(delivery.entry_id)

    def _handler_done(self, entry_id: str) -> None:
        if entry_id in self._handlers:
            self._handlers.discard(entry_id)
            self._slot_free.set()

    async def _execute(self, delivery: Delivery) -> None:
        entry_id = delivery.entry_id
        try:
            outcome = await self.executor.execute(
                delivery, self.config.consumer, lambda: self._handler_done(entry_id)
            )
            if isinstance(outcome, Ack):
                self._acks.append(delivery.entry_id)
                self._ack_wanted.set()
            elif isinstance(outcome, RetryIn):
                await self.queue.retry_later(delivery, outcome.seconds)
                self.counters.retried += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Store or Redis trouble: leave the claim; its lease runs out and
            # another worker (or this one) takes it over. Nothing is lost.
            self.counters.errors += 1
            log_event(
                log,
                logging.ERROR,
                "job left for reclaim after an infrastructure error",
                task_id=delivery.message.task_id,
                priority=delivery.priority.value,
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            self._running.pop(entry_id, None)
            self._handlers.discard(entry_id)
            self._slot_free.set()

    async def _ack_loop(self) -> None:
        # Acks of jobs that finish together go in one script call.
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            await self._flush_acks()
            self._gauge.set(len(self._handlers))
            if self._stopping.is_set() and not self._running:
                return

    async def _flush_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                self.counters.acked += await self.queue.ack(self.config.priority, batch)
            except (RedisError, OSError) as exc:
                # Unacked jobs are redelivered after the lease and dropped by the
                # state guard, since their tasks are already finished.
                self.counters.errors += 1
                log_event(log, logging.WARNING, "ack failed", error=str(exc), entries=len(batch))
                return

    async def _drain(self) -> None:
        if not self._running:
            return
        cfg = self.config
        log_event(
            log,
            logging.INFO,
            "draining",
            priority=cfg.priority.value,
            in_flight=len(self._running),
            bound_s=cfg.drain_seconds,
        )
        tasks = [t for _, t in self._running.values()]
        _, pending = await asyncio.wait(tasks, timeout=cfg.drain_seconds)
        if not pending:
            return
        abandoned = [d for d, t in list(self._running.values()) if t in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for delivery in abandoned:
            try:
                # Put back at once rather than wait out the lease; if the task
                # could not be released, its claim stays for reclaim instead.
                if await self.executor.give_back(delivery):
                    await self.queue.retry_later(delivery, 0)
                    self.counters.given_back += 1
            except Exception as exc:  # left for reclaim after the lease
                log_event(
                    log, logging.WARNING, "give back failed", error=str(exc),
                    task_id=delivery.message.task_id,
                )  # fmt: skip

    # -- leases and reclaim --------------------------------------------------

    async def _lease_loop(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.lease_seconds / 3)
            ids = list(self._running)
            if not ids:
                continue
            try:
                await self.queue.extend(cfg.priority, cfg.consumer, ids)
            except (RedisError, OSError) as exc:
                log_event(log, logging.WARNING, "lease extension failed", error=str(exc))

    async def _reclaim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 2)
            if self._stopping.is_set():
                return
            try:
                await self._reclaim()
            except (RedisError, OSError) as exc:
                log_event(log, logging.WARNING, "reclaim failed", error=str(exc))

    async def _reclaim(self) -> None:
        cfg = self.config
        free = max(0, self._free_slots())
        if free == 0:
            return
        result = await self.queue.reclaim(
            cfg.priority, cfg.consumer, cfg.lease_seconds, free, cfg.max_deliveries
        )
        for delivery in result.poison:
            self.counters.poison += 1
            if self.poison_handler is not None:
                await self.poison_handler(delivery)
        if result.deliveries:
            RECLAIMED.labels(priority=cfg.priority.value).inc(len(result.deliveries))
            self.counters.reclaimed += len(result.deliveries)
            log_event(
                log,
                logging.WARNING,
                "reclaimed claims of a dead worker",
                priority=cfg.priority.value,
                count=len(result.deliveries),
                task_ids=[d.message.task_id for d in result.deliveries],
            )
            for delivery in result.deliveries:
                self._start(delivery)

    async def _backlog_loop(self) -> None:
        # Backlog, oldest waiting and oldest in-flight ages of this priority.
        while True:
            with contextlib.suppress(RedisError, OSError):
                await refresh_queue_gauges(self.queue, [self.config.priority])
            await asyncio.sleep(BACKLOG_PERIOD_SECONDS)
