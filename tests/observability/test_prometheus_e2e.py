"""A real Prometheus scrapes the API and workers during a workload; a real Alertmanager notifies.

Every query of every dashboard panel must return data, except queries of
metrics from components this test does not run (EXCLUDED, with the reason;
each exclusion must still be needed). The recovery CronJob's run is one
`relayq recovery` process.
A queue broken on purpose (jobs that always fail) makes the dead-letter alert
travel Prometheus -> Alertmanager -> a webhook receiver in the test.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relayq.core.settings import Settings
from relayq.dev.servers import REPO_ROOT, LocalServer, free_port, wait_for_port
from tests.conftest import WorkerProcess, settings_env, wait_until
from tests.observability.dashboards import committed, queries
from tests.observability.rules import RUNBOOK_BASE
from tests.observability.stack import (
    PrometheusApi,
    alertmanager_server,
    fast_rules,
    prometheus_server,
)

pytestmark = pytest.mark.slow

KEY = "obs-client-key"
# Metrics of components this test does not run, by name prefix.
EXCLUDED = {
    "relayq_operator_": "the operator runs against Kubernetes; tests/ of the operator cover it",
    "kube_": "kube-state-metrics is a cluster add-on, not part of relayq",
    "relayq_purchases_": "the relayer's buy flow needs Jito and a swap service",
    "relayq_transfers_": "token transfers are not part of this workload",
    "relayq_chain_": "no chain service is called by this workload",
}
WORKER_PRIORITIES = ("critical", "medium")
# Grafana fills these in; a short rate window suits 1 s scrapes.
VARIABLES = {"$__rate_interval": "10s", "$priority": ".*"}


@dataclass
class Stack:
    api_url: str
    prometheus: PrometheusApi
    webhook_port: int
    started: float


def _settings(redis_srv: LocalServer, mongo_url: str) -> Settings:
    return replace(
        Settings.from_env({}),
        redis_url=f"redis://127.0.0.1:{redis_srv.port}/0",
        mongo_url=mongo_url,
        mongo_database=f"obs_{uuid.uuid4().hex[:12]}",
        key_prefix=f"obs{uuid.uuid4().hex[:8]}",
        lease_seconds=5.0,
        drain_seconds=2.0,
        # As the chart deploys it: the relayer's metrics are on the dashboards.
        job_modules=("relayq.relayer.jobs",),
    )


@pytest.fixture(scope="module")
def stack(
    redis_srv: LocalServer, mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    if not redis_srv.running:
        redis_srv.start()
    settings = _settings(redis_srv, mongo_url)
    tmp = tmp_path_factory.mktemp("observability")
    prefix = {"RELAYQ_KEY_PREFIX": settings.key_prefix}
    api_port, api_metrics_port = free_port(), free_port()
    api_log = (tmp / "api.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "relayq.api"],
        env=settings_env(
            settings,
            RELAYQ_API_PORT=str(api_port),
            RELAYQ_API_METRICS_PORT=str(api_metrics_port),
            RELAYQ_API_KEY=KEY,
            **prefix,
        ),
        stdout=api_log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    workers: list[WorkerProcess] = []
    servers: list[LocalServer] = []
    try:
        worker_ports = []
        for priority in WORKER_PRIORITIES:
            port = free_port()
            worker_ports.append(port)
            workers.append(
                WorkerProcess(settings, priority, tmp, RELAYQ_METRICS_PORT=str(port), **prefix)
            )
        # Generous bounds: all three processes import at once on a shared machine.
        wait_for_port(api_port, api, 120)
        wait_for_port(api_metrics_port, api, 30)
        for worker in workers:
            worker.wait_started(120)
        # One recovery run (what the CronJob does): its report reaches /metrics of the API.
        recovery = subprocess.run(
            [sys.executable, "-m", "relayq.recovery"],
            env=settings_env(settings, **prefix),
            capture_output=True,
            cwd=REPO_ROOT,
            timeout=120,
        )
        assert recovery.returncode == 0, recovery.stdout + recovery.stderr
        webhook_port = free_port()
        am = alertmanager_server(tmp / "am", f"http://127.0.0.1:{webhook_port}/alerts").start()
        servers.append(am)
        targets = {
            # The API's metrics port, as the chart's ServiceMonitor scrapes it.
            "relayq-api": [f"127.0.0.1:{api_metrics_port}"],
            "relayq-worker": [f"127.0.0.1:{p}" for p in worker_ports],
        }
        prom = prometheus_server(
            tmp / "prometheus", targets, fast_rules(tmp / "rules.yaml"), am.port
        ).start()
        servers.append(prom)
        yield Stack(
            f"http://127.0.0.1:{api_port}",
            PrometheusApi(prom.port).wait_ready(),
            webhook_port,
            time.time(),
        )
    finally:
        for server in reversed(servers):
            server.stop()
        for worker in workers:
            worker.kill()
        if api.poll() is None:
            api.kill()
            api.wait()
        api_log.close()
        for log in sorted(tmp.rglob("*.log")):  # shown by pytest when a test failed
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


async def submit(session: aiohttp.ClientSession, stack: Stack, body: dict[str, Any]) -> str:
    async with session.post(
        f"{stack.api_url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as resp:
        assert resp.status == 202, await resp.text()
        task_id: str = (await resp.json())["taskId"]
        return task_id


def excluded_by(expr: str) -> str | None:
    for prefix in EXCLUDED:
        if re.search(rf"\b{re.escape(prefix)}", expr):
            return prefix
    return None


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


async def test_every_dashboard_query_returns_data_from_a_live_workload(stack: Stack) -> None:
    prom = stack.prometheus
    await wait_until(
        lambda: asyncio.to_thread(
            lambda: prom.targets_up() == {"relayq-api": 1, "relayq-worker": 2}
        ),
        30,
        0.2,
    )
    async with aiohttp.ClientSession() as session:
        for priority in WORKER_PRIORITIES:
            for _ in range(5):
                await submit(session, stack, {"type": "noop", "priority": priority})
            await submit(session, stack, {"type": "sleep", "priority": priority,
                                          "payload": {"seconds": 0.2}})  # fmt: skip
        # Some errors for the API dashboard: unknown credentials and a bad route.
        async with session.get(f"{stack.api_url}/v1/tasks", headers={"X-API-Key": "nope"}) as r:
            assert r.status == 401
        async with session.get(f"{stack.api_url}/v1/nowhere") as r:
            assert r.status in (401, 404)

    def completed() -> float:
        result = prom.query('sum(relayq_jobs_total{outcome="completed"})')
        return float(result[0]["value"][1]) if result else 0.0

    await wait_until(lambda: asyncio.to_thread(lambda: completed() == 12), 30, 0.2)

    checked: set[str] = set()
    missing: dict[str, str] = {}
    excluded_and_empty: set[str] = set()

    def empty_queries() -> dict[str, str]:
        missing.clear()
        excluded_and_empty.clear()
        for board_name, board in committed().items():
            for title, expr in queries(board):
                checked.add(expr)
                if prom.query_range(substitute(expr), stack.started):
                    continue
                prefix = excluded_by(expr)
                if prefix is None:
                    missing[f"{board_name}: {title}"] = expr
                else:
                    excluded_and_empty.add(prefix)
        return missing

    # Rates and quantiles need a few scrapes after the workload; poll until all have data.
    async def all_have_data() -> bool:
        return not await asyncio.to_thread(empty_queries)

    try:
        await wait_until(all_have_data, 30, 1.0)
    except AssertionError:
        raise AssertionError(f"panel queries without data: {missing}") from None
    assert len(checked) >= 30, "too few queries were checked"
    # Each exclusion is needed: some query of that component really had no data.
    assert excluded_and_empty == set(EXCLUDED), (
        f"exclusions no longer needed: {set(EXCLUDED) - excluded_and_empty}"
    )
    # The numbers are the workload's, not just present.
    wait_count = prom.query('sum(relayq_queue_wait_seconds_count{type="noop"})')
    assert float(wait_count[0]["value"][1]) == 10
    up = prom.query("relayq_dependency_up")
    assert {r["metric"]["dependency"]: r["value"][1] for r in up} == {"redis": "1", "mongodb": "1"}


async def test_dead_letters_fire_an_alert_that_alertmanager_delivers_to_a_webhook(
    stack: Stack,
) -> None:
    received: list[dict[str, Any]] = []

    async def alerts(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alerts", alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", stack.webhook_port).start()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # a job type that always fails, at once
                await submit(
                    session,
                    stack,
                    {"type": "fail", "priority": "medium", "payload": {"permanent": True}},
                )

        def dead_letter_alerts() -> list[dict[str, Any]]:
            return [
                alert
                for message in received
                for alert in message["alerts"]
                if alert["labels"]["alertname"] == "RelayqDeadLettersGrowing"
            ]

        async def delivered() -> list[dict[str, Any]]:
            return dead_letter_alerts()

        found = await wait_until(delivered, 45, 0.2)
    finally:
        await runner.cleanup()

    alert = found[0]
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "RelayqDeadLettersGrowing",
        "priority": "medium",
        "severity": "warning",
    }
    notes = alert["annotations"]
    assert notes["summary"] == "relayq medium: jobs are being dead-lettered"
    assert re.fullmatch(
        r"[0-9.]+ medium jobs went to the dead letters in the last 10 minutes\.",
        notes["description"],
    ), notes["description"]
    assert notes["runbook_url"] == RUNBOOK_BASE + "relayqdeadlettersgrowing"
    assert received[0]["receiver"] == "webhook"
