"""Prometheus metrics of the gateway, on a port of their own (RELAYQ_API_METRICS_PORT).

The API's port is public (the ingress routes `/` to it); the metrics name
every route, queue and dependency, and a scrape reads Redis. So `/metrics` is
served only here, on a port no Service of the ingress names and that the
NetworkPolicies open to Prometheus alone, by a small app of its own that
reads the gateway's clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relayq.api.keys import CLIENTS
from relayq.api.readiness import PROBE_TIMEOUT_SECONDS, READINESS
from relayq.core.reconcile_report import reconcile_collector
from relayq.core.recovery_report import recovery_collector
from relayq.core.telemetry import refresh_queue_gauges_quietly

GATEWAY = web.AppKey("gateway", web.Application)


async def metrics(request: web.Request) -> web.Response:
    # Probe at scrape time (sharing /readyz's answer of the last second), so the
    # dependency and queue gauges are fresh without a background loop, and show
    # every priority's queue even when none of its workers runs.
    gateway = request.app[GATEWAY]
    health = await gateway[READINESS].check()
    if health.redis:
        clients = gateway[CLIENTS]
        await refresh_queue_gauges_quietly(clients.queue, PROBE_TIMEOUT_SECONDS)
        # Recovery is a CronJob nothing scrapes: its report lives in Redis.
        await recovery_collector().refresh(clients.redis, clients.queue.keys)
        # So is reconciliation.
        await reconcile_collector().refresh(clients.redis, clients.queue.keys)
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_metrics_app(gateway: web.Application) -> web.Application:
    """`GET /metrics` over the clients of `gateway` (started: its clients are open)."""
    app = web.Application()
    app[GATEWAY] = gateway
    app.router.add_get("/metrics", metrics)
    return app


def serve_metrics(gateway: web.Application, host: str, port: int) -> None:
    """Serve the metrics app on `host:port` for as long as `gateway` runs: opened
    after its clients, closed before them (a cleanup context of the gateway)."""

    async def site(app: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(create_metrics_app(app), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            yield
        finally:
            await runner.cleanup()

    gateway.cleanup_ctx.append(site)
