"""Fixtures for the relayer: a local chain (relayq devchain on LiteSVM), the relayer, the gateway.

The chain runs once per session with fast slots (200 ms, blockhashes valid for
150 slots, 30 s) and fault injection on; tests measure balances as differences, since
purchases of earlier tests stay on it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient
from solders.pubkey import Pubkey
from spl.token.instructions import get_associated_token_address

from relayq.api.app import create_app
from relayq.core.clients import Clients
from relayq.core.modules import ProcessContext
from relayq.core.settings import Settings
from relayq.dev.relayer_env import relayer_env
from relayq.dev.servers import LocalServer, devchain_server
from relayq.relayer import jobs as relayer_jobs
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.relayer import Relayer, open_relayer
from tests.gateway import api_settings
from tests.integration.conftest import Api

RELAYER_MODULE = "relayq.relayer.jobs"
SLOT_MS = 200
VALIDITY_SLOTS = 150
# The devchain's finalized view lags the newest slot by this many (its default).
FINALITY_LAG = 32


@dataclass
class Devchain:
    server: LocalServer
    manifest_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def manifest(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.manifest_path.read_text())
        return result

    async def faults(self, **armed: Any) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{self.url}/devchain/faults", json=armed) as resp,
        ):
            assert resp.status == 200, await resp.text()
            result: dict[str, Any] = await resp.json()
            return result

    async def state(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/devchain/state") as resp:
            result: dict[str, Any] = await resp.json()
            return result


@pytest.fixture(scope="session")
def devchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devchain]:
    state = tmp_path_factory.mktemp("devchain")
    server = devchain_server(
        state,
        slot_ms=SLOT_MS,
        blockhash_validity_slots=VALIDITY_SLOTS,
        faults=True,
        jito_rate_limit=0,
    ).start()
    yield Devchain(server, state / "chain.json")
    server.stop()


@pytest.fixture
async def chain(devchain: Devchain) -> AsyncIterator[Devchain]:
    """The chain with no fault armed before or after the test."""
    await devchain.faults(reset=True, haltSlots=False)
    yield devchain
    await devchain.faults(reset=True, haltSlots=False)


@pytest.fixture
def chain_env(chain: Devchain) -> dict[str, str]:
    return {
        **relayer_env(chain.manifest_path),
        "RELAYQ_JITO_RPS": "1000",
        "RELAYQ_SWAP_WAIT_SECONDS": "8",
        "RELAYQ_CONFIRM_WAIT_SECONDS": "3",
        "RELAYQ_CHAIN_TIMEOUT_SECONDS": "2",
    }


@pytest.fixture
def chain_settings(chain_env: dict[str, str]) -> ChainSettings:
    return ChainSettings.from_env(chain_env)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the relayer among the job modules, as the chart sets it."""
    return replace(settings, job_modules=(*settings.job_modules, RELAYER_MODULE))


@pytest.fixture
async def relayer(clients: Clients, chain_settings: ChainSettings) -> AsyncIterator[Relayer]:
    """The relayer the test inspects; `process` hands it to in-process workers."""
    relayer = await open_relayer(chain_settings, clients)
    yield relayer
    await relayer.close()


@pytest.fixture
def process(clients: Clients, relayer: Relayer) -> ProcessContext:
    """The process context in-process workers run with, holding `relayer`."""
    return ProcessContext(clients, {relayer_jobs.RELAYER: relayer})


@pytest.fixture
async def gateway(aiohttp_client: AiohttpClient, settings: Settings, relayer: Relayer) -> Api:
    """The gateway with the relayer configured, on the test's Redis and MongoDB."""
    # A longer MongoDB bound than the other gateway tests: many purchases share one server.
    app = create_app(
        settings,
        api_settings(mongo_timeout_seconds=15.0),
        {relayer_jobs.CHAIN_SETTINGS: relayer.chain},
    )
    return await aiohttp_client(app)


def contract_account(relayer: Relayer, mint: str) -> Pubkey:
    return get_associated_token_address(relayer.contract_owner, Pubkey.from_string(mint))


async def contract_balances(relayer: Relayer) -> dict[str, int]:
    """Base units the contract holds, per mint of every basket."""
    mints = {str(t.mint) for b in relayer.baskets.values() for t in b.tokens}
    return {m: await relayer.rpc.token_balance(contract_account(relayer, m)) for m in mints}
