"""What the HTTP gateway tests share: credentials, settings, and problem checks."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from relayq.api.metrics import create_metrics_app
from relayq.api.settings import ApiSettings
from relayq.core.clients import Clients
from relayq.core.jobs import Task, TaskState
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest

CLIENT_KEY = "key-of-client-a"
OTHER_CLIENT_KEY = "key-of-client-b"
ADMIN_TOKEN = "admin-secret"
CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}
OTHER_CLIENT = {"Authorization": f"Bearer {OTHER_CLIENT_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROBLEM_TYPE = "application/problem+json"
TASK_FIELDS = {
    "taskId", "type", "priority", "state", "attempts", "maxAttempts", "lastError", "result",
    "payload", "createdAt", "queuedAt", "startedAt", "finishedAt", "runAt", "review", "client",
}  # fmt: skip
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)")


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_settings(**overrides: Any) -> ApiSettings:
    """Two client keys (client-a, client-b), the admin token, a short MongoDB bound."""
    values: dict[str, Any] = {
        "api_keys": {sha256(CLIENT_KEY): "client-a", sha256(OTHER_CLIENT_KEY): "client-b"},
        "admin_token": ADMIN_TOKEN,
        "rate_limit_per_s": 1000,
        "mongo_timeout_seconds": 1.0,
        # Every test request comes from one loopback address: the in-process limits
        # are tested on their own (tests/integration/test_api_limits.py).
        "source_rate_limit_per_s": 10**6,
        "auth_failures_per_s": 10**6,
        "auth_failure_burst": 10**6,
        "admin_rate_limit_per_s": 10**6,
    }
    values.update(overrides)
    return ApiSettings(**values)


async def scrape(aiohttp_client: Any, gateway: TestClient[Any, Any]) -> str:
    """The gateway's /metrics, read from its metrics port (relayq.api.metrics) as
    `relayq api` serves it beside the public one; `aiohttp_client` is pytest-aiohttp's."""
    metrics = await aiohttp_client(create_metrics_app(gateway.app))
    resp = await metrics.get("/metrics")
    text: str = await resp.text()
    assert resp.status == 200, text
    assert resp.content_type == "text/plain"
    return text


async def problem(
    response: ClientResponse, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    """Assert `response` is an RFC 9457 problem with this status and code; return its body."""
    text = await response.text()
    assert response.status == status, f"expected {status} {code}, got {response.status}: {text}"
    assert response.content_type == PROBLEM_TYPE, response.content_type
    body: dict[str, Any] = await response.json(content_type=None)
    assert body["code"] == code, body
    assert body["status"] == status, body
    assert body["type"] == f"https://relayq.io/problems/{code}", body
    assert isinstance(body["title"], str) and body["title"], body
    assert body["requestId"] == response.headers["X-Request-Id"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


async def make_dead(clients: Clients, type_: str = "noop", **kwargs: Any) -> Task:
    """A task that ran out of attempts, as a worker would leave it (stream entry acked)."""
    sub = await clients.service.submit(JobRequest(type_, kwargs.pop("payload", {}), **kwargs))
    task = sub.task
    active = await clients.store.transition(
        task.id, [TaskState.QUEUED], TaskState.ACTIVE, inc_fields={"attempts": task.max_attempts}
    )
    assert active is not None
    dead = await clients.store.transition(
        task.id,
        [TaskState.ACTIVE],
        TaskState.FAILED,
        set_fields={"finished_at": datetime.now(UTC), "last_error": "boom"},
    )
    assert dead is not None
    stream = clients.queue.keys.of(task.priority).stream
    for entry_id, fields in await clients.redis.xrange(stream):
        if fields["t"] == task.id:
            await clients.redis.xdel(stream, entry_id)
    return dead


async def dispatched(clients: Clients) -> dict[str, int]:
    """Entries per priority in Redis: stream length plus delayed set size."""
    out = {}
    for p in Priority:
        keys = clients.queue.keys.of(p)
        out[p.value] = int(await clients.redis.xlen(keys.stream)) + int(
            await clients.redis.zcard(keys.delayed)
        )
    return out
