"""Reading one priority's queue from Redis: what the decision and the deletion costs need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from redis.asyncio import Redis

from relayq.core.clients import RedisTarget, connect
from relayq.core.keys import Keys
from relayq.core.priorities import Priority
from relayq.core.queue import Queue
from relayq.core.settings import parse_sentinels as core_parse_sentinels
from relayq.operator.decision import QueueSnapshot

# A poll must not hang on a dead Redis: the next poll retries anyway.
SOCKET_TIMEOUT_SECONDS = 2.0


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (RELAYQ_REDIS_SENTINELS) as pairs; ValueError when malformed."""
    found = core_parse_sentinels(text)
    if not found:
        raise ValueError("no sentinel address given")
    return found


@dataclass(frozen=True)
class QueueReading:
    """One poll of a priority.

    Attributes:
        snapshot: the numbers the decision takes.
        in_flight_by_consumer: pending (claimed, not acknowledged) jobs per consumer name.
    """

    snapshot: QueueSnapshot
    in_flight_by_consumer: Mapping[str, int]


class RedisPools:
    """One client, with its connection pool, per Redis target, shared by every
    WorkerAutoscaler that names it, and one Queue per key prefix on it."""

    def __init__(self, socket_timeout: float = SOCKET_TIMEOUT_SECONDS) -> None:
        self._timeout = socket_timeout
        self._clients: dict[RedisTarget, Redis] = {}
        self._queues: dict[tuple[RedisTarget, str], Queue] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def client(self, target: RedisTarget) -> Redis:
        client = self._clients.get(target)
        if client is None:
            client = self._clients[target] = self._connect(target)
        return client

    def queue(self, target: RedisTarget, key_prefix: str) -> Queue:
        queue = self._queues.get((target, key_prefix))
        if queue is None:
            queue = Queue(self.client(target), Keys(key_prefix))
            self._queues[(target, key_prefix)] = queue
        return queue

    def _connect(self, target: RedisTarget) -> Redis:
        # The same factory as every relayq process; a shorter socket timeout, so
        # one unreachable target cannot hold a poll up for long.
        return connect(target, socket_timeout=self._timeout)

    async def ping(self) -> dict[str, bool]:
        """Whether each known target answers (for the liveness probe's report)."""
        answers: dict[str, bool] = {}
        for target, client in list(self._clients.items()):
            try:
                answers[_describe(target)] = bool(await client.ping())
            except Exception:
                answers[_describe(target)] = False
        return answers

    async def close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        self._queues.clear()
        for client in clients:
            await client.aclose()


async def read_queue(queue: Queue, priority: Priority) -> QueueReading:
    """Backlog, oldest waiting age, in-flight jobs and the pause flag of one priority."""
    stats = await queue.stats(priority)
    oldest = await queue.oldest_waiting_age(priority)
    consumers = await queue.in_flight_by_consumer(priority)
    snapshot = QueueSnapshot(
        backlog=stats.backlog,
        oldest_age_seconds=oldest,
        in_flight=stats.active,
        paused=stats.paused,
    )
    return QueueReading(snapshot=snapshot, in_flight_by_consumer=consumers)


def pod_of_consumer(consumer: str) -> str:
    """The pod a worker consumer runs in: its name without the trailing `-<pid>`.

    Workers name themselves `<hostname>-<pid>` (RELAYQ_WORKER_ID's default), and a
    pod's hostname is its name.
    """
    head, sep, tail = consumer.rpartition("-")
    return head if sep and head and tail.isdigit() else consumer


def in_flight_by_pod(by_consumer: Mapping[str, int]) -> dict[str, int]:
    """Pending jobs per pod name, summed over the pod's consumers (one per process)."""
    pods: dict[str, int] = {}
    for consumer, pending in by_consumer.items():
        pod = pod_of_consumer(consumer)
        pods[pod] = pods.get(pod, 0) + pending
    return pods


def _describe(target: RedisTarget) -> str:
    if target.sentinels:
        hosts = ",".join(f"{h}:{p}" for h, p in target.sentinels)
        return f"sentinel://{hosts}/{target.master}"
    parsed = urlparse(target.url)
    return f"{parsed.scheme}://{parsed.hostname}:{parsed.port}{parsed.path}"
