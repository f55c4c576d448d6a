"""The gateway application: `create_app(settings, api)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from relayq.api import admin, admin_keys, jobs, ops
from relayq.api.auth import KeyRing
from relayq.api.contract import Operation
from relayq.api.keys import (
    CLIENTS,
    INDEXES_READY,
    KEYRING,
    LIMITS,
    OPERATIONS,
    PROCESS,
    QUEUE,
    SETTINGS,
)
from relayq.api.limits import Limits
from relayq.api.middleware import authenticate, request_context
from relayq.api.readiness import READINESS, Readiness, probe_of
from relayq.api.settings import ApiSettings
from relayq.core.clients import open_clients
from relayq.core.modules import ProcessContext, route_modules, started
from relayq.core.settings import Settings
from relayq.core.telemetry import log_event

log = logging.getLogger("relayq.api")
INDEX_RETRY_SECONDS = 5.0


def operations(job_modules: Iterable[str]) -> list[Operation]:
    """What the gateway serves: its own operations, then those of its job modules' route
    modules (`ROUTES`, relayq.core.modules), each module's `OPERATIONS`."""
    own = [*jobs.OPERATIONS, *admin.OPERATIONS, *admin_keys.OPERATIONS, *ops.OPERATIONS]
    for module in route_modules(job_modules):
        own += list(module.OPERATIONS)
    return own


def create_app(
    settings: Settings, api: ApiSettings, process_state: Mapping[str, Any] | None = None
) -> web.Application:
    """The gateway, with the routes of its job modules.

    `process_state` seeds the job modules' process context before their startup
    hooks run (a test hands the relayer its chain settings this way).
    """
    app = web.Application(
        client_max_size=api.max_body_bytes, middlewares=[request_context, authenticate]
    )
    app[SETTINGS] = api
    app[LIMITS] = Limits(api)
    app[INDEXES_READY] = asyncio.Event()
    app[READINESS] = Readiness(probe_of(app))
    app[OPERATIONS] = operations(settings.job_modules)
    app.add_routes([op.route() for op in app[OPERATIONS]])

    async def clients_ctx(app: web.Application) -> AsyncIterator[None]:
        # The app starts without MongoDB (requests then get 503) and creates
        # its indexes once MongoDB answers.
        bounded = replace(
            settings,
            mongo_timeout_seconds=api.mongo_timeout_seconds,
            redis_timeout_seconds=api.redis_timeout_seconds,
        )
        async with open_clients(
            bounded, ensure_indexes=False, mongo_timeout_seconds=api.mongo_timeout_seconds
        ) as clients:
            app[CLIENTS] = clients
            app[QUEUE] = clients.queue
            app[KEYRING] = KeyRing(api, clients.store.client[settings.mongo_database]["api_keys"])
            context = ProcessContext(clients, dict(process_state or {}))
            async with started(settings.job_modules, context) as app[PROCESS]:
                indexes = asyncio.create_task(_ensure_indexes(app))
                yield
                indexes.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await indexes

    app.cleanup_ctx.append(clients_ctx)
    return app


async def _ensure_indexes(app: web.Application) -> None:
    while True:
        try:
            await app[CLIENTS].store.ensure_indexes()
            app[INDEXES_READY].set()
            return
        except Exception as exc:
            log_event(log, logging.WARNING, "indexes not created yet", error=str(exc))
            await asyncio.sleep(INDEX_RETRY_SECONDS)
