"""Where the queue and dependency gauges come from: Redis read by workers and the API."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from prometheus_client import REGISTRY
from pytest_aiohttp import AiohttpClient

from relayq.api.app import create_app
from relayq.core.clients import Clients
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.settings import Settings
from relayq.core.telemetry import refresh_queue_gauges
from relayq.dev.servers import free_port
from tests.gateway import api_settings, scrape


def gauge(name: str, **labels: str) -> float | None:
    value = REGISTRY.get_sample_value(name, labels)
    return None if value is None else float(value)


async def test_queue_gauges_report_backlog_and_the_ages_of_waiting_and_in_flight_jobs(
    clients: Clients,
) -> None:
    for _ in range(3):
        await clients.service.submit(JobRequest("noop", {}, priority=Priority.MEDIUM))
    await clients.queue.ensure_group(Priority.MEDIUM)
    claim = await clients.queue.claim(Priority.MEDIUM, "consumer-1", 1)
    assert len(claim.deliveries) == 1
    await asyncio.sleep(0.2)

    await refresh_queue_gauges(clients.queue, [Priority.MEDIUM, Priority.LOW])

    assert gauge("relayq_queue_backlog", priority="medium") == 3
    waiting = gauge("relayq_queue_oldest_waiting_age_seconds", priority="medium")
    active = gauge("relayq_queue_oldest_active_age_seconds", priority="medium")
    assert waiting is not None and 0.15 < waiting < 30
    assert active is not None and 0.15 < active < 30
    assert gauge("relayq_queue_paused", priority="medium") == 0
    # LOW has no stream and no consumer group yet: everything is 0, no error.
    assert gauge("relayq_queue_backlog", priority="low") == 0
    assert gauge("relayq_queue_oldest_active_age_seconds", priority="low") == 0

    await clients.queue.ack(Priority.MEDIUM, [claim.deliveries[0].entry_id])
    await clients.queue.pause(Priority.MEDIUM)
    await refresh_queue_gauges(clients.queue, [Priority.MEDIUM])

    assert gauge("relayq_queue_backlog", priority="medium") == 2
    assert gauge("relayq_queue_oldest_active_age_seconds", priority="medium") == 0
    assert gauge("relayq_queue_paused", priority="medium") == 1


async def test_api_metrics_report_both_dependencies_up_and_every_priority_queue(
    aiohttp_client: AiohttpClient, settings: Settings, clients: Clients
) -> None:
    await clients.service.submit(JobRequest("noop", {}, priority=Priority.HIGH))
    api = await aiohttp_client(create_app(settings, api_settings()))

    text = await scrape(aiohttp_client, api)

    assert 'relayq_dependency_up{dependency="redis"} 1.0' in text
    assert 'relayq_dependency_up{dependency="mongodb"} 1.0' in text
    assert 'relayq_queue_backlog{priority="high"} 1.0' in text
    for p in Priority:
        assert f'relayq_queue_oldest_waiting_age_seconds{{priority="{p.value}"}}' in text


async def test_api_metrics_report_redis_down_and_still_serve(
    aiohttp_client: AiohttpClient, settings: Settings, clients: Clients
) -> None:
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    api = await aiohttp_client(create_app(down, api_settings()))

    text = await scrape(aiohttp_client, api)

    assert 'relayq_dependency_up{dependency="redis"} 0.0' in text
    assert 'relayq_dependency_up{dependency="mongodb"} 1.0' in text


async def test_readiness_check_records_mongodb_down(
    aiohttp_client: AiohttpClient, settings: Settings, clients: Clients
) -> None:
    down = replace(settings, mongo_url=f"mongodb://127.0.0.1:{free_port()}/")
    api = await aiohttp_client(create_app(down, api_settings(mongo_timeout_seconds=0.3)))

    resp = await api.get("/readyz")

    assert resp.status == 503
    assert gauge("relayq_dependency_up", dependency="mongodb") == 0
    assert gauge("relayq_dependency_up", dependency="redis") == 1
