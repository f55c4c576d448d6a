"""Operational routes: health, readiness, metrics, the OpenAPI document and docs."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relayq.api.docspage import docs_page
from relayq.api.keys import CLIENTS
from relayq.api.openapi import openapi_document
from relayq.core.reconcile_report import reconcile_collector
from relayq.core.recovery_report import recovery_collector
from relayq.core.telemetry import probe_dependency, refresh_queue_gauges_quietly

READY_TIMEOUT_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    redis_ok, mongo_ok = await _probe(request.app)
    results = {"redis": _word(redis_ok), "mongo": _word(mongo_ok)}
    ready = redis_ok and mongo_ok
    return web.json_response(
        {"status": "ready" if ready else "unready", **results}, status=200 if ready else 503
    )


async def _probe(app: web.Application) -> tuple[bool, bool]:
    """Ping Redis and MongoDB at once; sets relayq_dependency_up for each."""
    clients = app[CLIENTS]
    redis_ok, mongo_ok = await asyncio.gather(
        probe_dependency("redis", clients.redis.ping(), READY_TIMEOUT_SECONDS),
        probe_dependency("mongodb", clients.store.ping(), READY_TIMEOUT_SECONDS),
    )
    return redis_ok, mongo_ok


def _word(ok: bool) -> str:
    return "ok" if ok else "unreachable"


async def metrics(request: web.Request) -> web.Response:
    # Probe at scrape time, so the dependency and queue gauges are fresh
    # without a background loop, and show every priority's queue even when
    # none of its workers runs.
    redis_ok, _ = await _probe(request.app)
    if redis_ok:
        await refresh_queue_gauges_quietly(request.app[CLIENTS].queue, READY_TIMEOUT_SECONDS)
        # Recovery is a CronJob nothing scrapes: its report lives in Redis.
        clients = request.app[CLIENTS]
        await recovery_collector().refresh(clients.redis, clients.queue.keys)
        # So is reconciliation.
        await reconcile_collector().refresh(clients.redis, clients.queue.keys)
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _document(request: web.Request) -> dict[str, Any]:
    """The OpenAPI document of what this gateway serves: routes of absent job modules go."""
    registry = request.app[CLIENTS].service.registry
    document = openapi_document([t.name for t in registry.all() if not t.internal])
    served = {
        re.sub(r"\{task_id\}", "{taskId}", r.resource.canonical)
        for r in request.app.router.routes()
        if r.resource is not None
    }
    document["paths"] = {p: item for p, item in document["paths"].items() if p in served}
    return document


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(_document(request))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=docs_page(_document(request)), content_type="text/html")
