"""Reading one priority's queue from Redis: what the decision and the deletion costs need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ResponseError

from relayq.core.keys import CONSUMER_GROUP, Keys
from relayq.core.priorities import Priority
from relayq.core.queue import Queue
from relayq.operator.decision import QueueSnapshot

# A poll must not hang on a dead Redis: the next poll retries anyway.
SOCKET_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class RedisTarget:
    """Where to connect, as read from a WorkerAutoscaler's Secret.

    Attributes:
        url: the Redis URL; with Sentinel only its database number is used.
        sentinels: (host, port) of each Sentinel, empty for a plain URL.
        master: the Sentinel master's name.
        password: the Redis password with Sentinel (RELAYQ_REDIS_PASSWORD).
    """

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (RELAYQ_REDIS_SENTINELS) as pairs; ValueError when malformed."""
    found: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"sentinel address {item!r} is not host:port")
        found.append((host.strip("[]"), int(port)))
    if not found:
        raise ValueError("no sentinel address given")
    return tuple(found)


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
        timeout = self._timeout
        if not target.sentinels:
            client: Redis = Redis.from_url(
                target.url,
                decode_responses=True,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                health_check_interval=15,
            )
            return client
        if target.master is None:
            raise ValueError("a Sentinel target needs a master name")
        db = _database(target.url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), socket_connect_timeout=timeout, socket_timeout=timeout
        )
        master: Redis = sentinel.master_for(
            target.master,
            db=db,
            password=target.password,
            decode_responses=True,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
        )
        return master

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
    consumers = await in_flight_by_consumer(queue.redis, queue.keys, priority)
    snapshot = QueueSnapshot(
        backlog=stats.backlog,
        oldest_age_seconds=oldest,
        in_flight=stats.active,
        paused=stats.paused,
    )
    return QueueReading(snapshot=snapshot, in_flight_by_consumer=consumers)


async def in_flight_by_consumer(redis: Redis, keys: Keys, priority: Priority) -> dict[str, int]:
    """XINFO CONSUMERS of the workers' group: pending jobs per consumer name."""
    try:
        consumers = await redis.xinfo_consumers(keys.of(priority).stream, CONSUMER_GROUP)
    except ResponseError as exc:
        # No stream or no group yet: nothing was ever claimed.
        if "no such key" in str(exc).lower() or "NOGROUP" in str(exc):
            return {}
        raise
    return {str(c["name"]): int(c["pending"]) for c in consumers}


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


def _database(url: str) -> int:
    path = urlparse(url).path.strip("/") if url else ""
    return int(path) if path.isdigit() else 0


def _describe(target: RedisTarget) -> str:
    if target.sentinels:
        hosts = ",".join(f"{h}:{p}" for h, p in target.sentinels)
        return f"sentinel://{hosts}/{target.master}"
    parsed = urlparse(target.url)
    return f"{parsed.scheme}://{parsed.hostname}:{parsed.port}{parsed.path}"
