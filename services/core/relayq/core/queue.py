"""Dispatch on Redis: one stream and consumer group per priority.

Redis only dispatches; MongoDB holds the truth (relayq.core.store). A message
carries just the task id and type; everything else is read from the task record.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from relayq.core.batching import Batcher
from relayq.core.keys import CONSUMER_GROUP, Keys
from relayq.core.presence import Presence, scan
from relayq.core.priorities import Priority
from relayq.core.scripts import Scripts

PROMOTE_LIMIT = 1000
# Auto-pipelining of `enqueue`: most XADDs in one pipeline, pipelines in flight at once.
ENQUEUE_PIPELINE_MAX = 1000
ENQUEUE_PIPELINES_IN_FLIGHT = 2


@dataclass(frozen=True)
class Message:
    """What the queue carries for one job: the task id and its type."""

    task_id: str
    type: str

    @property
    def member(self) -> str:
        """The delayed-set member for this message."""
        return f"{self.task_id}|{self.type}"


@dataclass(frozen=True)
class Delivery:
    """A message handed to a worker.

    Attributes:
        priority: the queue it came from.
        entry_id: its stream entry id; its ms part is when it became ready.
        message: task id and type.
        deliveries: how many times it has been handed out, this time included.
    """

    priority: Priority
    entry_id: str
    message: Message
    deliveries: int = 1

    @property
    def ready_ms(self) -> int:
        return int(self.entry_id.split("-", 1)[0])


@dataclass(frozen=True)
class Claim:
    """The result of one claim.

    Attributes:
        paused: the priority is paused; nothing was claimed.
        deliveries: what was claimed.
        last_entry_id: newest stream entry when nothing was claimed, to block on.
        next_due_ms: due time of the earliest delayed job, or None.
        last_wake_id: newest wake entry when nothing was claimed, to block on.
    """

    paused: bool
    deliveries: list[Delivery]
    last_entry_id: str
    next_due_ms: int | None
    last_wake_id: str = "0-0"


@dataclass(frozen=True)
class QueueStats:
    """Numbers of one priority's queue, read atomically.

    Attributes:
        waiting: in the stream, not yet delivered.
        active: delivered and not acknowledged (in flight).
        delayed: in the delayed set, due or not.
        due: delayed jobs whose time has come.
        paused: claiming is stopped.
        oldest_waiting_age_seconds: age of the oldest undelivered job, 0 when none.
    """

    priority: Priority
    waiting: int
    active: int
    delayed: int
    due: int
    paused: bool
    oldest_waiting_age_seconds: float

    @property
    def backlog(self) -> int:
        """What the operator scales on: undelivered + in flight + due delayed."""
        return self.waiting + self.active + self.due


@dataclass(frozen=True)
class Reclaimed:
    """Claims taken over from dead consumers; poison ones are already removed."""

    deliveries: list[Delivery]
    poison: list[Delivery]


class Queue:
    """The Redis side of dispatch for all priorities."""

    def __init__(self, redis: Redis, keys: Keys | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self._scripts = Scripts(redis)
        self.scripts = self._scripts  # for core's run locks and reports on the same client
        self._ready: set[Priority] = set()
        self._xadds: Batcher[tuple[str, Message], str] = Batcher(
            self._xadd_pipeline,
            max_batch=ENQUEUE_PIPELINE_MAX,
            max_in_flight=ENQUEUE_PIPELINES_IN_FLIGHT,
        )
        self._rate_takes: Batcher[tuple[str, int, int, int], float] = Batcher(
            self._take_rates,
            max_batch=ENQUEUE_PIPELINE_MAX,
            max_in_flight=ENQUEUE_PIPELINES_IN_FLIGHT,
        )

    async def ensure_group(self, priority: Priority) -> None:
        """Create the stream and its consumer group if missing (idempotent)."""
        if priority in self._ready:
            return
        try:
            await self.redis.xgroup_create(
                self.keys.of(priority).stream, CONSUMER_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready.add(priority)

    async def enqueue(self, priority: Priority, message: Message) -> str:
        """Add a ready job; returns its entry id.

        Calls made together share one pipeline (one round trip), as ioredis's
        auto-pipelining does; each still gets its own entry id or error.
        """
        return await self._xadds.submit((self.keys.of(priority).stream, message))

    async def _xadd_pipeline(self, adds: list[tuple[str, Message]]) -> list[str | BaseException]:
        # One script call for the batch rather than a pipeline of XADDs: the
        # same single round trip, with one command to encode and one reply to
        # parse instead of one per job, which is most of an enqueue's client cost.
        streams: dict[str, int] = {}
        argv: list[str | int] = []
        for stream, m in adds:
            argv += [streams.setdefault(stream, len(streams) + 1), m.task_id, m.type]
        replies = await self._scripts.enqueue(keys=list(streams), args=argv)
        return [r if isinstance(r, BaseException) else _text(r) for r in replies]

    async def enqueue_many(self, priority: Priority, messages: Sequence[Message]) -> list[str]:
        """Add ready jobs in one round trip."""
        stream = self.keys.of(priority).stream
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in messages:
                pipe.xadd(stream, {"t": m.task_id, "y": m.type})
            return [str(i) for i in await pipe.execute()]

    async def schedule(self, priority: Priority, messages: Sequence[tuple[Message, float]]) -> None:
        """Add jobs due after their delays (seconds, on the Redis clock)."""
        if not messages:
            return
        argv: list[Any] = []
        for message, delay in messages:
            argv += [message.member, max(0, int(delay * 1000))]
        k = self.keys.of(priority)
        await self._scripts.schedule(keys=[k.delayed, k.wake], args=argv)

    async def promote(self, priority: Priority, message: Message) -> str | None:
        """Run a delayed job now; returns its entry id, or None if it was not delayed."""
        k = self.keys.of(priority)
        entry_id = await self._scripts.promote(keys=[k.stream, k.delayed], args=[message.member])
        return None if entry_id is None else _text(entry_id)

    async def withdraw(self, priority: Priority, message: Message) -> bool:
        """Drop a delayed job (its task was cancelled); False if it was not delayed.

        A job already in the stream stays there: the worker that claims it finds
        the task no longer claimable and drops the delivery.
        """
        return bool(await self.redis.zrem(self.keys.of(priority).delayed, message.member))

    async def claim(self, priority: Priority, consumer: str, count: int) -> Claim:
        """Promote due delayed jobs, then claim up to `count` ready ones."""
        k = self.keys.of(priority)
        paused, entries, last_id, next_due, wake_id = await self._scripts.claim(
            keys=[k.stream, k.delayed, k.paused, k.wake],
            args=[CONSUMER_GROUP, consumer, count, PROMOTE_LIMIT],
        )
        deliveries = [_delivery(priority, e[0], e[1], 1) for e in entries]
        return Claim(
            paused=bool(paused),
            deliveries=deliveries,
            last_entry_id=_text(last_id),
            next_due_ms=None if int(next_due) < 0 else int(next_due),
            last_wake_id=_text(wake_id),
        )

    async def wait_for_work(self, priority: Priority, claim: Claim, timeout: float) -> None:
        """Block until a new entry or a wake signal arrives after `claim`, or the timeout."""
        k = self.keys.of(priority)
        ms = max(1, int(timeout * 1000))
        await self.redis.xread(
            {k.stream: claim.last_entry_id, k.wake: claim.last_wake_id}, count=1, block=ms
        )

    async def ack(self, priority: Priority, entry_ids: Iterable[str]) -> int:
        """Acknowledge finished jobs and delete their entries."""
        ids = list(entry_ids)
        if not ids:
            return 0
        k = self.keys.of(priority)
        return int(await self._scripts.ack(keys=[k.stream], args=[CONSUMER_GROUP, *ids]))

    async def retry_later(self, delivery: Delivery, delay_seconds: float) -> int:
        """Move a claimed job to the delayed set; returns its due time (ms)."""
        k = self.keys.of(delivery.priority)
        due = await self._scripts.retry(
            keys=[k.stream, k.delayed, k.wake],
            args=[
                CONSUMER_GROUP,
                delivery.entry_id,
                delivery.message.member,
                max(0, int(delay_seconds * 1000)),
            ],
        )
        return int(due)

    async def reclaim(
        self,
        priority: Priority,
        consumer: str,
        min_idle_seconds: float,
        count: int,
        max_deliveries: int,
    ) -> Reclaimed:
        """Take over claims idle past the lease; poison jobs are removed and returned apart."""
        k = self.keys.of(priority)
        reclaimed, poison = await self._scripts.reclaim(
            keys=[k.stream],
            args=[CONSUMER_GROUP, consumer, int(min_idle_seconds * 1000), count, max_deliveries],
        )
        return Reclaimed(
            deliveries=[_delivery(priority, e[0], e[1], int(e[2])) for e in reclaimed],
            poison=[_delivery(priority, e[0], e[1], int(e[2])) for e in poison],
        )

    async def extend(self, priority: Priority, consumer: str, entry_ids: Sequence[str]) -> int:
        """Reset the lease of jobs this consumer still holds."""
        if not entry_ids:
            return 0
        k = self.keys.of(priority)
        return int(
            await self._scripts.extend(keys=[k.stream], args=[CONSUMER_GROUP, consumer, *entry_ids])
        )

    async def pause(self, priority: Priority) -> None:
        await self.redis.set(self.keys.of(priority).paused, "1")

    async def resume(self, priority: Priority) -> None:
        k = self.keys.of(priority)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(k.paused)
            pipe.xadd(k.wake, {"resumed": "1"}, maxlen=1, approximate=False)
            await pipe.execute()

    async def in_flight_by_consumer(self, priority: Priority) -> dict[str, int]:
        """Claimed, unacknowledged jobs per consumer name (XINFO CONSUMERS of the group)."""
        try:
            consumers = await self.redis.xinfo_consumers(
                self.keys.of(priority).stream, CONSUMER_GROUP
            )
        except ResponseError as exc:
            # No stream or no group yet: nothing was ever claimed.
            if "no such key" in str(exc).lower() or "NOGROUP" in str(exc):
                return {}
            raise
        return {str(c["name"]): int(c["pending"]) for c in consumers}

    async def stats(self, priority: Priority) -> QueueStats:
        k = self.keys.of(priority)
        undelivered, pending, due, delayed, paused, oldest_ms, now_ms = await self._scripts.backlog(
            keys=[k.stream, k.delayed, k.paused], args=[CONSUMER_GROUP]
        )
        age = 0.0 if int(oldest_ms) < 0 else max(0.0, (int(now_ms) - int(oldest_ms)) / 1000)
        return QueueStats(
            priority=priority,
            waiting=int(undelivered),
            active=int(pending),
            delayed=int(delayed),
            due=int(due),
            paused=bool(paused),
            oldest_waiting_age_seconds=age,
        )

    async def oldest_waiting_age(self, priority: Priority) -> float:
        """Seconds the oldest job that could start now has waited, 0 when none.

        The first undelivered stream entry waits since its id (ms); a due delayed
        job waits since its due time, although no worker has promoted it yet.
        """
        stats = await self.stats(priority)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(self.keys.of(priority).delayed, 0, 0, withscores=True)
            pipe.time()
            first, (seconds, micros) = await pipe.execute()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        due_age = 0.0
        if first and int(first[0][1]) <= now_ms:
            due_age = (now_ms - int(first[0][1])) / 1000
        return max(stats.oldest_waiting_age_seconds, due_age)

    async def backlog(self, priority: Priority) -> int:
        """Undelivered + in flight + due delayed: the number the operator scales on."""
        return (await self.stats(priority)).backlog

    async def rate_limit(
        self, job_type: str, limit: int, period_seconds: float, burst: int = 1
    ) -> float:
        """Take one start from `job_type`'s shared budget: 0 if allowed, else seconds to wait.

        Takes that arrive together (a gateway's concurrent requests, a worker's
        claimed jobs) share one script call, as enqueues do.
        """
        key = self.keys.rate_limit(job_type)
        return await self._rate_takes.submit((key, limit, int(period_seconds * 1000), burst))

    async def _take_rates(self, takes: list[tuple[str, int, int, int]]) -> list[float]:
        keys: dict[str, int] = {}
        argv: list[int] = []
        for key, limit, period_ms, burst in takes:
            argv += [keys.setdefault(key, len(keys) + 1), limit, period_ms, burst]
        replies = await self._scripts.rate_limit(keys=list(keys), args=argv)
        return [0.0 if int(allowed) else int(wait_ms) / 1000 for allowed, wait_ms in replies]

    async def purge(self, priority: Priority) -> None:
        """Delete a priority's stream and delayed set (tests and local resets only)."""
        k = self.keys.of(priority)
        await self.redis.delete(k.stream, k.delayed, k.paused, k.wake)
        self._ready.discard(priority)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _delivery(priority: Priority, entry_id: Any, fields: Any, deliveries: int) -> Delivery:
    # Strings already when the client decodes responses, as relayq's clients do.
    flat = fields if fields and isinstance(fields[0], str) else [_text(f) for f in fields]
    data = dict(zip(flat[0::2], flat[1::2], strict=True))
    return Delivery(
        priority=priority,
        entry_id=_text(entry_id),
        message=Message(task_id=data["t"], type=data["y"]),
        # "d": deliveries of earlier entries of this job (a stalled claim re-added by recovery).
        deliveries=deliveries + int(data.get("d", 0)),
    )


