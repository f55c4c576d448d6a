"""The gateway application: `create_app(settings, api)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from relayq.api import admin, jobs, ops, purchases
from relayq.api.auth import KeyRing
from relayq.api.keys import CLIENTS, KEYRING, QUEUE, RELAYER, SETTINGS
from relayq.api.middleware import authenticate, request_context
from relayq.api.settings import ApiSettings
from relayq.core.chain.settings import ChainSettings
from relayq.core.clients import open_clients
from relayq.core.relayer.relayer import open_relayer
from relayq.core.settings import Settings
from relayq.core.telemetry import log_event

log = logging.getLogger("relayq.api")
INDEX_RETRY_SECONDS = 5.0


def routes() -> list[web.RouteDef]:
    """The one route table."""
    return [
        web.post("/v1/jobs", jobs.submit_job),
        web.get("/v1/tasks", jobs.list_tasks),
        web.get("/v1/tasks/{task_id}", jobs.get_task),
        web.post("/v1/buy-tokens", purchases.buy_tokens),
        web.get("/v1/bundles", purchases.list_bundles),
        web.get("/v1/admin/queues", admin.queues),
        web.post("/v1/admin/queues/{priority}/pause", admin.pause),
        web.post("/v1/admin/queues/{priority}/resume", admin.resume),
        web.get("/v1/admin/dead-letters", admin.dead_letters),
        web.post("/v1/admin/dead-letters/retry", admin.retry_dead_letters),
        web.post("/v1/admin/dead-letters/{task_id}/retry", admin.retry_dead_letter),
        web.delete("/v1/admin/dead-letters/{task_id}", admin.delete_dead_letter),
        web.get("/healthz", ops.healthz),
        web.get("/readyz", ops.readyz),
        web.get("/metrics", ops.metrics),
        web.get("/openapi.json", ops.openapi_json),
        web.get("/docs", ops.docs),
    ]


def create_app(
    settings: Settings, api: ApiSettings, chain: ChainSettings | None = None
) -> web.Application:
    """The gateway; the purchase routes answer 503 unless `chain` configures the relayer."""
    app = web.Application(
        client_max_size=api.max_body_bytes, middlewares=[request_context, authenticate]
    )
    app[SETTINGS] = api
    app.add_routes(routes())

    async def clients_ctx(app: web.Application) -> AsyncIterator[None]:
        # The app starts without MongoDB (requests then get 503) and creates
        # its indexes once MongoDB answers.
        async with open_clients(
            settings, ensure_indexes=False, mongo_timeout_seconds=api.mongo_timeout_seconds
        ) as clients:
            app[CLIENTS] = clients
            app[QUEUE] = clients.queue
            app[KEYRING] = KeyRing(api, clients.store.client[settings.mongo_database]["api_keys"])
            relayer = None
            if chain is not None and chain.configured:
                relayer = open_relayer(chain, clients)
                app[RELAYER] = relayer
            indexes = asyncio.create_task(_ensure_indexes(app))
            yield
            if relayer is not None:
                await relayer.close()
            indexes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await indexes

    app.cleanup_ctx.append(clients_ctx)
    return app


async def _ensure_indexes(app: web.Application) -> None:
    while True:
        try:
            await app[CLIENTS].store.ensure_indexes()
            return
        except Exception as exc:
            log_event(log, logging.WARNING, "indexes not created yet", error=str(exc))
            await asyncio.sleep(INDEX_RETRY_SECONDS)
