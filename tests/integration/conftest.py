"""Fixtures for the HTTP gateway tests: the real app on a test server (pytest-aiohttp)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from relayq.api.app import create_app
from relayq.api.keys import INDEXES_READY
from relayq.api.settings import ApiSettings
from relayq.core.clients import Clients
from relayq.core.settings import Settings
from tests.gateway import api_settings

Api = TestClient[Any, Any]
MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(aiohttp_client: AiohttpClient, settings: Settings) -> MakeApi:
    """Start the gateway: `await make_api(settings=..., api=..., **api_settings_overrides)`."""

    async def make(
        settings: Settings = settings, api: ApiSettings | None = None, **overrides: Any
    ) -> Api:
        return await aiohttp_client(create_app(settings, api or api_settings(**overrides)))

    return make


@pytest.fixture
async def api(make_api: MakeApi, clients: Clients) -> Api:
    """The gateway on the test's Redis and MongoDB database (`clients` sees the same data),
    ready: its background index creation done."""
    api = await make_api()
    await asyncio.wait_for(api.app[INDEXES_READY].wait(), 15)
    return api
