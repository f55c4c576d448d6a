"""Purchase limits per client and per wallet, and the relayer's SOL: refused before signing."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from pytest_aiohttp import AiohttpClient
from redis.exceptions import RedisError
from solders.keypair import Keypair

from relayq.api.app import create_app
from relayq.core.clients import Clients, open_clients
from relayq.core.quotas import Quota, Quotas
from relayq.core.settings import Settings, SettingsError
from relayq.dev.servers import free_port
from relayq.relayer import jobs as relayer_jobs
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.relayer import Relayer
from tests.gateway import CLIENT, OTHER_CLIENT, api_settings, problem
from tests.integration.conftest import Api

SOL = 1_000_000_000


@pytest.fixture
def chain_env(chain_env: dict[str, str]) -> dict[str, str]:
    return {
        **chain_env,
        "RELAYQ_WALLET_PURCHASES_PER_WINDOW": "2",
        "RELAYQ_CLIENT_LAMPORTS_PER_WINDOW": str(SOL),
    }


def wallet() -> str:
    return str(Keypair().pubkey())


async def buy(gateway: Api, wallet: str, sol: float, headers: dict[str, str] = CLIENT,
              key: str | None = None) -> object:  # fmt: skip
    return await gateway.post(
        "/v1/buy-tokens",
        json={"wallet": wallet, "solAmount": sol, "bundleId": "starter"},
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def purchases(clients: Clients) -> int:
    return await clients.store.tasks.database["purchases"].count_documents({})


async def test_a_wallet_past_its_purchases_per_window_is_refused_429_before_signing(
    gateway: Api, clients: Clients
) -> None:
    w = wallet()
    for _ in range(2):
        ok = await buy(gateway, w, 0.1, OTHER_CLIENT)
        assert ok.status == 202, await ok.text()  # type: ignore[attr-defined]
    before = await purchases(clients)

    third = await buy(gateway, w, 0.1, OTHER_CLIENT)
    elsewhere = await buy(gateway, wallet(), 0.1, OTHER_CLIENT)

    body = await problem(third, 429, "purchase-limit")  # type: ignore[arg-type]
    assert "purchases limit of wallet" in body["detail"]
    assert 1 <= int(third.headers["Retry-After"]) <= 3600  # type: ignore[attr-defined]
    assert elsewhere.status == 202  # type: ignore[attr-defined]
    assert await purchases(clients) == before + 1  # the other wallet's, nothing for the third


async def test_a_client_past_its_lamports_per_window_is_refused_and_a_refusal_takes_nothing(
    gateway: Api, clients: Clients
) -> None:
    first = await buy(gateway, wallet(), 0.6)
    over = await buy(gateway, wallet(), 0.6)
    fits = await buy(gateway, wallet(), 0.4)
    after = await buy(gateway, wallet(), 0.1)
    other_client = await buy(gateway, wallet(), 0.6, OTHER_CLIENT)

    assert first.status == 202  # type: ignore[attr-defined]
    body = await problem(over, 429, "purchase-limit")  # type: ignore[arg-type]
    assert "lamports limit of client" in body["detail"]
    assert fits.status == 202, await fits.text()  # type: ignore[attr-defined]
    await problem(after, 429, "purchase-limit")  # type: ignore[arg-type]
    assert other_client.status == 202  # type: ignore[attr-defined]


async def test_a_replayed_purchase_is_not_counted_again(gateway: Api) -> None:
    w, key = wallet(), uuid.uuid4().hex
    first = await buy(gateway, w, 0.1, OTHER_CLIENT, key=key)
    replayed = await buy(gateway, w, 0.1, OTHER_CLIENT, key=key)
    second = await buy(gateway, w, 0.1, OTHER_CLIENT)

    assert first.status == 202 and replayed.status == 202  # type: ignore[attr-defined]
    assert replayed.headers["Idempotent-Replayed"] == "true"  # type: ignore[attr-defined]
    assert second.status == 202, await second.text()  # type: ignore[attr-defined]


async def test_a_relayer_short_of_sol_answers_503_signs_nothing_and_counts_nothing(
    aiohttp_client: AiohttpClient, settings: Settings, relayer: Relayer, clients: Clients
) -> None:
    held = await relayer.rpc.balance(relayer.signer.pubkey())
    poor = replace(relayer.chain, sol_reserve_lamports=held)
    app = create_app(settings, api_settings(mongo_timeout_seconds=15.0),
                     {relayer_jobs.CHAIN_SETTINGS: poor})  # fmt: skip
    short = await aiohttp_client(app)
    w = wallet()

    resp = await buy(short, w, 0.1, OTHER_CLIENT)

    body = await problem(resp, 503, "relayer-short-of-sol")  # type: ignore[arg-type]
    assert "needs" in body["detail"] and resp.headers["Retry-After"]  # type: ignore[attr-defined]
    assert await purchases(clients) == 0
    assert await clients.store.tasks.count_documents({}) == 0


def test_limits_must_be_whole_numbers(chain_env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        ChainSettings.from_env({**chain_env, "RELAYQ_WALLET_PURCHASES_PER_WINDOW": "1.5"})
    with pytest.raises(SettingsError):
        ChainSettings.from_env({**chain_env, "RELAYQ_CLIENT_LAMPORTS_PER_WINDOW": "-1"})
    assert ChainSettings.from_env(chain_env).wallet_purchases == 2


async def test_limits_fail_closed_when_redis_cannot_answer(settings: Settings) -> None:
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with open_clients(down) as gone:
        quotas = Quotas(gone.redis, gone.queue.keys)
        # No limit set: nothing to ask Redis, nothing refused.
        assert await quotas.take([Quota("wallet:w", 0, 0)], 1, 60) is None
        with pytest.raises(RedisError):
            await quotas.take([Quota("wallet:w", 1, 0)], 1, 60)
