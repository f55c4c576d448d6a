"""Opening the Redis and MongoDB clients a process needs, and closing them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from relayq.core.catalog import load_registry
from relayq.core.keys import Keys
from relayq.core.queue import Queue
from relayq.core.service import JobService
from relayq.core.settings import Settings
from relayq.core.store import TaskStore, connect_mongo


def connect_redis(url: str) -> Redis:
    """A client that retries lost connections with backoff instead of failing at once."""
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return client


@dataclass
class Clients:
    """The connected parts of relayq a process uses."""

    settings: Settings
    redis: Redis
    queue: Queue
    store: TaskStore
    service: JobService


@asynccontextmanager
async def open_clients(
    settings: Settings, *, ensure_indexes: bool = True, mongo_timeout_seconds: float = 5.0
) -> AsyncIterator[Clients]:
    redis = connect_redis(settings.redis_url)
    mongo = connect_mongo(settings.mongo_url, mongo_timeout_seconds)
    try:
        queue = Queue(redis, Keys(settings.key_prefix))
        store = TaskStore(mongo, settings.mongo_database)
        if ensure_indexes:
            await store.ensure_indexes()
        registry = load_registry(settings.job_modules)
        yield Clients(settings, redis, queue, store, JobService(settings, registry, store, queue))
    finally:
        await redis.aclose()
        await mongo.close()
