"""Typed keys of what the application holds (aiohttp's web.AppKey)."""

from __future__ import annotations

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
PROCESS = web.AppKey("process", ProcessContext)
# What this gateway serves: its own operations and its job modules'.
OPERATIONS = web.AppKey("operations", list[Operation])
REQUEST_ID = web.RequestKey("request_id", str)
CLIENT = web.RequestKey("client", str)
