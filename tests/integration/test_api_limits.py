"""Limits before and after authentication: by source address, on unknown keys, on admin routes.

A flood of random keys must not become a flood of MongoDB lookups, must not
evict the keys of real clients from the cache, and admin routes have a limit of
their own. These limits live in the gateway's process, so they hold when Redis
is down (the per-client limit, shared through Redis, then fails open).
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest

from relayq.api.auth import KEY_LOOKUPS
from relayq.core.clients import Clients
from relayq.core.settings import Settings
from relayq.dev.servers import free_port
from tests.gateway import ADMIN, CLIENT, problem, sha256
from tests.integration.conftest import MakeApi


def lookups(result: str) -> float:
    return KEY_LOOKUPS.labels(result=result)._value.get()


async def test_a_flood_of_unknown_keys_from_one_source_is_429_before_any_lookup(
    make_api: MakeApi, clients: Clients
) -> None:
    api = await make_api(auth_failures_per_s=1, auth_failure_burst=5)
    before = lookups("unknown")

    statuses = []
    for _ in range(30):
        resp = await api.get(
            "/v1/tasks", headers={"Authorization": f"Bearer {secrets.token_hex(16)}"}
        )
        statuses.append(resp.status)

    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    assert lookups("unknown") - before <= 6  # the burst, not the flood
    limited = await api.get("/v1/tasks", headers={"Authorization": "Bearer nope"})
    body = await problem(limited, 429, "rate-limited")
    assert int(limited.headers["Retry-After"]) >= 1 and "source" in body["detail"]


async def test_a_valid_key_still_works_from_a_source_that_failed_too_often(
    make_api: MakeApi, clients: Clients
) -> None:
    # Failures are limited, not the source: a real client behind the same NAT is served.
    api = await make_api(auth_failures_per_s=1, auth_failure_burst=2)
    for _ in range(5):
        await api.get("/v1/tasks", headers={"Authorization": "Bearer wrong"})

    assert (await api.get("/v1/tasks", headers=CLIENT)).status == 200


async def test_unknown_keys_do_not_evict_known_ones_from_the_cache(
    make_api: MakeApi, clients: Clients
) -> None:
    api = await make_api(key_cache_size=8, auth_failure_burst=10**6, auth_failures_per_s=10**6)
    await clients.store.tasks.database["api_keys"].insert_one(
        {"_id": sha256("stored-key"), "client": "stored"}
    )
    stored = {"Authorization": "Bearer stored-key"}
    assert (await api.get("/v1/tasks", headers=stored)).status == 200
    known_before = lookups("known")

    for _ in range(100):  # many more unknown keys than the cache holds
        await api.get("/v1/tasks", headers={"Authorization": f"Bearer {secrets.token_hex(8)}"})
    assert (await api.get("/v1/tasks", headers=stored)).status == 200

    assert lookups("known") == known_before  # answered from the cache, no lookup


async def test_admin_routes_have_a_limit_of_their_own(make_api: MakeApi, clients: Clients) -> None:
    api = await make_api(admin_rate_limit_per_s=3)

    statuses = [(await api.get("/v1/admin/queues", headers=ADMIN)).status for _ in range(10)]

    assert statuses[:3] == [200] * 3
    assert 429 in statuses[3:]


async def test_every_source_has_a_ceiling_before_authentication(
    make_api: MakeApi, clients: Clients
) -> None:
    api = await make_api(source_rate_limit_per_s=5)

    statuses = [(await api.get("/v1/tasks", headers=CLIENT)).status for _ in range(12)]

    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]


async def test_the_gateways_own_limits_hold_with_redis_down(
    make_api: MakeApi, settings: Settings, clients: Clients
) -> None:
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    api = await make_api(settings=down, auth_failures_per_s=1, auth_failure_burst=2)

    statuses = [
        (await api.get("/v1/tasks", headers={"Authorization": "Bearer x"})).status for _ in range(6)
    ]

    assert statuses[:2] == [401, 401] and 429 in statuses[2:]


@pytest.mark.parametrize("header", ["", "Bearer ", "Basic abc", "Bearer " + "x" * 5000])
async def test_malformed_credentials_are_401_and_counted_as_failures(
    make_api: MakeApi, clients: Clients, header: str
) -> None:
    api = await make_api(auth_failures_per_s=1, auth_failure_burst=1)

    first = await api.get("/v1/tasks", headers={"Authorization": header})
    second = await api.get("/v1/tasks", headers={"Authorization": header})

    await problem(first, 401, "unauthorized")
    await problem(second, 429, "rate-limited")
