"""Operational routes: health, readiness, metrics, the OpenAPI document and docs."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relayq.api import models
from relayq.api.contract import Operation, Response
from relayq.api.docspage import docs_page
from relayq.api.keys import CLIENTS, INDEXES_READY, SETTINGS
from relayq.api.keys import OPERATIONS as SERVED
from relayq.api.openapi import openapi_document
from relayq.core.reconcile_report import reconcile_collector
from relayq.core.recovery_report import recovery_collector
from relayq.core.telemetry import probe_dependency, refresh_queue_gauges_quietly

READY_TIMEOUT_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    redis_ok, mongo_ok = await _probe(request.app)
    indexes_ok = request.app[INDEXES_READY].is_set()
    results = {
        "redis": _word(redis_ok),
        "mongo": _word(mongo_ok),
        "indexes": "ok" if indexes_ok else "pending",
    }
    ready = redis_ok and mongo_ok and indexes_ok
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
    """The OpenAPI document of what this gateway serves, its job modules' routes included."""
    registry = request.app[CLIENTS].service.registry
    served: list[Operation] = request.app[SERVED]
    return openapi_document(
        served,
        [t.name for t in registry.all() if not t.internal],
        request.app[SETTINGS].max_body_bytes,
    )


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(_document(request))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=docs_page(_document(request)), content_type="text/html")


def _text(media_type: str, description: str) -> Response:
    return Response(description, schema={"type": "string"}, media_type=media_type)


READY = {"allOf": [{"$ref": "#/components/schemas/Readiness"},
                   {"properties": {"status": {"const": "ready"}, "redis": {"const": "ok"},
                                   "mongo": {"const": "ok"},
                                   "indexes": {"const": "ok"}}}]}  # fmt: skip
OPERATIONS: list[Operation] = [
    Operation(
        "GET", "/healthz", healthz, "healthz", "Liveness", "operations",
        responses={200: Response("The process serves", models.Health)},
    ),
    Operation(
        "GET", "/readyz", readyz, "readyz",
        "Readiness: Redis and MongoDB reachable, the task indexes in place", "operations",
        responses={
            200: Response("Ready", schema=READY),
            503: Response("A dependency is unreachable; it is named `unreachable`",
                          models.Readiness),
        },
    ),
    Operation(
        "GET", "/metrics", metrics, "metrics", "Prometheus metrics", "operations",
        responses={200: _text("text/plain", "Prometheus text exposition format")},
        description=(
            "relayq_api_requests_total{method,route,status}, "
            "relayq_api_request_seconds{route}, and the job metrics."
        ),
    ),
    Operation(
        "GET", "/openapi.json", openapi_json, "openapi", "This document", "operations",
        responses={200: Response("OpenAPI 3.1", schema={"type": "object"})},
    ),
    Operation(
        "GET", "/docs", docs, "docs", "This API, as a page", "operations",
        responses={200: _text("text/html", "HTML")},
    ),
]  # fmt: skip
