"""Who is calling: client API keys (stored hashed) and the admin token."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from aiohttp import web
from prometheus_client import Counter
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from relayq.api.problems import Problem, unavailable
from relayq.api.settings import ApiSettings, hash_key
from relayq.core.api_keys import key_is_valid
from relayq.core.owners import is_client_id
from relayq.core.telemetry import log_event

V = TypeVar("V")
log = logging.getLogger("relayq.api")
KEY_CACHE_SECONDS = 30.0
KEY_LOOKUPS = Counter(
    "relayq_api_key_lookups_total",
    "Client keys looked up in MongoDB (not configured, not cached), by result: known, "
    "unknown, revoked, expired, error.",
    ["result"],
)


def presented_secret(request: web.Request) -> str | None:
    """The bearer token or X-API-Key the request carries, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


class KeyRing:
    """Resolves secrets to callers: configured keys first, then MongoDB's `api_keys`.

    Lookups in MongoDB are remembered for KEY_CACHE_SECONDS in two bounded
    caches, one for known keys and one for unknown ones: a flood of random keys
    only ever evicts other unknown keys, never a real client's. A known key is
    remembered no longer than its `expiresAt` (a rotated key stops at the end of
    its grace exactly); a revoked one stops at once in the gateway that revoked
    it (`forget`) and within KEY_CACHE_SECONDS in the others.
    """

    def __init__(self, api: ApiSettings, collection: AsyncCollection[dict[str, Any]]) -> None:
        self._static = dict(api.api_keys)
        self._admin = api.admin_token
        self._collection = collection
        self._known: LruCache[str] = LruCache(api.key_cache_size)
        self._unknown: LruCache[None] = LruCache(api.key_cache_size)
        self._timeout = api.mongo_timeout_seconds

    def is_admin(self, secret: str) -> bool:
        return self._admin is not None and hmac.compare_digest(
            secret.encode(), self._admin.encode()
        )

    def forget(self, digest: str) -> None:
        """Drop what this gateway remembers of a key (it was revoked or rotated here)."""
        self._known.pop(digest)
        self._unknown.pop(digest)

    def known_now(self, secret: str) -> str | None:
        """The client of a key known without asking MongoDB (configured or cached), or None."""
        digest = hash_key(secret)
        return self._static.get(digest) or self._known.get(digest)

    async def client_for(self, secret: str) -> str | None:
        digest = hash_key(secret)
        known = self._static.get(digest) or self._known.get(digest)
        if known is not None:
            return known
        if self._unknown.has(digest):
            return None
        try:
            doc = await asyncio.wait_for(self._collection.find_one({"_id": digest}), self._timeout)
        except (TimeoutError, PyMongoError):
            KEY_LOOKUPS.labels(result="error").inc()
            raise unavailable(
                "store-unavailable", "cannot check this key: the task store is unreachable"
            ) from None
        at = datetime.now(UTC)
        client, result = None, "unknown"
        if doc is not None and not key_is_valid(doc, at):
            result = "revoked" if doc.get("disabled") or doc.get("revokedAt") else "expired"
        elif doc is not None:
            client = str(doc.get("client") or digest[:12])
            if not is_client_id(client):  # refused, not served under a mangled id
                log_event(log, logging.ERROR, "api key with an invalid client id refused",
                          key=digest[:12])  # fmt: skip
                client = None
            else:
                result = "known"
        KEY_LOOKUPS.labels(result=result).inc()
        if client is None:
            self._unknown.put(digest, None)
        else:
            assert doc is not None
            expires = doc.get("expiresAt")
            seconds = KEY_CACHE_SECONDS
            if expires is not None:
                remaining = (expires.replace(tzinfo=expires.tzinfo or UTC) - at).total_seconds()
                seconds = min(seconds, remaining)
            self._known.put(digest, client, seconds)
        return client


class LruCache(Generic[V]):
    """At most `size` entries, each for at most KEY_CACHE_SECONDS; the least recently used
    go first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def _live(self, key: str) -> tuple[V, float] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def has(self, key: str) -> bool:
        return self._live(key) is not None

    def get(self, key: str) -> V | None:
        entry = self._live(key)
        return None if entry is None else entry[0]

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)

    def put(self, key: str, value: V, seconds: float = KEY_CACHE_SECONDS) -> None:
        """Remember `value` for `seconds` (at most KEY_CACHE_SECONDS)."""
        self._entries[key] = (value, time.monotonic() + min(seconds, KEY_CACHE_SECONDS))
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
