"""Operational routes: health, readiness, the OpenAPI document and docs.

The metrics are served on a port of their own (relayq.api.metrics), not here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relayq.api import models
from relayq.api.contract import Operation, Response
from relayq.api.docspage import docs_page
from relayq.api.keys import CLIENTS, INDEXES_READY, SETTINGS
from relayq.api.keys import OPERATIONS as SERVED
from relayq.api.openapi import openapi_document
from relayq.api.readiness import READINESS


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    # Shared probes, at most one a second (relayq.api.readiness): this route is public.
    health = await request.app[READINESS].check()
    redis_ok, mongo_ok = health.redis, health.mongo
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


def _word(ok: bool) -> str:
    return "ok" if ok else "unreachable"


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
        "GET", "/openapi.json", openapi_json, "openapi", "This document", "operations",
        responses={200: Response("OpenAPI 3.1", schema={"type": "object"})},
    ),
    Operation(
        "GET", "/docs", docs, "docs", "This API, as a page", "operations",
        responses={200: _text("text/html", "HTML")},
    ),
]  # fmt: skip
