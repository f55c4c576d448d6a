"""Fixtures of the recovery tests: the gateway, for its /metrics."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from relayq.api.app import create_app
from relayq.core.clients import Clients
from relayq.core.settings import Settings
from tests.gateway import api_settings


@pytest.fixture
async def api(
    aiohttp_client: AiohttpClient, settings: Settings, clients: Clients
) -> TestClient[Any, Any]:
    """The gateway on the test's Redis and MongoDB database."""
    return await aiohttp_client(create_app(settings, api_settings()))
