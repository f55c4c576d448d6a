"""Typed keys of what the application holds (aiohttp's web.AppKey)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from relayq.api.auth import KeyRing
from relayq.api.contract import Operation
from relayq.api.limits import Limits
from relayq.api.settings import ApiSettings
from relayq.core.clients import Clients
from relayq.core.modules import ProcessContext
from relayq.core.queue import Queue

SETTINGS = web.AppKey("api_settings", ApiSettings)
CLIENTS = web.AppKey("clients", Clients)
QUEUE = web.AppKey("queue", Queue)
KEYRING = web.AppKey("keyring", KeyRing)
LIMITS = web.AppKey("limits", Limits)
# Set once the task indexes exist: without the unique idempotency index a replay
# could create a second task, so the gateway is not ready before it.
INDEXES_READY = web.AppKey("indexes_ready", asyncio.Event)
PROCESS = web.AppKey("process", ProcessContext)
# What this gateway serves: its own operations and its job modules'.
OPERATIONS = web.AppKey("operations", list[Operation])
REQUEST_ID = web.RequestKey("request_id", str)
CLIENT = web.RequestKey("client", str)
