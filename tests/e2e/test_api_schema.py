"""The running gateway against its own OpenAPI document, fuzzed with schemathesis.

The app runs on a free loopback port in a thread of its own (schemathesis calls it
synchronously over HTTP); the schema is loaded from its /openapi.json. Each operation
gets bounded positive examples (valid input: the answer must conform) and negative
ones (invalid input: still never a 5xx, and only documented answers).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from pymongo import MongoClient
from redis import Redis as SyncRedis
from schemathesis import GenerationMode
from schemathesis.specs.openapi import definitions

from relayq.api.app import create_app, operations
from relayq.core.settings import Settings
from relayq.dev.relayer_env import relayer_env
from relayq.dev.servers import LocalServer, devchain_server, free_port
from relayq.relayer import jobs as relayer_jobs
from relayq.relayer.chain.settings import ChainSettings
from tests.gateway import ADMIN, CLIENT, api_settings

MAX_EXAMPLES = 20
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]
OPERATIONS = [(op.method, op.path) for op in operations(["relayq.relayer.jobs"])]


class ServedApp:
    """The gateway served by an AppRunner on an event loop in a background thread."""

    def __init__(self, app: web.Application) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner = web.AppRunner(app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def start(self) -> ServedApp:
        self._thread.start()
        self._run(self._runner.setup())
        self._run(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        return self

    def stop(self) -> None:
        self._run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture(scope="module")
def served(
    redis_srv: LocalServer, mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedApp]:
    # A relayer on a local chain, so the purchase routes are exercised, not refused.
    state = tmp_path_factory.mktemp("devchain")
    chain_server = devchain_server(state, slot_ms=200, jito_rate_limit=0).start()
    chain = ChainSettings.from_env({**relayer_env(state / "chain.json"), "RELAYQ_JITO_RPS": "1000"})
    if not redis_srv.running:
        redis_srv.start()
    SyncRedis(port=redis_srv.port).flushall()
    settings = replace(
        Settings.from_env({}),
        redis_url=f"redis://127.0.0.1:{redis_srv.port}/0",
        mongo_url=mongo_url,
        mongo_database=f"t_{uuid.uuid4().hex[:12]}",
        metrics_port=0,
        job_modules=("relayq.relayer.jobs",),
    )
    seeded = {relayer_jobs.CHAIN_SETTINGS: chain}
    served = ServedApp(create_app(settings, api_settings(rate_limit_per_s=10**6), seeded)).start()
    yield served
    served.stop()
    chain_server.stop()
    mongo: MongoClient[dict[str, object]]
    with MongoClient(settings.mongo_url) as mongo:
        mongo.drop_database(settings.mongo_database)


@pytest.fixture(scope="module")
def api_schema(served: ServedApp) -> Any:
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json")


def test_served_document_is_valid_openapi_3_1(served: ServedApp) -> None:
    document = requests.get(f"{served.url}/openapi.json", timeout=10).json()

    errors = [str(e) for e in definitions.OPENAPI_31_VALIDATOR.iter_errors(document)]

    assert errors == []
    assert document["openapi"].startswith("3.1.")
    assert {(m.upper(), p) for p, item in document["paths"].items() for m in item} == set(
        OPERATIONS
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_never_fails_with_5xx_and_answers_as_documented(
    served: ServedApp, api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    auth = ADMIN if path.startswith("/v1/admin/") else CLIENT if path.startswith("/v1/") else {}
    session = requests.Session()

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def exchange(case: Any) -> None:
        case.call_and_validate(base_url=served.url, session=session, headers=auth, checks=CHECKS)

    exchange()
