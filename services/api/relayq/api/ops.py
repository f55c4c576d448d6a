"""Operational routes: health, readiness, metrics, the OpenAPI document and docs."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relayq.api.docspage import docs_page
from relayq.api.keys import CLIENTS
from relayq.api.openapi import openapi_document

READY_TIMEOUT_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    clients = request.app[CLIENTS]
    checks = {
        "redis": _check(clients.redis.ping()),
        "mongo": _check(clients.store.ping()),
    }
    results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    ready = all(v == "ok" for v in results.values())
    return web.json_response(
        {"status": "ready" if ready else "unready", **results}, status=200 if ready else 503
    )


async def _check(probe: Any) -> str:
    try:
        await asyncio.wait_for(probe, READY_TIMEOUT_SECONDS)
    except Exception:
        return "unreachable"
    return "ok"


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _document(request: web.Request) -> dict[str, Any]:
    return openapi_document(request.app[CLIENTS].service.registry.names())


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(_document(request))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=docs_page(_document(request)), content_type="text/html")
