"""Fixtures of the recovery tests: the gateway's /metrics."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from relayq.api.app import create_app
from relayq.api.metrics import create_metrics_app
from relayq.core.clients import Clients
from relayq.core.settings import Settings
from tests.gateway import api_settings


@pytest.fixture
async def api(
    aiohttp_client: AiohttpClient, settings: Settings, clients: Clients
) -> TestClient[Any, Any]:
    """The gateway's metrics port, the gateway on the test's Redis and MongoDB database."""
    gateway = await aiohttp_client(create_app(settings, api_settings()))
    return await aiohttp_client(create_metrics_app(gateway.app))
