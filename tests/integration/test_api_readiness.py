"""The public port serves no metrics, and /readyz shares its probes: at most one ping
of Redis and MongoDB a second, however many requests arrive (relayq.api.readiness)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from relayq.api.readiness import CACHE_SECONDS, Health, Readiness
from relayq.api.settings import ApiSettings
from relayq.core.clients import Clients
from relayq.core.env import SettingsError
from tests.conftest import wait_until
from tests.gateway import problem, scrape
from tests.integration.conftest import Api


async def pings(clients: Clients) -> int:
    """PINGs Redis has answered, by its own count."""
    stats: dict[str, Any] = await clients.redis.info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


async def test_the_public_port_has_no_metrics_and_does_not_document_them(
    api: Api, aiohttp_client: AiohttpClient
) -> None:
    resp = await api.get("/metrics")

    await problem(resp, 404, "not-found")
    document = await (await api.get("/openapi.json")).json()
    assert "/metrics" not in document["paths"]
    assert "metrics" not in {op["operationId"] for p in document["paths"].values()
                             for op in p.values()}  # fmt: skip
    assert "relayq_api_requests_total" in await scrape(aiohttp_client, api)


async def test_readyz_within_a_second_makes_one_probe(api: Api, clients: Clients) -> None:
    async def ready() -> bool:
        return (await api.get("/readyz")).status == 200

    await wait_until(ready, timeout=10)
    await asyncio.sleep(CACHE_SECONDS + 0.1)  # the last answer has lapsed
    before = await pings(clients)
    started = time.monotonic()

    together = await asyncio.gather(*(api.get("/readyz") for _ in range(20)))
    after_each = [await api.get("/readyz") for _ in range(5)]
    elapsed = time.monotonic() - started
    within = await pings(clients)
    await asyncio.sleep(CACHE_SECONDS + 0.1)
    later = await api.get("/readyz")

    assert elapsed < CACHE_SECONDS, "too slow to tell: the requests spanned the cache"
    assert [r.status for r in [*together, *after_each]] == [200] * 25
    assert within - before == 1
    assert later.status == 200 and await pings(clients) - within == 1


class Probe:
    """A probe the test answers by hand, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.answer: asyncio.Future[Health] = asyncio.get_running_loop().create_future()

    async def __call__(self) -> Health:
        self.calls += 1
        return await self.answer


async def test_concurrent_checks_share_one_probe_even_if_one_caller_gives_up() -> None:
    probe, now = Probe(), [100.0]
    readiness = Readiness(probe, ttl=1.0, clock=lambda: now[0])
    first = asyncio.create_task(readiness.check())
    rest = [asyncio.create_task(readiness.check()) for _ in range(9)]
    await asyncio.sleep(0)
    first.cancel()  # its client went away
    await asyncio.sleep(0)

    probe.answer.set_result(Health(redis=True, mongo=False))

    assert await asyncio.gather(*rest) == [Health(True, False)] * 9
    assert probe.calls == 1


async def test_an_answer_serves_for_the_ttl_then_a_new_probe_runs() -> None:
    probe, now = Probe(), [100.0]
    readiness = Readiness(probe, ttl=1.0, clock=lambda: now[0])
    probe.answer.set_result(Health(redis=False, mongo=True))
    assert await readiness.check() == Health(False, True)

    now[0] += 0.99
    assert await readiness.check() == Health(False, True)
    assert probe.calls == 1  # an unready answer is cached too: a down store is not pinged more

    now[0] += 0.02
    probe.answer = asyncio.get_running_loop().create_future()
    probe.answer.set_result(Health(redis=True, mongo=True))
    assert await readiness.check() == Health(True, True)
    assert probe.calls == 2


async def test_a_probe_that_raises_is_not_cached() -> None:
    probe, now = Probe(), [100.0]
    readiness = Readiness(probe, ttl=1.0, clock=lambda: now[0])
    probe.answer.set_exception(RuntimeError("boom"))
    waiters = [asyncio.create_task(readiness.check()) for _ in range(3)]

    results = await asyncio.gather(*waiters, return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in results)
    probe.answer = asyncio.get_running_loop().create_future()
    probe.answer.set_result(Health(True, True))
    assert await readiness.check() == Health(True, True)
    assert probe.calls == 2


def test_the_metrics_port_setting_is_read_and_checked() -> None:
    assert ApiSettings.from_env({}).metrics_port == 9100
    assert ApiSettings.from_env({"RELAYQ_API_METRICS_PORT": "0"}).metrics_port == 0
    assert ApiSettings.from_env({"RELAYQ_API_METRICS_PORT": "9200"}).metrics_port == 9200
    for env in (
        {"RELAYQ_API_METRICS_PORT": "8080"},
        {"RELAYQ_API_PORT": "9100"},
        {"RELAYQ_API_METRICS_PORT": "70000"},
        {"RELAYQ_API_METRICS_PORT": "-1"},
        {"RELAYQ_API_METRICS_PORT": "many"},
    ):
        with pytest.raises(SettingsError, match="RELAYQ_API_METRICS_PORT"):
            ApiSettings.from_env(env)