@dataclass(frozen=True)
class Stalled:
    """A claim recovery took back: its task, type and deliveries so far."""

    task_id: str
    type: str
    deliveries: int


class RecoveryQueue:
    """What the recovery run does in Redis, on one Queue's keys and scripts.

    Kept apart from Queue's hot path; every read of the stream layout and every
    script recovery runs is here, in core (recovery owns no Lua).
    """

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    async def presence(self, priority: Priority) -> Presence:
        """Which task ids Redis holds for the priority (relayq.core.presence)."""
        return await scan(self.queue.redis, self.queue.keys.of(priority))

    async def hand_back_stalled(
        self, priority: Priority, consumer: str, min_idle_ms: int, limit: int, max_deliveries: int
    ) -> tuple[list[Stalled], list[Stalled]]:
        """Claims idle past `min_idle_ms` go back to the ready stream as new entries.

        Returns (handed back, poison): poison claims, delivered more than
        `max_deliveries` times in all, are removed instead, for the caller to
        dead-letter.
        """
        k = self.queue.keys.of(priority)
        requeued, poison = await self.queue.scripts.requeue_stalled(
            keys=[k.stream], args=[CONSUMER_GROUP, consumer, min_idle_ms, limit, max_deliveries]
        )
        return _stalled(requeued), _stalled(poison)

    async def redispatch(
        self, priority: Priority, since_id: str, jobs: Sequence[tuple[Message, int]]
    ) -> set[str]:
        """Add each job (due in `delay_ms`, or now when negative) unless Redis holds it already.

        `since_id` is the stream id from which the presence scan may have missed
        additions; the script re-checks those atomically. Returns the task ids added.
        """
        k = self.queue.keys.of(priority)
        argv: list[Any] = [since_id]
        for message, delay_ms in jobs:
            argv += [message.task_id, message.type, delay_ms]
        return set(
            await self.queue.scripts.redispatch(keys=[k.stream, k.delayed, k.wake], args=argv)
        )

    async def record_run(
        self, fence: int, outcome: str, duration_seconds: float, counts: dict[str, int]
    ) -> bool:
        """Add a run's counts to the report the API exports; its last_* fields if newest."""
        argv: list[Any] = [fence, outcome, f"{time.time():.3f}", f"{duration_seconds:.4f}"]
        for name, value in counts.items():
            argv += [name, value]
        return bool(
            int(await self.queue.scripts.report(keys=[self.queue.keys.recovery_report], args=argv))
        )


def _stalled(rows: Sequence[Sequence[Any]]) -> list[Stalled]:
    return [Stalled(str(t), str(y), int(d)) for t, y, d in rows]
