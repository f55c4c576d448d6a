"""Who is calling: client API keys (stored hashed) and the admin token."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

from aiohttp import web
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from relayq.api.problems import Problem, unavailable
from relayq.api.settings import ApiSettings, hash_key
from relayq.core.owners import is_client_id
from relayq.core.telemetry import log_event

log = logging.getLogger("relayq.api")
KEY_CACHE_SECONDS = 30.0


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

    Lookups in MongoDB are cached for KEY_CACHE_SECONDS, misses included, so a
    flood of bad keys does not become a flood of queries.
    """

    def __init__(self, api: ApiSettings, collection: AsyncCollection[dict[str, Any]]) -> None:
        self._static = dict(api.api_keys)
        self._admin = api.admin_token
        self._collection = collection
        self._cache: dict[str, tuple[str | None, float]] = {}
        self._timeout = api.mongo_timeout_seconds

    def is_admin(self, secret: str) -> bool:
        return self._admin is not None and hmac.compare_digest(
            secret.encode(), self._admin.encode()
        )

    async def client_for(self, secret: str) -> str | None:
        digest = hash_key(secret)
        if digest in self._static:
            return self._static[digest]
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            doc = await asyncio.wait_for(self._collection.find_one({"_id": digest}), self._timeout)
        except (TimeoutError, PyMongoError):
            raise unavailable(
                "store-unavailable", "cannot check this key: the task store is unreachable"
            ) from None
        client = None
        if doc is not None and not doc.get("disabled", False):
            client = str(doc.get("client") or digest[:12])
            if not is_client_id(client):  # refused, not served under a mangled id
                log_event(log, logging.ERROR, "api key with an invalid client id refused",
                          key=digest[:12])  # fmt: skip
                client = None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (client, time.monotonic() + KEY_CACHE_SECONDS)
        return client


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
