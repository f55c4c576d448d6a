"""Opening the Redis and MongoDB clients a process needs, and closing them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relayq.core.keys import Keys
from relayq.core.modules import load_registry
from relayq.core.queue import Queue
from relayq.core.service import JobService
from relayq.core.settings import Settings
from relayq.core.store import TaskStore, connect_mongo
from relayq.core.switches import Switches

# Through Sentinel, a command waits out a failover (the old master's
# connections drop, Sentinel agrees on a new one: a few seconds) before it
# fails. redis-py applies the retries twice, to the command and to each
# reconnection (which asks the Sentinels again), so 5 with jittered backoff
# capped at 1 s cover a failover and give up within about 10 to 20 s when
# there is no master at all.
SENTINEL_RETRIES = 5
# A dead peer that sends no reset (a lost node) is noticed after this long, on
# plain URLs as through Sentinel. The worker's blocking reads last at most a
# second or two, well under it.
SOCKET_TIMEOUT_SECONDS = 10.0
PLAIN_RETRIES = 3
# No `health_check_interval`: its PING runs inside the command's retry and again
# inside each reconnection's, so on a server that accepts and never answers the
# socket timeout was multiplied past 40 s (tests/integration/test_hung_servers.py);
# a dead connection is found on use anyway and retried.


@dataclass(frozen=True)
class RedisTarget:
    """Where a Redis client connects: a URL, or the master a set of Sentinels names.

    The one description of a Redis connection, for every process (workers, the
    API and recovery from Settings, the operator from a WorkerAutoscaler's
    Secret).

    Attributes:
        url: the Redis URL; with Sentinel only its database number and, for a
            `rediss://` URL, its TLS options are used (`redis_tls_options`).
        sentinels: (host, port) of each Sentinel, empty for a plain URL.
        master: the Sentinel master's name.
        password: the Redis password (a password in a plain URL takes precedence).
        sentinel_password: the Sentinels' own password, if they require one.
    """

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, settings: Settings) -> RedisTarget:
        return cls(
            url=settings.redis_url,
            sentinels=settings.redis_sentinels,
            master=settings.redis_sentinel_master,
            password=settings.redis_password,
            sentinel_password=settings.redis_sentinel_password,
        )


def connect(target: RedisTarget, socket_timeout: float = SOCKET_TIMEOUT_SECONDS) -> Redis:
    """A client of the target, through Sentinel when it names Sentinels."""
    if target.sentinels:
        return connect_sentinel_master(target, socket_timeout)
    return connect_redis(target.url, target.password, socket_timeout)


def connect_redis(
    url: str, password: str | None = None, socket_timeout: float = SOCKET_TIMEOUT_SECONDS
) -> Redis:
    """A client that retries lost connections with backoff instead of failing at once."""
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=min(5.0, socket_timeout),
        socket_timeout=socket_timeout,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=PLAIN_RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        password=password,  # a password in the URL takes precedence
    )
    return client


def connect_sentinel_master(
    target: RedisTarget, socket_timeout: float = SOCKET_TIMEOUT_SECONDS
) -> Redis:
    """A client of the master the Sentinels name, found again after each failover.

    redis-py's Sentinel pool asks the Sentinels for the master on every new
    connection; a lost connection or a READONLY reply (the master was demoted)
    drops the connection, and the retry reconnects to whichever server is
    master now. Lua scripts are sent by SHA and reloaded on NOSCRIPT.
    """
    if not target.master:
        raise ValueError("a Sentinel target needs a master name")
    tls = redis_tls_options(target.url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={
            "password": target.sentinel_password,
            "socket_connect_timeout": 2,
            "socket_timeout": 2,
            "decode_responses": True,
            **tls,
        },
    )
    client: Redis = sentinel.master_for(
        target.master,
        db=redis_database(target.url),
        **tls,
        password=target.password,
        decode_responses=True,
        socket_connect_timeout=min(2.0, socket_timeout),
        socket_timeout=socket_timeout,
        retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=SENTINEL_RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return client


# The TLS options of a rediss:// URL (redis-py's names) that apply through Sentinel too.
TLS_URL_OPTIONS = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
    "ssl_ciphers",
)


def redis_tls_options(url: str) -> dict[str, Any]:
    """TLS keyword arguments for the Sentinels and the master they name.

    A `rediss://` URL turns TLS on for both, with the URL's `ssl_*` options
    (e.g. `?ssl_ca_certs=/etc/relayq/redis-tls/ca.crt&ssl_check_hostname=true`);
    a `redis://` URL gives none. One URL thus describes the connection for
    every process and for the operator, whose Secret holds the same URL.
    """
    if urlparse(url).scheme != "rediss":
        return {}
    parsed: dict[str, Any] = dict(parse_url(url))
    return {"ssl": True, **{k: parsed[k] for k in TLS_URL_OPTIONS if k in parsed}}


def redis_for(settings: Settings) -> Redis:
    """Redis for dispatch: through Sentinel when sentinels are set, else at the URL."""
    return connect(RedisTarget.of(settings), settings.redis_timeout_seconds)


def redis_database(url: str) -> int:
    """The database number in a redis:// URL (its path), 0 when absent."""
    path = urlparse(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def mongo_for(settings: Settings, timeout_seconds: float = 5.0) -> AsyncMongoClient[dict[str, Any]]:
    """The MongoDB client of every process: the URL, its bounds and its TLS settings.

    `timeout_seconds` bounds server selection and connecting; each operation
    is bounded by RELAYQ_MONGO_TIMEOUT_SECONDS."""
    return connect_mongo(
        settings.mongo_url,
        timeout_seconds,
        operation_seconds=settings.mongo_timeout_seconds,
        tls_ca_file=settings.mongo_tls_ca_file,
        tls_certificate_key_file=settings.mongo_tls_certificate_key_file,
    )


@dataclass
class Clients:
    """The connected parts of relayq a process uses."""

    settings: Settings
    redis: Redis
    queue: Queue
    store: TaskStore
    service: JobService
    switches: Switches


@asynccontextmanager
async def open_clients(
    settings: Settings, *, ensure_indexes: bool = True, mongo_timeout_seconds: float = 5.0
) -> AsyncIterator[Clients]:
    redis = redis_for(settings)
    mongo = mongo_for(settings, mongo_timeout_seconds)
    try:
        queue = Queue(redis, Keys(settings.key_prefix))
        store = TaskStore(
            mongo,
            settings.mongo_database,
            batch_max=settings.store_batch_max,
            batch_window_seconds=settings.store_batch_window_ms / 1000,
        )
        if ensure_indexes:
            await store.ensure_indexes()
        registry = load_registry(settings.job_modules)
        service = JobService(settings, registry, store, queue)
        yield Clients(settings, redis, queue, store, service, Switches(redis, queue.keys))
    finally:
        await redis.aclose()
        await mongo.close()
