"""Operational routes, credentials, rate limits, request ids, unknown routes and methods."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from relayq.api.app import create_app
from relayq.api.settings import ApiSettings
from relayq.core.clients import Clients
from relayq.core.env import SettingsError
from relayq.core.modules import load_registry
from relayq.core.settings import Settings
from tests.conftest import settings_env, wait_until
from tests.gateway import (
    ADMIN,
    CLIENT,
    CLIENT_KEY,
    OTHER_CLIENT,
    api_settings,
    problem,
    scrape,
    sha256,
)
from tests.integration.conftest import Api, MakeApi

# The relayer's routes, mounted only where its job module is loaded.
RELAYER_ROUTES = [
    ("POST", "/v1/buy-tokens"),
    ("GET", "/v1/quote"),
    ("GET", "/v1/bundles"),
    ("GET", "/v1/admin/purchases"),
    ("POST", "/v1/admin/purchases/pause"),
    ("POST", "/v1/admin/purchases/resume"),
    ("GET", "/v1/admin/purchases/review"),
    ("GET", "/v1/admin/purchases/review/{taskId}"),
    ("POST", "/v1/admin/purchases/review/{taskId}/resolve"),
]
ROUTES = [
    ("POST", "/v1/jobs"),
    ("GET", "/v1/tasks"),
    ("GET", "/v1/tasks/{taskId}"),
    ("GET", "/v1/admin/queues"),
    ("POST", "/v1/admin/queues/{priority}/pause"),
    ("POST", "/v1/admin/queues/{priority}/resume"),
    ("GET", "/v1/admin/dead-letters"),
    ("POST", "/v1/admin/dead-letters/retry"),
    ("POST", "/v1/admin/dead-letters/{taskId}/retry"),
    ("DELETE", "/v1/admin/dead-letters/{taskId}"),
    ("GET", "/v1/admin/tasks"),
    ("GET", "/v1/admin/tasks/{taskId}"),
    ("GET", "/v1/admin/review"),
    ("POST", "/v1/admin/tasks/{taskId}/release"),
    ("POST", "/v1/admin/tasks/{taskId}/cancel"),
    ("POST", "/v1/admin/tasks/{taskId}/promote"),
    ("POST", "/v1/admin/keys"),
    ("GET", "/v1/admin/keys"),
    ("GET", "/v1/admin/keys/{keyId}"),
    ("POST", "/v1/admin/keys/{keyId}/rotate"),
    ("POST", "/v1/admin/keys/{keyId}/revoke"),
    ("GET", "/v1/admin/audit"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
]


# -- operations -------------------------------------------------------------------------


async def test_healthz_answers_ok_without_credentials(api: Api) -> None:
    resp = await api.get("/healthz")

    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_readyz_is_ready_when_redis_and_mongo_answer(api: Api) -> None:
    # The indexes are created in the background once MongoDB answers.
    async def ready() -> bool:
        return (await api.get("/readyz")).status == 200

    await wait_until(ready, timeout=10)
    resp = await api.get("/readyz")

    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "redis": "ok", "mongo": "ok", "indexes": "ok"}


async def test_readyz_waits_for_the_unique_idempotency_index(
    make_api: MakeApi, clients: Clients
) -> None:
    # An index of that name with other keys: creating relayq's fails, run after run.
    await clients.store.tasks.drop_indexes()
    await clients.store.tasks.create_index([("payload_hash", 1)], name="idem_unique")
    api = await make_api()

    resp = await api.get("/readyz")

    assert resp.status == 503
    assert await resp.json() == {
        "status": "unready",
        "redis": "ok",
        "mongo": "ok",
        "indexes": "pending",
    }


async def test_metrics_count_requests_by_method_route_and_status(
    api: Api, aiohttp_client: AiohttpClient
) -> None:
    await api.get(f"/v1/tasks/{'0' * 32}", headers=CLIENT)  # a 404 on a templated route
    await api.get("/healthz")

    text = await scrape(aiohttp_client, api)

    assert re.search(
        r'relayq_api_requests_total\{method="GET",route="/v1/tasks/\{task_?[iI]d\}",status="404"\} '
        r"[1-9]",
        text,
    ), text[:2000]
    assert 'relayq_api_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "relayq_api_request_seconds_bucket" in text
    assert "relayq_jobs_enqueued_total" in text  # the job metrics are exported too


async def test_openapi_json_is_openapi_3_1_covering_every_route(api: Api, clients: Clients) -> None:
    resp = await api.get("/openapi.json")

    assert resp.status == 200
    doc = await resp.json()
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert documented == set(ROUTES)
    job_type = doc["components"]["schemas"]["JobRequest"]["properties"]["type"]
    assert job_type["enum"] == [t.name for t in clients.service.registry.all() if not t.internal]


async def test_a_job_module_adds_its_routes_and_internal_types_to_the_document(
    make_api: MakeApi, settings: Settings, clients: Clients
) -> None:
    with_relayer = replace(settings, job_modules=(*settings.job_modules, "relayq.relayer.jobs"))
    api = await make_api(settings=with_relayer)
    doc = await (await api.get("/openapi.json")).json()
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert documented == {*ROUTES, *RELAYER_ROUTES}
    page = await (await api.get("/docs", headers=ADMIN)).text()
    for _, path in RELAYER_ROUTES:
        assert f"<code>{path}</code>" in page, path
    job_type = doc["components"]["schemas"]["JobRequest"]["properties"]["type"]
    # Clients may submit every registered type but the relayer's internal steps.
    registry = load_registry(with_relayer.job_modules)
    submittable = [t.name for t in registry.all() if not t.internal]
    assert job_type["enum"] == submittable
    assert "token_transfer" in registry.names()
    assert "token_transfer" not in submittable


def test_without_the_relayer_module_the_gateway_loads_no_solana_library(
    settings: Settings,
) -> None:
    program = (
        "import sys\n"
        "from relayq.api.app import create_app\n"
        "from relayq.core.settings import Settings\n"
        "from tests.gateway import api_settings\n"
        "create_app(Settings.from_env(), api_settings())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('solana', 'solders', 'spl')"
        " or m.startswith('relayq.relayer')))\n"
    )
    env = settings_env(settings)
    found = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]", found.stdout
    env["RELAYQ_JOB_MODULES"] = "relayq.relayer.jobs"
    found = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    )
    assert "solders" in found.stdout


async def test_docs_is_a_self_contained_html_page_listing_every_route(api: Api) -> None:
    resp = await api.get("/docs")

    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert page.lstrip().lower().startswith("<!doctype html>")
    for method, path in ROUTES:
        assert f"<code>{path}</code>" in page, path
        assert method.lower() in page
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page, re.IGNORECASE)


async def test_unknown_route_is_a_404_problem(api: Api) -> None:
    for headers in ({}, CLIENT):
        resp = await api.get("/no/such/route", headers=headers)
        await problem(resp, 404, "not-found")

    resp = await api.get("/v1/no-such-route", headers=CLIENT)
    await problem(resp, 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/healthz", {}),
        ("DELETE", "/openapi.json", {}),
        ("GET", "/v1/jobs", CLIENT),
        ("PUT", f"/v1/tasks/{'0' * 32}", CLIENT),
        ("GET", "/v1/admin/queues/high/pause", ADMIN),
    ],
)
async def test_wrong_method_is_a_405_problem(
    api: Api, method: str, path: str, headers: dict[str, str]
) -> None:
    resp = await api.request(method, path, headers=headers)

    await problem(resp, 405, "method-not-allowed")


async def test_unhandled_error_is_a_500_problem_naming_only_the_request_id(
    aiohttp_client: AiohttpClient, settings: Settings, clients: Clients
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals: mongodb://user:pw@db")

    app = create_app(settings, api_settings())
    app.router.add_get("/broken", broken)
    api = await aiohttp_client(app)

    resp = await api.get("/broken", headers={"X-Request-Id": "req-500"})

    body = await problem(resp, 500, "internal")
    assert "req-500" in body["detail"]
    assert "secret" not in await resp.text()


# -- request ids -----------------------------------------------------------------------------


async def test_request_id_is_echoed_on_success_and_error(api: Api) -> None:
    cases: list[tuple[str, dict[str, str]]] = [
        ("/healthz", {}),  # 200
        ("/v1/tasks", {}),  # 401
        ("/v1/tasks", CLIENT),  # 200
        ("/no/such", {}),  # 404
    ]
    for path, headers in cases:
        resp = await api.get(path, headers={**headers, "X-Request-Id": "trace-me-7"})
        assert resp.headers["X-Request-Id"] == "trace-me-7", path


@pytest.mark.parametrize("given", [None, "", "x" * 129, "has space", "tab\there"], ids=repr)
async def test_missing_or_invalid_request_id_gets_a_fresh_one(api: Api, given: str | None) -> None:
    headers = {} if given is None else {"X-Request-Id": given}

    first = await api.get("/healthz", headers=headers)
    second = await api.get("/healthz", headers=headers)

    rid = first.headers["X-Request-Id"]
    assert re.fullmatch(r"[\x21-\x7e]{1,128}", rid)
    assert rid != given
    assert rid != second.headers["X-Request-Id"]


async def test_request_id_of_128_visible_characters_is_kept(api: Api) -> None:
    given = "r" * 127 + "~"

    resp = await api.get("/healthz", headers={"X-Request-Id": given})

    assert resp.headers["X-Request-Id"] == given


# -- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {CLIENT_KEY}"},
        {"Authorization": "Bearer "},
        {"X-API-Key": "wrong-key"},
    ],
    ids=["none", "unknown-bearer", "basic-scheme", "empty-bearer", "unknown-x-api-key"],
)
async def test_missing_or_unknown_credentials_are_401_with_www_authenticate(
    api: Api, headers: dict[str, str]
) -> None:
    for method, path in (("GET", "/v1/tasks"), ("GET", "/v1/admin/queues")):
        resp = await api.request(method, path, headers=headers)
        await problem(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_client_key_works_as_bearer_or_x_api_key(api: Api) -> None:
    for headers in (CLIENT, {"X-API-Key": CLIENT_KEY}, {"Authorization": f"bearer {CLIENT_KEY}"}):
        resp = await api.get("/v1/tasks", headers=headers)
        assert resp.status == 200, (headers, await resp.text())


async def test_admin_token_on_a_client_route_is_403(api: Api) -> None:
    for method, path in (("POST", "/v1/jobs"), ("GET", f"/v1/tasks/{'0' * 32}")):
        resp = await api.request(method, path, json={"type": "noop"}, headers=ADMIN)
        await problem(resp, 403, "forbidden")


async def test_without_an_admin_token_configured_admin_routes_are_refused(
    make_api: MakeApi, clients: Clients
) -> None:
    api = await make_api(admin_token=None)

    resp = await api.get("/v1/admin/queues", headers=ADMIN)

    assert resp.status in (401, 403)
    assert (await resp.json(content_type=None))["code"] in {"unauthorized", "forbidden"}


async def test_keys_from_the_keys_file_and_the_plain_env_key_authenticate(
    make_api: MakeApi, clients: Clients, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(
        f"# client keys\n\nclient-file:{sha256('file-key')}\n  other:{sha256('other-key')}  \n"
    )
    admin_file = tmp_path / "admin"
    admin_file.write_text("token-from-file\n")
    settings = ApiSettings.from_env(
        {
            "RELAYQ_API_KEYS_FILE": str(keys_file),
            "RELAYQ_API_KEY": "plain-env-key",
            "RELAYQ_ADMIN_TOKEN_FILE": str(admin_file),
        }
    )
    api = await make_api(api=settings)
    caplog.set_level(logging.INFO, logger="relayq.api.access")

    for key, client in (
        ("file-key", "client-file"),
        ("other-key", "other"),
        ("plain-env-key", "default"),
    ):
        resp = await api.get("/v1/tasks", headers={"Authorization": f"Bearer {key}"})
        assert resp.status == 200, (key, await resp.text())
        logged = [
            r
            for r in caplog.records
            if getattr(r, "request_id", None) == resp.headers["X-Request-Id"]
        ]
        assert [getattr(r, "client", None) for r in logged] == [client]
    assert (
        await api.get("/v1/admin/queues", headers={"Authorization": "Bearer token-from-file"})
    ).status == 200
    resp = await api.get("/v1/tasks", headers={"Authorization": f"Bearer {sha256('file-key')}"})
    await problem(resp, 401, "unauthorized")  # the hash itself is not a key


async def test_key_stored_hashed_in_mongo_authenticates_and_disabled_key_does_not(
    api: Api, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    keys = clients.store.client[clients.settings.mongo_database]["api_keys"]
    await keys.insert_many(
        [
            {"_id": sha256("mongo-key"), "client": "client-m"},
            {"_id": sha256("disabled-key"), "client": "client-d", "disabled": True},
        ]
    )
    caplog.set_level(logging.INFO, logger="relayq.api.access")

    ok = await api.post("/v1/jobs", json={"type": "noop"}, headers={"X-API-Key": "mongo-key"})
    refused = await api.get("/v1/tasks", headers={"Authorization": "Bearer disabled-key"})

    assert ok.status == 202, await ok.text()
    logged = [
        r for r in caplog.records if getattr(r, "request_id", None) == ok.headers["X-Request-Id"]
    ]
    assert [getattr(r, "client", None) for r in logged] == ["client-m"]
    await problem(refused, 401, "unauthorized")


# -- rate limits ---------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after_per_client_key(
    make_api: MakeApi, clients: Clients
) -> None:
    api = await make_api(rate_limit_per_s=2)

    statuses = []
    for _ in range(6):
        resp = await api.get("/v1/tasks", headers=CLIENT)
        statuses.append(resp.status)
        if resp.status == 429:
            limited = resp
            break
    assert statuses[:2] == [200, 200] and statuses[-1] == 429, statuses
    await problem(limited, 429, "rate-limited")
    assert int(limited.headers["Retry-After"]) >= 1

    other = await api.get("/v1/tasks", headers=OTHER_CLIENT)  # another key, its own budget
    assert other.status == 200
    ops = await api.get("/healthz")
    assert ops.status == 200
    await asyncio.sleep(int(limited.headers["Retry-After"]))
    again = await api.get("/v1/tasks", headers=CLIENT)
    assert again.status == 200


async def test_operational_routes_need_no_credentials(api: Api) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        resp = await api.get(path)
        assert resp.status == 200, path


@pytest.mark.parametrize("client", ["acme:eu", "-x", "caf\u00e9", "x" * 65])
def test_a_keys_file_client_id_outside_the_charset_is_a_settings_error(
    tmp_path: Path, client: str
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{client}:{sha256('k')}\n")

    with pytest.raises(SettingsError, match="client id"):
        ApiSettings.from_env({"RELAYQ_API_KEYS_FILE": str(keys_file)})


async def test_a_stored_key_with_an_invalid_client_id_is_refused(
    api: Api, clients: Clients
) -> None:
    keys = clients.store.tasks.database["api_keys"]
    await keys.insert_one({"_id": sha256("odd-key"), "client": "a:b"})

    resp = await api.get("/v1/tasks", headers={"Authorization": "Bearer odd-key"})

    await problem(resp, 401, "unauthorized")
